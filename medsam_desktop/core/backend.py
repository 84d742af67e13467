"""Inference backends: the small interface between the core and a runtime (torch now; ONNX Runtime later).

Arrays cross the interface as numpy so a backend without torch can slot in:
``encode``: (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32 embeddings;
``decode``: embedding (1, 256, 64, 64) + boxes (N, 4) in the model frame -> logits (N, 256, 256), iou (N,).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

DECODE_CHUNK = 16


class InferenceBackend(Protocol):
    name: str

    def encode(self, images: np.ndarray) -> np.ndarray: ...

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBackend:
    """Runs a :class:`~medsam_desktop.model.MedSAMLite` with fused blocks under ``inference_mode``."""

    def __init__(self, model: object, name: str = "torch", threads: int | None = None) -> None:
        import torch

        from ..model.fuse import fuse_for_inference

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.model = fuse_for_inference(model)  # type: ignore[arg-type]
        self.model.image_encoder.to(memory_format=torch.channels_last)
        self.name = name
        self._lock = threading.Lock()  # one forward at a time: torch already uses every thread

    def encode(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with self._lock, torch.inference_mode():
            out = self.model.encode(x.contiguous(memory_format=torch.channels_last))
        return out.contiguous().numpy()

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes are decoded in chunks of ``DECODE_CHUNK``: each box carries its own copy of the 64x64x256
        image tokens through the two-way transformer, so one big batch would cost ~25 MB per box."""
        torch = self._torch
        emb = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
        b = torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        logits, ious = [], []
        with self._lock, torch.inference_mode():
            for start in range(0, max(len(b), 1), DECODE_CHUNK):
                lg, iou = self.model.decode(emb, b[start : start + DECODE_CHUNK])
                logits.append(lg[:, 0].numpy())
                ious.append(iou[:, 0].numpy())
        return np.concatenate(logits), np.concatenate(ious)


def load_backend(model_name: str, weights: str | None = None, threads: int | None = None) -> TorchBackend:
    """Build the default backend for a model name from the registry (see ``model.load_named_model``)."""
    from pathlib import Path

    from ..model.checkpoint import load_named_model

    model = load_named_model(model_name, Path(weights) if weights else None)
    return TorchBackend(model, name=model_name, threads=threads)
