"""ONNX Runtime (CPU execution provider, full graph optimisation) on an exported network; fp32 only."""

from __future__ import annotations

import threading

import numpy as np

from .base import single_threaded_numpy_blas
from .layout import IMAGE_TENSORS, ChunkedDecoder, NetworkFiles


class OnnxRuntimeBackend(ChunkedDecoder):
    """Runs the ONNX files of :class:`~.layout.NetworkFiles`; same interface as every backend (numpy in/out)."""

    def __init__(self, files: NetworkFiles, name: str = "onnxruntime", threads: int | None = None) -> None:
        import onnxruntime as ort

        single_threaded_numpy_blas()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._enc = ort.InferenceSession(str(files.encoder), opts, providers=providers)
        self._prep = ort.InferenceSession(str(files.prepare), opts, providers=providers)
        self._dec = {k: ort.InferenceSession(str(p), opts, providers=providers) for k, p in files.decoders.items()}
        self.name = name
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            return np.concatenate([self._enc.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])

    def _prepare(self, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys, keys_pe_t = self._prep.run(None, {"embedding": embedding})
        return keys, keys_pe_t

    def _decode_chunk(self, image: tuple[np.ndarray, np.ndarray], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, iou = self._dec[len(boxes)].run(None, {**dict(zip(IMAGE_TENSORS, image)), "boxes": boxes})
        return logits, iou
