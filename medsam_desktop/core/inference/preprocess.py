"""The single preprocessing path (LiteMedSAM) used by the app, the CLIs and training.

Image frame: pixel (x, y) of the original slice, shape (H, W). Model frame: the 256x256 input, obtained by
scaling the slice so that its longest PHYSICAL side becomes 256, min-max normalising to [0, 1] and padding
bottom/right with zeros. Grey slices are repeated to 3 channels.

Square pixels (the default, and the challenge path): both axes are scaled by ``s = 256 / max(H, W)``, exactly
as LiteMedSAM does. Anisotropic pixels (e.g. a coronal slice of 0.7 mm columns and 2.5 mm rows): with pixel
spacing ``(col_mm, row_mm)`` the slice covers ``H * row_mm`` by ``W * col_mm`` mm; columns are scaled by
``sx = 256 * col_mm / m`` and rows by ``sy = 256 * row_mm / m`` with ``m = max(H * row_mm, W * col_mm)``, so
the model sees the slice with its physical aspect ratio. Only the ratio ``row_mm / col_mm`` matters
(:func:`pixel_aspect`); it is kept in :class:`FrameInfo`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

MODEL_SIZE = 256

#: spacings whose ratio is within this relative distance of 1 count as square (float noise of DICOM headers)
SQUARE_TOLERANCE = 1e-6


def pixel_aspect(pixel_spacing: tuple[float, float] | None) -> float:
    """Height over width of one pixel, ``row_mm / col_mm``, from ``pixel_spacing`` = (column, row) mm.

    The order is (x, y) like :meth:`medsam_desktop.core.inference.reformat.Plane.pixel_spacing` and SimpleITK. Returns
    exactly 1.0 (square pixels: LiteMedSAM's uniform scaling) when ``pixel_spacing`` is None, not two finite
    positive numbers, or square within :data:`SQUARE_TOLERANCE`.
    """
    if pixel_spacing is None:
        return 1.0
    try:
        col_mm, row_mm = (float(v) for v in pixel_spacing)
    except (TypeError, ValueError):
        log.warning("ignoring pixel spacing %r: expected (column, row) mm", pixel_spacing)
        return 1.0
    if not (math.isfinite(col_mm) and math.isfinite(row_mm) and col_mm > 0 and row_mm > 0):
        log.warning("ignoring pixel spacing %r: not two positive numbers; using square pixels", pixel_spacing)
        return 1.0
    aspect = row_mm / col_mm
    return 1.0 if abs(aspect - 1.0) <= SQUARE_TOLERANCE else aspect


def model_scales(
    original_size: tuple[int, int], pixel_aspect: float = 1.0, target: int = MODEL_SIZE
) -> tuple[float, float]:
    """(sx, sy): model-frame pixels per image pixel along columns (x) and rows (y) of an (H, W) slice.

    Square pixels (``pixel_aspect == 1``): both are ``target / max(H, W)``, bit for bit the LiteMedSAM scale.
    Otherwise the longest physical side maps to ``target``: ``sx = target / m``, ``sy = target * a / m`` with
    ``a = pixel_aspect`` (row mm / column mm) and ``m = max(H * a, W)`` (extents in column-mm units).
    """
    h, w = original_size
    if pixel_aspect == 1.0:
        s = target / max(h, w)
        return s, s
    longest = max(h * pixel_aspect, w)
    return target / longest, target * pixel_aspect / longest


@dataclass(frozen=True)
class FrameInfo:
    """Sizes linking an original slice (image frame) to the model frame.

    ``pixel_aspect`` is row mm / column mm of the slice's pixels (1.0: square, the LiteMedSAM frame).
    """

    original_size: tuple[int, int]  # (H, W)
    resized_size: tuple[int, int]  # (h, w) inside the 256 frame, before padding
    pixel_aspect: float = 1.0

    @classmethod
    def of(cls, original_size: tuple[int, int], pixel_spacing: tuple[float, float] | None = None) -> FrameInfo:
        """The frame of an (H, W) slice with ``pixel_spacing`` (column, row) mm (None: square pixels)."""
        size = (int(original_size[0]), int(original_size[1]))
        aspect = pixel_aspect(pixel_spacing)
        return cls(size, resized_size(size, pixel_aspect=aspect), aspect)

    @property
    def scales(self) -> tuple[float, float]:
        """(sx, sy) image -> model frame factors along x (columns) and y (rows); see :func:`model_scales`."""
        return model_scales(self.original_size, self.pixel_aspect)

    @property
    def scale(self) -> float:
        """The uniform image -> model factor ``256 / max(H, W)`` (square pixels; see :attr:`scales`)."""
        if self.pixel_aspect != 1.0:
            raise ValueError("anisotropic frame: the scale differs per axis, use FrameInfo.scales")
        return MODEL_SIZE / max(self.original_size)


def resized_size(
    original_size: tuple[int, int], target: int = MODEL_SIZE, pixel_aspect: float = 1.0
) -> tuple[int, int]:
    """(h, w) after scaling the longest (physical) side of (H, W) to ``target`` (rounded half up, as LiteMedSAM).

    ``pixel_aspect`` = row mm / column mm (see :func:`pixel_aspect`); 1.0 gives LiteMedSAM's sizes exactly.
    """
    h, w = original_size
    sx, sy = model_scales((h, w), pixel_aspect, target)
    return min(target, max(1, int(h * sy + 0.5))), min(target, max(1, int(w * sx + 0.5)))


@lru_cache(maxsize=64)
def _resample_matrix(old: int, new: int) -> np.ndarray:
    """(new, old) weights: exact area averaging when shrinking, bilinear (half-pixel centres) when growing."""
    m = np.zeros((new, old), dtype=np.float64)
    if new <= old:
        ratio = old / new
        for i in range(new):
            lo, hi = i * ratio, (i + 1) * ratio
            j0, j1 = int(np.floor(lo)), min(old, int(np.ceil(hi)))
            for j in range(j0, j1):
                m[i, j] = min(hi, j + 1) - max(lo, j)
            m[i] /= m[i].sum()
        return m.astype(np.float32)
    return _bilinear_matrix(old, new)


def _bilinear_sources(old: int, new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling with half-pixel centres, no antialiasing (``torch.nn.functional.interpolate(
    mode="bilinear", align_corners=False)`` along one axis): output i = (1 - frac[i]) * x[j0[i]] +
    frac[i] * x[j1[i]], j0 == j1 at the clamped edges; frac in float64."""
    pos = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
    j0 = np.floor(pos).astype(np.intp)
    return j0, np.minimum(j0 + 1, old - 1), pos - j0


@lru_cache(maxsize=64)
def _bilinear_matrix(old: int, new: int) -> np.ndarray:
    """(new, old) float32 weights of :func:`_bilinear_sources` as a dense matrix (for BLAS products)."""
    j0, j1, frac = _bilinear_sources(old, new)
    m = np.zeros((new, old), dtype=np.float64)
    np.add.at(m, (np.arange(new), j0), 1 - frac)
    np.add.at(m, (np.arange(new), j1), frac)
    return m.astype(np.float32)


@lru_cache(maxsize=64)
def _bilinear_taps(old: int, new: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_bilinear_sources` with frac in float32, read-only (shared through the cache)."""
    j0, j1, frac = _bilinear_sources(old, new)
    taps = (j0, j1, frac.astype(np.float32))
    for a in taps:
        a.flags.writeable = False
    return taps


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W) or (H, W, C) to ``size`` = (h, w) as float32 (area when shrinking, bilinear when growing)."""
    img = np.asarray(image, dtype=np.float32)
    ry = _resample_matrix(img.shape[0], size[0])
    rx = _resample_matrix(img.shape[1], size[1])
    if img.ndim == 2:
        return ry @ img @ rx.T
    # one BLAS matmul pair per channel: ~25x faster than the equivalent unoptimised einsum
    return np.stack([ry @ img[..., c] @ rx.T for c in range(img.shape[2])], axis=-1)


def to_three_channels(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 1|3|4) -> (H, W, 3); alpha is dropped."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3]


def _single_channel(image: np.ndarray) -> np.ndarray | None:
    """The one channel of a grey image: (H, W), (H, W, 1), or colour channels that are all equal; else None."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    if (
        image.shape[2] >= 3
        and np.array_equal(image[:, :, 0], image[:, :, 1])
        and np.array_equal(image[:, :, 0], image[:, :, 2])
    ):
        return image[:, :, 0]
    return None


def preprocess(image: np.ndarray, pixel_spacing: tuple[float, float] | None = None) -> tuple[np.ndarray, FrameInfo]:
    """Slice (H, W) or (H, W, 3) of any numeric dtype -> model input (3, 256, 256) float32 in [0, 1].

    Intensities should already be in display range (e.g. windowed CT, uint8 challenge images); the result
    is min-max normalised after resizing, as LiteMedSAM does. ``pixel_spacing`` = (column, row) mm of the
    slice's pixels: the slice is resized straight to its physical aspect ratio inside the 256 frame (no
    intermediate full-resolution array). None or square pixels: LiteMedSAM's preprocessing, bit for bit.
    """
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a 2D slice (H, W) or (H, W, 3), got shape {image.shape}")
    img = np.asarray(image)
    info = FrameInfo.of((img.shape[0], img.shape[1]), pixel_spacing)
    grey = _single_channel(img)
    if grey is not None:  # resize once, then replicate: a third of the work for grey slices (CT, MR, X-ray)
        small = np.repeat(resize_image(grey, info.resized_size)[:, :, None], 3, axis=2)
    else:
        small = resize_image(to_three_channels(img), info.resized_size)
    lo, hi = float(small.min()), float(small.max())
    small = (small - lo) / max(hi - lo, 1e-8)
    out = np.zeros((3, MODEL_SIZE, MODEL_SIZE), dtype=np.float32)
    h, w = info.resized_size
    out[:, :h, :w] = small.transpose(2, 0, 1)
    return out, info


def preprocess_uint8(
    image: np.ndarray, pixel_spacing: tuple[float, float] | None = None
) -> tuple[np.ndarray, FrameInfo]:
    """As :func:`preprocess` but returns (256, 256, 3) uint8 (compact storage for training shards).

    ``preprocess_uint8(x)[0] / 255`` equals ``preprocess(x)[0]`` up to rounding (<= 0.5/255).
    """
    arr, info = preprocess(image, pixel_spacing)
    return np.round(arr.transpose(1, 2, 0) * 255.0).astype(np.uint8), info


def upsample_logits(logits: np.ndarray, frame: FrameInfo) -> np.ndarray:
    """Model-frame logits (N, 256, 256) -> image-frame logits (N, H, W).

    Crops the padded part away, then bilinear resize (as LiteMedSAM's ``postprocess_masks``). Anisotropic
    frames need nothing more: the crop (h, w) has the physical aspect and is resized back to the slice's own
    (H, W) pixels, each axis by its own factor.
    """
    h, w = frame.resized_size
    crop = np.asarray(logits, dtype=np.float32)[:, :h, :w]
    # rows: two taps per output row (a gather and a blend); columns: one BLAS product with the same weights.
    # 1.45 vs 2.13 ms per 512x512 mask against two dense products (docs/performance.md).
    rows = _blend_rows(crop, frame.original_size[0])  # (N, H, w)
    return rows @ _bilinear_matrix(w, frame.original_size[1]).T


def _blend_rows(crop: np.ndarray, out_h: int, y0: int = 0, y1: int | None = None) -> np.ndarray:
    """Rows ``y0:y1`` of ``crop`` (..., h, w) resized bilinearly along its rows to ``out_h`` (two taps each)."""
    r0, r1, frac = _bilinear_taps(crop.shape[-2], out_h)
    rows = slice(y0, y1)
    f = frac[rows, None]
    return crop[..., r0[rows], :] * (1 - f) + crop[..., r1[rows], :] * f


def logits_to_masks(logits: np.ndarray, frame: FrameInfo) -> np.ndarray:
    """Model-frame logits (N, 256, 256) -> boolean masks (N, H, W) (sigmoid > 0.5, i.e. logit > 0).

    The same values as ``upsample_logits(logits, frame) > 0``, computed only where a mask can be set: each
    upsampled pixel is a convex blend of at most four source logits, so it is positive only in the output rows
    and columns that read a positive source. A structure covering a small part of the slice costs a small part
    of the full upsampling (a 2048x2048 image: ~25 ms per mask for the full frame).
    """
    h, w = frame.resized_size
    out_h, out_w = frame.original_size
    crop = np.asarray(logits, dtype=np.float32)[:, :h, :w]
    masks = np.zeros((crop.shape[0], out_h, out_w), dtype=bool)
    r0, r1, _ = _bilinear_taps(h, out_h)
    c0, c1, _ = _bilinear_taps(w, out_w)
    columns = _bilinear_matrix(w, out_w)
    for n, lg in enumerate(crop):
        positive = lg > 0
        rows_hit = np.flatnonzero(positive.any(axis=1))
        if rows_hit.size == 0:
            continue
        cols_hit = np.flatnonzero(positive.any(axis=0))
        # r0 <= r1 are non-decreasing: the rows reading a source row in [lo, hi] are one contiguous run
        y0, y1 = np.searchsorted(r1, rows_hit[0], "left"), np.searchsorted(r0, rows_hit[-1], "right")
        x0, x1 = np.searchsorted(c1, cols_hit[0], "left"), np.searchsorted(c0, cols_hit[-1], "right")
        rows = _blend_rows(lg, out_h, y0, y1)  # as upsample_logits, on the rows that matter
        masks[n, y0:y1, x0:x1] = (rows @ columns[x0:x1].T) > 0
    return masks
