"""Box-prompted segmentation of one slice: ``encode`` once, ``decode`` many boxes.

Frames: boxes given to :meth:`Predictor.decode` are in image pixels ``[x0, y0, x1, y1]``; masks come back
in the image frame (H, W); logits stay in the 256 model frame. A slice encoded with a ``pixel_spacing``
(column, row mm) is seen by the model with its physical aspect; its :class:`FrameInfo` remembers the aspect,
so boxes and masks of that embedding are mapped per axis.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from ..backends import InferenceBackend
from .boxes import box_to_model, validate_box
from .cache import EmbeddingCache
from .preprocess import FrameInfo, logits_to_masks, pixel_aspect, preprocess


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

    def encode(
        self, image: np.ndarray, key: Hashable | None = None, pixel_spacing: tuple[float, float] | None = None
    ) -> Embedding:
        """Slice (H, W) or (H, W, 3) in display range -> Embedding. ``key`` enables the cache.

        ``pixel_spacing`` = (column, row) mm of the slice's pixels (None: square; see
        :func:`~medsam_desktop.core.inference.preprocess.preprocess`). The cache key holds the pixel aspect too, so the
        same slice seen with another aspect is never served the other's embedding.
        """
        if key is not None and self.cache is not None:
            hit = self.cached(image.shape, key, pixel_spacing)
            if hit is not None:
                return hit
        x, frame = preprocess(image, pixel_spacing)
        emb = self.backend.encode(x[None])
        if key is not None and self.cache is not None:
            self.cache.put(self._cache_key(key, frame.pixel_aspect), emb)
            emb = self.cache.as_served(emb)  # the same values as every later hit (deterministic masks)
        return Embedding(emb, frame)

    @property
    def serves_float16(self) -> bool:
        """Whether embeddings encoded with a key hold float16 values (a float16 cache: misses are served as hits
        are), so that keeping one as float16 loses nothing."""
        return self.cache is not None and self.cache.fp16

    def _cache_key(self, key: Hashable, aspect: float) -> Hashable:
        """``(backend name, caller's key, pixel aspect)``: the caller's key stays the second element."""
        return (self.backend.name, key, aspect)

    def cached(
        self, image_shape: tuple[int, ...], key: Hashable, pixel_spacing: tuple[float, float] | None = None
    ) -> Embedding | None:
        """The cached embedding for ``key`` (and this pixel spacing) without computing anything (None on a miss)."""
        if self.cache is None:
            return None
        arr = self.cache.get(self._cache_key(key, pixel_aspect(pixel_spacing)))
        if arr is None:
            return None
        return Embedding(arr, FrameInfo.of((int(image_shape[0]), int(image_shape[1])), pixel_spacing))

    def decode(self, embedding: Embedding, boxes: np.ndarray) -> Prediction:
        """Boxes (4,) or (N, 4) in image pixels -> Prediction with N masks. Invalid boxes raise InvalidBoxError."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        frame = embedding.frame
        valid = np.stack([validate_box(bx, frame.original_size) for bx in b])
        return self.decode_model_boxes(embedding, box_to_model(valid, frame.original_size, frame.pixel_aspect))

    def decode_model_boxes(self, embedding: Embedding, boxes_model: np.ndarray) -> Prediction:
        """Boxes (N, 4) already in the 256 model frame -> Prediction."""
        logits, iou = self.backend.decode(embedding.array, np.asarray(boxes_model, dtype=np.float32).reshape(-1, 4))
        return Prediction(logits_to_masks(logits, embedding.frame), logits, iou)
