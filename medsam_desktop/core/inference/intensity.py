"""Modality-aware mapping of raw intensities to the 0..255 display range the model was trained on.

CT: window level/width (default soft tissue 40/400, as the challenge data); MR, PET and others: clip to the
0.5-99.5 percentile of the non-zero voxels and rescale, zeros stay 0; 8-bit data passes through.
"""

from __future__ import annotations

import numpy as np

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


CHUNK_ELEMENTS = 1 << 22  # volumes are mapped in slabs of ~4M voxels: float temporaries stay ~16 MB


def _slabs(shape: tuple[int, ...]) -> list[slice]:
    """Slices along axis 0 of a (N, ...) array (N >= 1 rows) in slabs of about CHUNK_ELEMENTS elements."""
    per = max(1, CHUNK_ELEMENTS // max(1, int(np.prod(shape[1:]))))
    return [slice(i, i + per) for i in range(0, shape[0], per)]


def window(array: np.ndarray, level: float, width: float) -> np.ndarray:
    """Linear window to uint8: level - width/2 -> 0, level + width/2 -> 255 (slab by slab: bounded memory)."""
    lo, hi = level - width / 2.0, level + width / 2.0
    src = np.asarray(array)
    arr = src.reshape(1, -1) if src.ndim < 2 else src
    out = np.empty(arr.shape, dtype=np.uint8)
    for sl in _slabs(arr.shape):
        slab = (np.clip(arr[sl].astype(np.float32), lo, hi) - lo) / max(hi - lo, 1e-6) * 255.0
        out[sl] = np.round(slab)
    return out.reshape(src.shape)


def percentile_range(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Percentiles of the non-zero voxels (all voxels if none are non-zero); subsampled for big arrays."""
    flat = np.asarray(array).ravel()
    if flat.size > 4_000_000:
        flat = flat[:: flat.size // 4_000_000 + 1]
    nz = flat[flat != 0]
    if nz.size == 0:
        nz = flat
    finite = nz[np.isfinite(nz)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi)


def percentile_normalise(
    array: np.ndarray, low: float = 0.5, high: float = 99.5, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Clip to the [low, high] percentile of non-zero voxels, rescale to uint8; exact zeros stay 0.

    ``value_range``: a range computed once for the whole volume (so a single slice maps as it would inside
    the volume) instead of the percentiles of ``array``.
    """
    lo, hi = value_range if value_range is not None else percentile_range(array, low, high)
    src = np.asarray(array)
    flat = src.reshape(1, -1) if src.ndim < 2 else src
    out = np.empty(flat.shape, dtype=np.uint8)
    for sl in _slabs(flat.shape):  # slab by slab: float temporaries stay small for whole volumes
        arr = np.nan_to_num(np.asarray(flat[sl], dtype=np.float32), nan=lo, posinf=hi, neginf=lo)
        slab = np.round((np.clip(arr, lo, hi) - lo) / max(hi - lo, 1e-6) * 255.0).astype(np.uint8)
        slab[arr == 0] = 0
        out[sl] = slab
    return out.reshape(src.shape)


def to_display_uint8(array: np.ndarray, modality: str = "unknown", ct_window: str = "soft tissue") -> np.ndarray:
    """Map a slice or volume of any dtype to uint8 for the model, according to ``modality``."""
    arr = np.asarray(array)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if modality.upper() == "CT":
        level, width = CT_WINDOWS[ct_window]
        return window(arr, level, width)
    return percentile_normalise(arr)
