"""Correcting a box's mask with clicks: the click path decodes box + points + the previous mask, no re-encode.

Frames: points and boxes are given in image pixels (``x`` column, ``y`` row, pixel indices); the click path
works in the 256 model frame (``core.backends.clicks``). A point maps by its pixel centre,
``(x + 0.5) * s - 0.5`` per axis (the model's prompt encoder adds the 0.5 back). The first click's mask prompt
is the box-only prediction's logits, each later click's the previous click's. The click network is loaded on
the first click (:class:`ClickRefiner`), so a session that never clicks never loads it. A click path with a
pixel refiner also takes the slice's model-frame image (:func:`model_image`, made once per slice by the caller).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..backends.clicks import ClickBackend
from .boxes import box_to_model, validate_box
from .predictor import Embedding, Prediction
from .preprocess import logits_to_masks, model_scales, preprocess_uint8

__all__ = ["ClickPoint", "ClickRefiner", "model_image", "points_to_model"]


@dataclass(frozen=True)
class ClickPoint:
    """A click in image pixels: column ``x``, row ``y``, ``positive`` (add) or negative (remove)."""

    x: float
    y: float
    positive: bool


def points_to_model(
    points: Sequence[ClickPoint], original_size: tuple[int, int], pixel_aspect: float = 1.0
) -> np.ndarray:
    """Image-frame clicks -> (P, 2) model-frame ``(x, y)`` at the same pixel centres."""
    sx, sy = model_scales((int(original_size[0]), int(original_size[1])), pixel_aspect)
    h, w = original_size
    xy = np.array([[min(max(p.x, 0), w - 1), min(max(p.y, 0), h - 1)] for p in points], np.float64).reshape(-1, 2)
    return (xy + 0.5) * np.array([sx, sy]) - 0.5


def model_image(image: np.ndarray, pixel_spacing: tuple[float, float] | None = None) -> np.ndarray:
    """Slice (H, W[, 3]) in display range -> the (256, 256, 3) uint8 model-frame image a refining click path
    takes (the encoder's input, stored as the training shards store it)."""
    return preprocess_uint8(image, pixel_spacing)[0]


class ClickRefiner:
    """Decodes box + clicks on an encoded slice; ``load`` gives the click backend, called once, on first use."""

    def __init__(self, load: Callable[[], ClickBackend]) -> None:
        self._load = load
        self._backend: ClickBackend | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    @property
    def backend(self) -> ClickBackend:
        """The click backend (loaded now when it is not yet; its errors reach the caller)."""
        with self._lock:
            if self._backend is None:
                self._backend = self._load()
            return self._backend

    @property
    def needs_image(self) -> bool:
        """Whether :meth:`refine` needs the slice's :func:`model_image` (loads the backend)."""
        return bool(self.backend.needs_image)

    def refine(
        self, embedding: Embedding, box: np.ndarray, points: Sequence[ClickPoint], previous_logits: np.ndarray,
        image: np.ndarray | None = None,
    ) -> Prediction:  # fmt: skip
        """Box (4,) image pixels + clicks + the previous (256, 256) logits (+ the slice's :func:`model_image` for a
        path that needs it) -> a one-mask Prediction: its mask is the one to show (redrawn by the path's refiner
        when it has one), its logits the decoder's own, which the next click takes as ``previous_logits``."""
        frame = embedding.frame
        if not points:
            raise ValueError("refine needs at least one click")
        box_m = box_to_model(validate_box(box, frame.original_size), frame.original_size, frame.pixel_aspect)
        pts = points_to_model(points, frame.original_size, frame.pixel_aspect)
        labels = np.array([1.0 if p.positive else 0.0 for p in points], np.float32)
        logits, iou, shown = self.backend.decode_clicks(
            embedding.array, box_m.astype(np.float32), pts.astype(np.float32), labels,
            np.asarray(previous_logits, np.float32).reshape(256, 256), image,
        )  # fmt: skip
        return Prediction(logits_to_masks(shown[None], frame), logits[None], np.array([iou], np.float32))
