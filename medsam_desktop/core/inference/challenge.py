"""Challenge-format inference: one case (2D image + boxes, or 3D volume + 3D boxes) -> label map.

Boxes are checked one object at a time (:func:`box_problem`): an object whose box cannot be used (NaN, min > max,
entirely outside the image) gets an empty mask and one warning line; the other objects get their masks. A box
of zero width, height or depth is a valid prompt (LiteMedSAM segments it).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from .predictor import Predictor
from .propagation import ProgressCallback, propagate_boxes, segment_slice

log = logging.getLogger(__name__)


def _shown(box: np.ndarray) -> list[float | int]:
    """Box coordinates for a message: whole numbers without a trailing ``.0``."""
    return [int(v) if np.isfinite(v) and v == int(v) else float(v) for v in box]


def box_problem(box: np.ndarray, shape_zyx: tuple[int, int, int]) -> str | None:
    """Why a challenge box cannot be segmented on an image of (D, H, W) (2D: D = 1), or None when it can.

    ``box``: (4,) ``[x0, y0, x1, y1]`` or (6,) ``[x0, y0, z0, x1, y1, z1]``, inclusive pixel indices. Unusable:
    a non-finite coordinate, min > max on an axis, or no pixel inside the image. Usable boxes reaching past the
    image are clipped to it by the segmentation; ``x1 == W`` (allowed by the file format) is not reported.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(b)):
        return f"box {_shown(b)} has NaN or infinite coordinates"
    half = b.size // 2
    lo, hi = b[:half], b[half:]
    d, h, w = shape_zyx
    limits = np.array([w, h, d][:half], dtype=np.float64)
    if np.any(hi < lo):
        return f"box {_shown(b)} has min > max"
    if np.any(hi < 0) or np.any(lo > limits - 1):
        size = f"{w}x{h}" + (f"x{d}" if half == 3 else "")
        return f"box {_shown(b)} lies outside the {size} image"
    return None


def usable_objects(boxes: np.ndarray, shape_zyx: tuple[int, int, int], name: str = "case") -> list[int]:
    """Indices of the boxes that can be segmented (:func:`box_problem`); each other object is logged as one
    WARNING naming ``name`` (the case) and keeps an empty mask."""
    usable = []
    for i, box in enumerate(boxes):
        problem = box_problem(box, shape_zyx)
        if problem is None:
            usable.append(i)
        else:
            log.warning("%s: object %d: %s; its mask is left empty", name, i + 1, problem)
    return usable


def segment_challenge_case(
    predictor: Predictor,
    imgs: np.ndarray,
    boxes: np.ndarray,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    name: str = "case",
) -> np.ndarray:
    """``imgs`` (H, W, 3) with ``boxes`` (N, 4), or (D, H, W) with ``boxes`` (N, 6) -> ``segs`` labels 1..N.

    2D: one embedding, all boxes decoded together, later boxes overwrite earlier ones. 3D: the challenge's
    middle-slice propagation (:func:`~medsam_desktop.core.inference.propagation.propagate_boxes`). Object ``i``
    whose box is unusable (:func:`box_problem`) keeps label ``i + 1`` out of the map and is logged as one WARNING naming
    ``name`` (the case); the others are segmented as if it were not there.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(f"boxes must be (N, 4) or (N, 6), got shape {boxes.shape}")
    boxes = boxes.astype(np.float64)
    if boxes.shape[1] == 4:
        if imgs.ndim == 4 and imgs.shape[0] == 1:
            imgs = imgs[0]
        if imgs.ndim not in (2, 3):
            raise ValueError(f"2D boxes need an (H, W[, 3]) image, got shape {imgs.shape}")
        shape_zyx = (1, int(imgs.shape[0]), int(imgs.shape[1]))
    else:
        if imgs.ndim not in (3, 4):
            raise ValueError(f"3D boxes need a (D, H, W) volume, got shape {imgs.shape}")
        shape_zyx = (int(imgs.shape[0]), int(imgs.shape[1]), int(imgs.shape[2]))
    usable = usable_objects(boxes, shape_zyx, name)
    values = [i + 1 for i in usable]
    if boxes.shape[1] == 4:
        return segment_slice(predictor, imgs, boxes[usable], label_values=values)
    return propagate_boxes(predictor, imgs, boxes[usable], progress=progress, cancel=cancel, label_values=values)
