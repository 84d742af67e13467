"""Inference backends: the small interface between the core and a runtime (torch now; ONNX Runtime later).

Arrays cross the interface as numpy so a backend without torch can slot in:
``encode``: (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32 embeddings;
``decode``: embedding (1, 256, 64, 64) + boxes (N, 4) in the model frame -> logits (N, 256, 256), iou (N,).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

DECODE_CHUNK = 16
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16_available() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16/AMX): elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private probe; absent means "do not rely on it"
        return False


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where the CPU has native bf16, else ``fp32``; other values pass through checked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16_available() else "fp32"
    return precision


class InferenceBackend(Protocol):
    name: str

    def encode(self, images: np.ndarray) -> np.ndarray: ...

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBackend:
    """Runs a :class:`~medsam_desktop.model.MedSAMLite` with fused blocks under ``inference_mode``.

    ``precision``: ``fp32``, ``bf16`` (autocast; weights stay fp32, outputs come back fp32) or ``auto``
    (see :func:`resolve_precision`). ``name`` carries a ``+bf16`` suffix in bf16, so cached embeddings of the
    two precisions never mix.
    """

    def __init__(self, model: object, name: str = "torch", threads: int | None = None, precision: str = "fp32") -> None:
        import torch

        from ..model.fuse import fuse_for_inference

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.model = fuse_for_inference(model)  # type: ignore[arg-type]
        self.model.image_encoder.to(memory_format=torch.channels_last)
        self.precision = resolve_precision(precision)
        self.name = name if self.precision == "fp32" else f"{name}+{self.precision}"
        self._lock = threading.Lock()  # one forward at a time: torch already uses every thread

    def _autocast(self) -> Any:  # a torch autocast context manager
        return self._torch.autocast("cpu", dtype=self._torch.bfloat16, enabled=self.precision == "bf16")

    def encode(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with self._lock, torch.inference_mode(), self._autocast():
            out = self.model.encode(x.contiguous(memory_format=torch.channels_last))
        return out.float().contiguous().numpy()

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes are decoded in chunks of ``DECODE_CHUNK``: after the first layer each box carries its own
        copy of the 64x64x256 image tokens through the two-way transformer (~25 MB per box in one batch)."""
        torch = self._torch
        emb = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
        b = torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        logits, ious = [], []
        with self._lock, torch.inference_mode(), self._autocast():
            for start in range(0, max(len(b), 1), DECODE_CHUNK):
                lg, iou = self.model.decode(emb, b[start : start + DECODE_CHUNK])
                logits.append(lg[:, 0].float().numpy())
                ious.append(iou[:, 0].float().numpy())
        return np.concatenate(logits), np.concatenate(ious)


def load_backend(
    model_name: str, weights: str | None = None, threads: int | None = None, precision: str = "fp32"
) -> TorchBackend:
    """Build the default backend for a model name from the registry (see ``model.load_named_model``)."""
    from pathlib import Path

    from ..model.checkpoint import load_named_model

    model = load_named_model(model_name, Path(weights) if weights else None)
    return TorchBackend(model, name=model_name, threads=threads, precision=precision)
