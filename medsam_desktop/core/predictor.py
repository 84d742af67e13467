"""Box-prompted segmentation of one slice: ``encode`` once, ``decode`` many boxes.

Frames: boxes given to :meth:`Predictor.decode` are in image pixels ``[x0, y0, x1, y1]``; masks come back
in the image frame (H, W); logits stay in the 256 model frame.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from .backend import InferenceBackend
from .boxes import box_to_model, validate_box
from .cache import EmbeddingCache
from .preprocess import FrameInfo, logits_to_masks, preprocess, resized_size


@dataclass(frozen=True)
class Embedding:
    """Image embedding (1, 256, 64, 64) float32 of one slice, with its frame sizes."""

    array: np.ndarray
    frame: FrameInfo

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


@dataclass(frozen=True)
class Prediction:
    """``masks`` (N, H, W) bool in the image frame, ``logits`` (N, 256, 256) model frame, ``iou`` (N,)."""

    masks: np.ndarray
    logits: np.ndarray
    iou: np.ndarray


class Predictor:
    """Encodes slices (through an optional byte-bounded cache) and decodes box prompts."""

    def __init__(self, backend: InferenceBackend, cache: EmbeddingCache | None = None) -> None:
        self.backend = backend
        self.cache = cache

    def encode(self, image: np.ndarray, key: Hashable | None = None) -> Embedding:
        """Slice (H, W) or (H, W, 3) in display range -> Embedding. ``key`` enables the cache."""
        if key is not None and self.cache is not None:
            hit = self.cached(image.shape, key)
            if hit is not None:
                return hit
        x, frame = preprocess(image)
        emb = self.backend.encode(x[None])
        if key is not None and self.cache is not None:
            self.cache.put((self.backend.name, key), emb)
        return Embedding(emb, frame)

    def cached(self, image_shape: tuple[int, ...], key: Hashable) -> Embedding | None:
        """The cached embedding for ``key`` without computing anything (None on a miss)."""
        if self.cache is None:
            return None
        arr = self.cache.get((self.backend.name, key))
        if arr is None:
            return None
        size = (int(image_shape[0]), int(image_shape[1]))
        return Embedding(arr, FrameInfo(size, resized_size(size)))

    def decode(self, embedding: Embedding, boxes: np.ndarray) -> Prediction:
        """Boxes (4,) or (N, 4) in image pixels -> Prediction with N masks. Invalid boxes raise InvalidBoxError."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        valid = np.stack([validate_box(bx, embedding.frame.original_size) for bx in b])
        return self.decode_model_boxes(embedding, box_to_model(valid, embedding.frame.original_size))

    def decode_model_boxes(self, embedding: Embedding, boxes_model: np.ndarray) -> Prediction:
        """Boxes (N, 4) already in the 256 model frame -> Prediction."""
        logits, iou = self.backend.decode(embedding.array, np.asarray(boxes_model, dtype=np.float32).reshape(-1, 4))
        return Prediction(logits_to_masks(logits, embedding.frame), logits, iou)
