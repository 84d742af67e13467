"""Box transforms between the image frame and the 256 model frame.

Boxes are ``[x0, y0, x1, y1]`` in pixels (x = column, y = row), inclusive corners as in the challenge
files. The model frame is the image scaled by ``s = 256 / max(H, W)`` (no offset: padding is bottom/right);
for anisotropic pixels (``pixel_aspect`` = row mm / column mm != 1, see
:func:`medsam_desktop.core.inference.preprocess.pixel_aspect`) x is scaled by ``sx`` and y by ``sy`` of
:func:`medsam_desktop.core.inference.preprocess.model_scales`, so the model frame has the slice's physical aspect.
With square pixels (the default) every function gives exactly LiteMedSAM's results.
"""

from __future__ import annotations

import numpy as np

from .preprocess import MODEL_SIZE, model_scales


class InvalidBoxError(ValueError):
    """A box prompt that cannot be used; the message says why."""


def model_scale(original_size: tuple[int, int]) -> float:
    """The uniform image -> model factor of square pixels, ``256 / max(H, W)``."""
    return MODEL_SIZE / max(original_size)


def _xyxy_scales(original_size: tuple[int, int], pixel_aspect: float) -> np.ndarray:
    """(4,) factors (sx, sy, sx, sy) multiplying an image-frame box ``[x0, y0, x1, y1]`` into the model frame."""
    sx, sy = model_scales((int(original_size[0]), int(original_size[1])), pixel_aspect)
    return np.array([sx, sy, sx, sy])


def validate_box(box: np.ndarray | list[float], original_size: tuple[int, int]) -> np.ndarray:
    """Return ``box`` as float64 (4,), sorted corners, clipped to the image; raise on unusable boxes.

    Unusable: not 4 finite numbers, or entirely outside the (H, W) image. A box of zero width or height (e.g.
    ``[637, 521, 661, 521]``, a one-pixel-thin target: corners are inclusive) is a valid prompt, as in LiteMedSAM,
    which scales any box to the model frame and feeds it to the prompt encoder.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise InvalidBoxError(f"a box needs 4 finite numbers x0 y0 x1 y1, got {np.asarray(box).tolist()}")
    x0, x1 = sorted((b[0], b[2]))
    y0, y1 = sorted((b[1], b[3]))
    h, w = original_size
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise InvalidBoxError(f"box {b.tolist()} lies outside the {w}x{h} image")
    return np.array([max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)])


def box_to_model(box: np.ndarray, original_size: tuple[int, int], pixel_aspect: float = 1.0) -> np.ndarray:
    """Image-frame box(es) (..., 4) of an (H, W) slice -> model-frame box(es) (..., 4), float.

    ``pixel_aspect`` (row mm / column mm, 1.0 = square = uniform ``256 / max(H, W)``): x by sx, y by sy.
    """
    if pixel_aspect == 1.0:
        return np.asarray(box, dtype=np.float64) * model_scale(original_size)
    return np.asarray(box, dtype=np.float64) * _xyxy_scales(original_size, pixel_aspect)


def box_from_model(box: np.ndarray, original_size: tuple[int, int], pixel_aspect: float = 1.0) -> np.ndarray:
    """Model-frame box(es) (..., 4) -> image frame (..., 4) of an (H, W) slice, float (inverse of box_to_model)."""
    if pixel_aspect == 1.0:
        return np.asarray(box, dtype=np.float64) / model_scale(original_size)
    return np.asarray(box, dtype=np.float64) / _xyxy_scales(original_size, pixel_aspect)


def mask_bbox(mask: np.ndarray) -> np.ndarray | None:
    """Tight inclusive bbox ``[x0, y0, x1, y1]`` of a (H, W) mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def mask_bbox_model(mask: np.ndarray, margin: int = 3, pixel_aspect: float = 1.0) -> np.ndarray | None:
    """Box prompt from a previous slice's (H, W) image-frame mask, in the model frame, as the challenge does.

    The challenge resizes the mask to the 256 frame with area averaging, takes its tight bbox and grows it by
    ``margin`` pixels, clipped to [0, 256] (``get_bbox256``: ``min(W, x_max + 3)``, W = 256). Here a 256-pixel
    counts when it overlaps any mask pixel; the challenge's uint8 averaging of a 0/label mask drops pixels
    covered less than 1/(2 * label), an approximation kept on purpose (label-independent). With anisotropic
    pixels (``pixel_aspect`` = row mm / column mm) x uses sx and y uses sy; the margin stays
    ``margin`` MODEL-FRAME pixels on every side.
    """
    bb = mask_bbox(mask)
    if bb is None:
        return None
    if pixel_aspect == 1.0:
        sx = sy = model_scale(mask.shape)
    else:
        sx, sy = model_scales((int(mask.shape[0]), int(mask.shape[1])), pixel_aspect)
    x0 = np.floor(bb[0] * sx)
    y0 = np.floor(bb[1] * sy)
    x1 = np.ceil((bb[2] + 1) * sx) - 1
    y1 = np.ceil((bb[3] + 1) * sy) - 1
    lim = MODEL_SIZE  # not MODEL_SIZE - 1: the challenge clips the grown box at the frame's size
    return np.array([max(0, x0 - margin), max(0, y0 - margin), min(lim, x1 + margin), min(lim, y1 + margin)])
