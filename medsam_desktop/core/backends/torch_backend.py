"""PyTorch: a :class:`~medsam_desktop.model.MedSAMLite` with fused blocks under ``inference_mode`` (fp32 or bf16).

The runtime of training, export and the teacher, and a choice from a source install; the packaged app has no
torch (:mod:`.shipped` files run on OpenVINO there).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .allocator import tune_malloc_for_inference
from .base import PRECISIONS, check_threads, single_threaded_numpy_blas

#: boxes per decoder call: per box the transformer carries 4 MB of image tokens in fp32; 4 boxes keep every
#: tensor under glibc's 32 MB mmap ceiling (see allocator.py) and were fastest per box (docs/performance.md)
DECODE_CHUNK = 4


def native_bf16_available() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16/AMX): elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private probe; absent means "do not rely on it"
        return False


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where the CPU has native bf16, else ``fp32``; other values pass through checked.

    ``int8`` passes through: only :func:`load_backend` knows which runtime can run it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16_available() else "fp32"
    return precision


class TorchBackend:
    """Runs a :class:`~medsam_desktop.model.MedSAMLite` with fused blocks under ``inference_mode``.

    ``precision``: ``fp32``, ``bf16`` (autocast; weights stay fp32, outputs come back fp32) or ``auto``
    (see :func:`resolve_precision`). ``name`` carries a ``+bf16`` suffix in bf16, so cached embeddings of the
    two precisions never mix.
    """

    def __init__(self, model: object, name: str = "torch", threads: int | None = None, precision: str = "fp32") -> None:
        import torch

        from ...model.fuse import fuse_for_inference

        self.precision = resolve_precision(precision)
        if self.precision == "int8":
            raise ValueError("PyTorch has no int8 path here: int8 runs on OpenVINO (load_backend falls back)")
        self._torch = torch
        if check_threads(threads):
            torch.set_num_threads(threads)
        single_threaded_numpy_blas()
        tune_malloc_for_inference()
        self.model = fuse_for_inference(model)  # type: ignore[arg-type]
        self.model.image_encoder.to(memory_format=torch.channels_last)
        self.name = name if self.precision == "fp32" else f"{name}+{self.precision}"
        self._lock = threading.Lock()  # one forward at a time: torch already uses every thread
        self.fallback_reason: str | None = None  # set by load_backend when another runtime was asked for

    def _autocast(self) -> Any:  # a torch autocast context manager
        return self._torch.autocast("cpu", dtype=self._torch.bfloat16, enabled=self.precision == "bf16")

    def encode(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with self._lock, torch.inference_mode(), self._autocast():
            out = self.model.encode(x.contiguous(memory_format=torch.channels_last))
        return out.float().contiguous().numpy()

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes are decoded in chunks of ``DECODE_CHUNK`` (after the first layer each box carries its own
        copy of the 64x64x256 image tokens through the two-way transformer); the image side that no box changes
        is prepared once per call."""
        torch = self._torch
        emb = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
        b = torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        if not len(b):  # as the exported runtimes: no boxes, no masks
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        logits, ious = [], []
        model = self.model
        # SAM's decoder as written when the rewrite is switched off (benchmarks/decoder_rewrite.py compares them)
        rewrite = model.mask_decoder.single_mask_rewrite
        with self._lock, torch.inference_mode(), self._autocast():
            image = model.prepare_decode(emb) if rewrite else None
            for start in range(0, len(b), DECODE_CHUNK):
                chunk = b[start : start + DECODE_CHUNK]
                lg, iou = model.decode(emb, chunk) if image is None else model.decode_prepared(image, chunk)
                logits.append(lg[:, 0].float().numpy())
                ious.append(iou[:, 0].float().numpy())
        return np.concatenate(logits), np.concatenate(ious)
