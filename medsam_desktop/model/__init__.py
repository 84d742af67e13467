"""Model definitions (no Qt): encoders, prompt encoder, mask decoder, builders and checkpoints."""

from .checkpoint import (
    InvalidCheckpointError,
    ModelNotAvailableError,
    default_model_name,
    load_checkpoint,
    load_named_model,
    load_teacher,
    save_checkpoint,
    teacher_checkpoint_path,
)
from .fuse import fuse_for_inference
from .registry import ENCODER_REGISTRY, MODEL_REGISTRY, build_model
from .sam import MedSAMLite

__all__ = [
    "ENCODER_REGISTRY",
    "MODEL_REGISTRY",
    "InvalidCheckpointError",
    "MedSAMLite",
    "ModelNotAvailableError",
    "build_model",
    "default_model_name",
    "fuse_for_inference",
    "load_checkpoint",
    "load_named_model",
    "load_teacher",
    "save_checkpoint",
    "teacher_checkpoint_path",
]
