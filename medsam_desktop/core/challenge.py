"""Challenge-format inference: one case (2D image + boxes, or 3D volume + 3D boxes) -> label map."""

from __future__ import annotations

import threading

import numpy as np

from .predictor import Predictor
from .propagation import ProgressCallback, propagate_boxes, segment_slice


def segment_challenge_case(
    predictor: Predictor,
    imgs: np.ndarray,
    boxes: np.ndarray,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """``imgs`` (H, W, 3) with ``boxes`` (N, 4), or (D, H, W) with ``boxes`` (N, 6) -> ``segs`` labels 1..N.

    2D: one embedding, all boxes decoded together, later boxes overwrite earlier ones. 3D: the challenge's
    middle-slice propagation (:func:`~medsam_desktop.core.propagation.propagate_boxes`).
    """
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(f"boxes must be (N, 4) or (N, 6), got shape {boxes.shape}")
    if boxes.shape[1] == 4:
        if imgs.ndim == 4 and imgs.shape[0] == 1:
            imgs = imgs[0]
        if imgs.ndim not in (2, 3):
            raise ValueError(f"2D boxes need an (H, W[, 3]) image, got shape {imgs.shape}")
        return segment_slice(predictor, imgs, boxes)
    if imgs.ndim not in (3, 4):
        raise ValueError(f"3D boxes need a (D, H, W) volume, got shape {imgs.shape}")
    return propagate_boxes(predictor, imgs, boxes, progress=progress, cancel=cancel)
