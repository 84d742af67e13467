"""Where the click path's pixel refiner runs: a window around the mask and the clicks, not the whole frame.

The refiner (``model.mask_refiner``) is a stack of 3x3 convolutions, so an output pixel depends only on the inputs
within :data:`REFINER_RADIUS` model px of it, and it is trained to redraw outlines: the pixels it changes lie near
the decoder's mask or a click. So it redraws only the **region** R = the bbox of the decoder's mask (logits > 0)
and of the clicks, grown by :data:`REFINER_REACH` px; it runs on R grown by the radius (the **window**, inside the
256 frame, sides rounded up to :data:`WINDOW_STEP` px so few distinct shapes reach the runtime). Inside R the
result is the full-frame refiner's, exactly (every pixel of R sees its whole receptive field, or the frame's own
edge); outside R the shown logits are the decoder's. A cell of 10x10 px costs a 64x64 window instead of the
256x256 frame. Frames: the 256 model frame, ``(x, y)`` points, arrays ``[y, x]``. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .base import pad_clicks, refiner_image, refiner_input

SIDE = 256
#: how far (model px) an output pixel of the refiner sees: ``model.mask_refiner.RECEPTIVE_RADIUS`` (tested)
REFINER_RADIUS = 15
#: how far (model px) outside the bbox of the decoder's mask and the clicks the refiner may change a pixel: of the
#: 228,273 pixels session 15's refiner flipped on the full frame (150 held-out slices, up to 6 objects, 5 clicks),
#: 107 (0.05 %) lay farther out (docs/clicks.md, session 16)
REFINER_REACH = 8
#: window sides are multiples of this (or the whole frame)
WINDOW_STEP = 16

#: (image (1, 3, h, w) float32 in [0, 1], logits (1, 1, h, w), points (1, S, 2), labels (1, S)) -> (1, 1, h, w)
RefinerRun = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RefinerWindow:
    """``region`` (the pixels redrawn) and ``window`` (the refiner's input) as ``(y0, y1, x0, x1)``, end
    exclusive, in the model frame."""

    region: tuple[int, int, int, int]
    window: tuple[int, int, int, int]


def _grow(lo: int, hi: int, by: int, step: int) -> tuple[int, int]:
    """``[lo, hi)`` grown by ``by`` each side, clipped to the frame, length rounded up to ``step`` (moved back
    inside the frame when the rounding passes its edge)."""
    lo, hi = max(lo - by, 0), min(hi + by, SIDE)
    length = min(-(-(hi - lo) // step) * step, SIDE)
    hi = lo + length
    if hi > SIDE:
        lo, hi = SIDE - length, SIDE
    return lo, hi


def refiner_window(logits: np.ndarray, points: np.ndarray) -> RefinerWindow:
    """The region and window for the decoder's ``logits`` (256, 256) and the clicks ``points`` (P, 2)."""
    mask = np.asarray(logits) > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    pts = np.clip(np.rint(np.asarray(points, np.float64).reshape(-1, 2)), 0, SIDE - 1).astype(int)
    ys = np.concatenate([rows[:1], rows[-1:], pts[:, 1]])
    xs = np.concatenate([cols[:1], cols[-1:], pts[:, 0]])
    if ys.size == 0:  # no mask and no click: nothing to redraw
        return RefinerWindow((0, 0, 0, 0), (0, 0, 0, 0))
    ry = _grow(int(ys.min()), int(ys.max()) + 1, REFINER_REACH, 1)
    rx = _grow(int(xs.min()), int(xs.max()) + 1, REFINER_REACH, 1)
    wy = _grow(*ry, REFINER_RADIUS, WINDOW_STEP)
    wx = _grow(*rx, REFINER_RADIUS, WINDOW_STEP)
    return RefinerWindow((*ry, *rx), (*wy, *wx))


def refine_in_window(
    run: RefinerRun, image: np.ndarray | None, logits: np.ndarray, points: np.ndarray, labels: np.ndarray,
    slots: int,
) -> np.ndarray:  # fmt: skip
    """The shown logits (256, 256): ``logits`` (the decoder's, (256, 256)) redrawn by ``run`` inside the region
    of :func:`refiner_window`. ``image`` is the slice's (256, 256, 3) uint8 model-frame image (ValueError when
    missing), ``points`` (P, 2) ``(x, y)`` and ``labels`` (P,) the clicks; the last ``slots`` are given."""
    refiner_image(image)  # refused before anything runs
    logits = np.asarray(logits, np.float32).reshape(SIDE, SIDE)
    win = refiner_window(logits, np.asarray(points)[-slots:] if slots else np.zeros((0, 2)))
    wy0, wy1, wx0, wx1 = win.window
    shown = logits.copy()
    if wy1 <= wy0 or wx1 <= wx0:
        return shown
    p, lab = pad_clicks(np.asarray(points, np.float32).reshape(-1, 2) - np.float32([wx0, wy0]), labels, slots)
    out = run(
        refiner_input(image, win.window),
        np.ascontiguousarray(logits[None, None, wy0:wy1, wx0:wx1]),
        p,
        lab,
    )
    ry0, ry1, rx0, rx1 = win.region
    out = np.asarray(out).reshape(wy1 - wy0, wx1 - wx0)
    shown[ry0:ry1, rx0:rx1] = out[ry0 - wy0 : ry1 - wy0, rx0 - wx0 : rx1 - wx0]
    return shown
