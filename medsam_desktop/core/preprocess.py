"""The single preprocessing path (LiteMedSAM) used by the app, the CLIs and training.

Image frame: pixel (x, y) of the original slice, shape (H, W). Model frame: the 256x256 input, obtained by
scaling the longest side to 256 (factor ``s = 256 / max(H, W)``), min-max normalising to [0, 1] and padding
bottom/right with zeros. Grey slices are repeated to 3 channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MODEL_SIZE = 256


@dataclass(frozen=True)
class FrameInfo:
    """Sizes linking an original slice to the model frame."""

    original_size: tuple[int, int]  # (H, W)
    resized_size: tuple[int, int]  # (h, w) inside the 256 frame, before padding

    @property
    def scale(self) -> float:
        return MODEL_SIZE / max(self.original_size)


def resized_size(original_size: tuple[int, int], target: int = MODEL_SIZE) -> tuple[int, int]:
    """(h, w) after scaling the longest side of (H, W) to ``target`` (rounded half up, as LiteMedSAM)."""
    h, w = original_size
    scale = target / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


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


@lru_cache(maxsize=64)
def _bilinear_matrix(old: int, new: int) -> np.ndarray:
    """(new, old) weights of bilinear sampling with half-pixel centres, no antialiasing.

    Matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` along one axis.
    """
    m = np.zeros((new, old), dtype=np.float64)
    pos = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
    j0 = np.floor(pos).astype(int)
    j1 = np.minimum(j0 + 1, old - 1)
    frac = pos - j0
    np.add.at(m, (np.arange(new), j0), 1 - frac)
    np.add.at(m, (np.arange(new), j1), frac)
    return m.astype(np.float32)


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
    if image.shape[2] >= 3 and np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(
        image[:, :, 0], image[:, :, 2]
    ):
        return image[:, :, 0]
    return None


def preprocess(image: np.ndarray) -> tuple[np.ndarray, FrameInfo]:
    """Slice (H, W) or (H, W, 3) of any numeric dtype -> model input (3, 256, 256) float32 in [0, 1].

    Intensities should already be in display range (e.g. windowed CT, uint8 challenge images); the result
    is min-max normalised after resizing, as LiteMedSAM does.
    """
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected a 2D slice (H, W) or (H, W, 3), got shape {image.shape}")
    img = np.asarray(image)
    info = FrameInfo((img.shape[0], img.shape[1]), resized_size((img.shape[0], img.shape[1])))
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


def preprocess_uint8(image: np.ndarray) -> tuple[np.ndarray, FrameInfo]:
    """As :func:`preprocess` but returns (256, 256, 3) uint8 (compact storage for training shards).

    ``preprocess_uint8(x)[0] / 255`` equals ``preprocess(x)[0]`` up to rounding (<= 0.5/255).
    """
    arr, info = preprocess(image)
    return np.round(arr.transpose(1, 2, 0) * 255.0).astype(np.uint8), info


def upsample_logits(logits: np.ndarray, frame: FrameInfo) -> np.ndarray:
    """Model-frame logits (N, 256, 256) -> image-frame logits (N, H, W).

    Crops the padded part away, then bilinear resize (as LiteMedSAM's ``postprocess_masks``).
    """
    h, w = frame.resized_size
    crop = np.asarray(logits, dtype=np.float32)[:, :h, :w]
    ry = _bilinear_matrix(h, frame.original_size[0])
    rx = _bilinear_matrix(w, frame.original_size[1])
    return np.einsum("ih,nhw,jw->nij", ry, crop, rx, optimize=True)


def logits_to_masks(logits: np.ndarray, frame: FrameInfo) -> np.ndarray:
    """Model-frame logits (N, 256, 256) -> boolean masks (N, H, W) (sigmoid > 0.5, i.e. logit > 0)."""
    return upsample_logits(logits, frame) > 0
