"""Test helpers shared by the engine tests: a fast fake inference backend and side-effect pickles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

#: model-frame boxes (7, 4) of assorted sizes: decoded in chunks of every exported size (2, 2, 2, 1)
MODEL_FRAME_BOXES = np.array(
    [[10, 20, 120, 140], [50, 50, 250, 200], [0, 0, 30, 30], [100, 30, 200, 90], [5, 150, 90, 250], [60, 60, 70, 75],
     [128, 128, 255, 255]],
    dtype=np.float32,
)  # fmt: skip


class BoxBackend:
    """Instant backend: the embedding is zeros; a decoded mask is exactly the prompt box (model frame).
    ``prompts`` records every model-frame box decoded."""

    name = "fake-box"

    def __init__(self) -> None:
        self.encodes = 0
        self.decodes = 0
        self.prompts: list[np.ndarray] = []

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.encodes += 1
        return np.zeros((images.shape[0], 256, 64, 64), np.float32)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.decodes += 1
        boxes = np.asarray(boxes).reshape(-1, 4)
        self.prompts.extend(np.array(bx, dtype=np.float64) for bx in boxes)
        logits = np.full((len(boxes), 256, 256), -10.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            logits[i, int(np.ceil(y0)) : int(np.floor(y1)) + 1, int(np.ceil(x0)) : int(np.floor(x1)) + 1] = 10.0
        return logits, np.ones(len(boxes), np.float32)


class SideEffect:
    """Unpickling this object creates the folder ``flag`` (a visible side effect that must never happen)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> tuple[object, ...]:
        return (os.mkdir, (str(self.flag),))


def model_args(weights: Path) -> list[str]:
    """CLI arguments running the random-weights student (fast, one thread, quiet)."""
    return ["--model", "repvit_m0_6", "--weights", str(weights), "--threads", "1", "-q"]


class SquareClickBackend:
    """Instant click path: the previous mask (logits > 0) with a 9x9 square added around each positive point and
    removed around each negative one (model frame). ``calls`` counts decodes; ``slots`` as the real networks. With
    ``needs_image`` it asks for the slice's model-frame image, as a path with a refiner does (``images``: those
    received), and shows the mask 10 model pixels smaller than its logits say."""

    name = "fake-clicks"
    slots = 8

    def __init__(self, needs_image: bool = False) -> None:
        self.calls = 0
        self.needs_image = needs_image
        self.images: list = []  # the images, mask prompts and outputs of every call
        self.prompts: list = []
        self.outputs: list = []

    def decode_clicks(self, embedding, box, points, labels, mask_logits, image=None):
        self.calls += 1
        self.prompts.append(np.array(mask_logits))
        if self.needs_image:
            if image is None:
                raise ValueError("no image")
            self.images.append(image)
        mask = np.asarray(mask_logits).reshape(256, 256) > 0
        for (x, y), lab in zip(np.asarray(points).reshape(-1, 2), np.asarray(labels).reshape(-1)):
            xi, yi = int(np.rint(x)), int(np.rint(y))
            mask[max(yi - 4, 0) : yi + 5, max(xi - 4, 0) : xi + 5] = lab > 0.5
        logits = np.where(mask, 10.0, -10.0).astype(np.float32)
        if not self.needs_image:
            return logits, 1.0, logits
        shown = np.where(ndimage.binary_erosion(mask, iterations=10), 10.0, -10.0).astype(np.float32)
        self.outputs.append((logits, 1.0, shown))
        return logits, 1.0, shown
