"""Shared validation for readers: size limits, empty/NaN data, modality heuristics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import InvalidImageError

log = logging.getLogger(__name__)

#: Refuse volumes with more voxels than this (2**31: ~2 GB even as uint8).
MAX_VOXELS = 2**31
#: Refuse single 2D images with more pixels than this (16384 x 16384).
MAX_2D_PIXELS = 16384 * 16384
#: Refuse slices narrower than this (a box prompt needs at least 2x2 pixels).
MIN_SIDE = 2


def check_size(size_xyz: tuple[int, ...] | list[int], path: Path) -> None:
    """Raise :class:`InvalidImageError` for empty grids, slices under 2x2 pixels or grids above the limits."""
    dims = [int(s) for s in size_xyz]
    if not dims or min(dims) <= 0:
        raise InvalidImageError(
            f"the image has no voxels (size {'x'.join(map(str, dims))})",
            path=path,
            action="The file holds no picture data; export the image again.",
        )
    if len(dims) >= 2 and min(dims[:2]) < MIN_SIDE:
        raise InvalidImageError(
            f"each slice is only {dims[0]}x{dims[1]} pixels, too small to segment",
            path=path,
            action=f"Open an image of at least {MIN_SIDE}x{MIN_SIDE} pixels per slice.",
        )
    n = int(np.prod(np.asarray(dims, dtype=np.float64)))
    in_plane = dims[0] * (dims[1] if len(dims) > 1 else 1)
    is_2d = len(dims) == 2 or (len(dims) >= 3 and dims[2] == 1)
    if n > MAX_VOXELS or (is_2d and in_plane > MAX_2D_PIXELS):
        raise InvalidImageError(
            f"the image is too large ({'x'.join(map(str, dims))} = {n:,} voxels; the limit is "
            f"{MAX_2D_PIXELS:,} pixels per 2D image and {MAX_VOXELS:,} voxels per volume)",
            path=path,
            action="Crop or downsample it (e.g. in 3D Slicer or an image editor) and open the smaller copy.",
        )


def finalize_array(array: np.ndarray, path: Path) -> np.ndarray:
    """Validate a (D, H, W[, 3]) array (complex data is refused); replace NaN/Inf by the finite minimum."""
    if array.size == 0:
        raise InvalidImageError("the image has no voxels", path=path)
    if array.dtype.kind == "c":
        raise InvalidImageError(
            "its voxels are complex numbers (e.g. raw MR phase or k-space data), not an image to segment",
            path=path,
            action="Export the magnitude image (real-valued) and open that.",
        )
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            if not finite.any():
                raise InvalidImageError(
                    "every voxel is NaN or infinite (no image data)",
                    path=path,
                    action="Re-export the image from the software that produced it.",
                )
            fill = array[finite].min()
            n_bad = int(array.size - np.count_nonzero(finite))
            log.warning("%s: replaced %d NaN/Inf voxels by the finite minimum %g", path.name, n_bad, fill)
            array = np.where(finite, array, fill).astype(array.dtype, copy=False)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def guess_modality(array: np.ndarray) -> str:
    """Cheap hint for formats without a modality tag: signed data with min <= -500 looks like CT (HU)."""
    if array.ndim == 4:
        return "RGB"
    if array.dtype.kind in "if" and array.size and float(array.min()) <= -500.0:
        return "CT"
    return "unknown"


def narrow_int_dtype(array: np.ndarray) -> np.ndarray:
    """Cast int32/int64 data to int16 when every value fits (SimpleITK widens rescaled DICOM)."""
    if array.dtype.kind == "i" and array.dtype.itemsize > 2 and array.size:
        lo, hi = int(array.min()), int(array.max())
        if np.iinfo(np.int16).min <= lo and hi <= np.iinfo(np.int16).max:
            return array.astype(np.int16)
    return array
