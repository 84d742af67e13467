"""The click path on PyTorch (source installs, training, export): a ``model.click_decoder.ClickDecoder`` under
``inference_mode``, fp32; its refiner runs in the window of :mod:`.refiner_window`, as on OpenVINO. Shapes and
frames as :mod:`.clicks`."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .base import check_threads, pad_clicks, single_threaded_numpy_blas
from .refiner_window import refine_in_window


class TorchClickBackend:
    def __init__(self, decoder: object, threads: int | None = None) -> None:
        import torch

        from ...model.click_decoder import MAX_POINTS

        if check_threads(threads):
            torch.set_num_threads(threads)
        single_threaded_numpy_blas()
        self._torch = torch
        self.decoder = decoder.fuse()  # type: ignore[attr-defined]
        self.slots = MAX_POINTS
        self.needs_image = self.decoder.refiner is not None
        self.name = "clicks+torch"
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, threads: int | None = None) -> TorchClickBackend:
        from ...model.click_decoder import load_click_decoder

        return cls(load_click_decoder(path), threads)

    def decode_clicks(
        self, embedding: np.ndarray, box: np.ndarray, points: np.ndarray, labels: np.ndarray, mask_logits: np.ndarray,
        image: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, np.ndarray]:  # fmt: skip
        torch = self._torch
        p, lab = pad_clicks(points, labels, self.slots)
        args = (
            torch.from_numpy(np.ascontiguousarray(embedding, np.float32).reshape(1, 256, 64, 64)),
            torch.from_numpy(np.asarray(box, np.float32).reshape(1, 4)),
            torch.from_numpy(p),
            torch.from_numpy(lab),
            torch.from_numpy(np.ascontiguousarray(mask_logits, np.float32).reshape(1, 1, 256, 256)),
        )
        with self._lock, torch.inference_mode():
            logits, iou = self.decoder(*args)
            out = logits[0, 0].numpy().copy()
            if self.needs_image:
                shown = refine_in_window(self._refine, image, out, points, labels, self.slots)
            else:
                shown = out.copy()  # two arrays, as with a refiner: a caller may change one
        return out, float(iou[0, 0]), shown

    def _refine(self, image: np.ndarray, logits: np.ndarray, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The refiner on a window (:data:`~.refiner_window.RefinerRun`); called under the lock."""
        t = self._torch.from_numpy
        return self.decoder.refiner(t(image), t(logits), t(points), t(labels)).numpy()
