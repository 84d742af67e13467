"""Simulated corrective clicks, as the CVPR 2025 interactive-segmentation challenge places them.

After each prediction the next click goes to the centre of the largest error region: the false-negative
(missed foreground) and false-positive (taken background) regions are split into 4-connected components
(2D), the largest component of either kind wins (ties: the missed foreground), and the click is its pixel
farthest from the component's border (Euclidean distance transform; the image edge counts as border).
Positive on missed foreground, negative on taken background. In 3D the click goes on the slice with the
most error voxels. Clicks are :class:`~medsam_desktop.core.inference.clicks.ClickPoint` in pixels of the array
given (the 256 model frame in training, the image frame in ``medsam-infer``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..inference.clicks import ClickPoint

__all__ = ["largest_error_slice", "next_click"]


def _largest_component(error: np.ndarray) -> np.ndarray | None:
    labels, n = ndimage.label(error)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def next_click(prediction: np.ndarray, truth: np.ndarray) -> ClickPoint | None:
    """The click that corrects the largest error region of a 2D ``prediction`` against ``truth`` (both (H, W)
    bool); None when they agree everywhere."""
    pred, gt = np.asarray(prediction, bool), np.asarray(truth, bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and truth {gt.shape} must be the same 2D shape")
    missed = _largest_component(gt & ~pred)
    taken = _largest_component(pred & ~gt)
    if missed is None and taken is None:
        return None
    positive = taken is None or (missed is not None and int(missed.sum()) >= int(taken.sum()))
    region = missed if positive else taken
    assert region is not None
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return ClickPoint(int(x), int(y), bool(positive))


def largest_error_slice(prediction: np.ndarray, truth: np.ndarray) -> int | None:
    """Index of the slice (axis 0) of (D, H, W) volumes with the most error voxels; None when they agree."""
    pred, gt = np.asarray(prediction, bool), np.asarray(truth, bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"prediction {pred.shape} and truth {gt.shape} must be the same 3D shape")
    errors = (pred ^ gt).reshape(len(pred), -1).sum(1)
    return int(np.argmax(errors)) if errors.any() else None
