"""Candidate backends that run the network exported from torch to ONNX: ONNX Runtime and OpenVINO.

Same interface as :class:`~medsam_desktop.core.backend.TorchBackend` (numpy in, numpy out), so the core and
the app cannot tell them apart; neither runtime needs torch, only the exported files. ``export_onnx`` (needs
torch) writes ``encoder.onnx`` ((1, 3, 256, 256) -> (1, 256, 64, 64)) and ``decoder.onnx`` (embedding
(1, 256, 64, 64) + boxes (N, 4) model frame -> logits (N, 256, 256), iou (N,)). Both runtimes are optional
dependencies and are imported only when such a backend is built. See docs/performance.md for the measured
comparison that decides whether one of them replaces torch as the default.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"


def export_onnx(model: object, folder: Path, opset: int = 17) -> tuple[Path, Path]:
    """Export a :class:`~medsam_desktop.model.MedSAMLite` (fused for inference) to ``folder``."""
    import torch

    from ..model.fuse import fuse_for_inference

    net = fuse_for_inference(model).eval()  # type: ignore[arg-type]

    class _Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits, iou = self.net.decode(embedding, boxes)
            return logits[:, 0], iou[:, 0]

    folder.mkdir(parents=True, exist_ok=True)
    enc_path, dec_path = folder / ENCODER_FILE, folder / DECODER_FILE
    x = torch.zeros(1, 3, 256, 256)
    emb = torch.zeros(1, 256, 64, 64)
    box = torch.tensor([[10.0, 10.0, 100.0, 100.0]])
    with torch.inference_mode():
        torch.onnx.export(net.image_encoder, (x,), str(enc_path), input_names=["image"], output_names=["embedding"],
                          opset_version=opset, dynamo=False)
        torch.onnx.export(_Decoder(), (emb, box), str(dec_path), input_names=["embedding", "boxes"],
                          output_names=["logits", "iou"], opset_version=opset, dynamo=False,
                          dynamic_axes={"boxes": {0: "n"}, "logits": {0: "n"}, "iou": {0: "n"}})
    return enc_path, dec_path


class _OneBoxDecodeMixin:
    """Decodes box by box: both runtimes ran one box faster than a dynamic batch on a 2-core CPU."""

    def _decode_one(self, embedding: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb = np.ascontiguousarray(embedding, dtype=np.float32)
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        outs = [self._decode_one(emb, b[i : i + 1]) for i in range(len(b))]
        if not outs:
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


class OnnxRuntimeBackend(_OneBoxDecodeMixin):
    """ONNX Runtime (CPU execution provider, full graph optimisation)."""

    def __init__(self, folder: Path, name: str = "onnxruntime", threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._enc = ort.InferenceSession(str(folder / ENCODER_FILE), opts, providers=providers)
        self._dec = ort.InferenceSession(str(folder / DECODER_FILE), opts, providers=providers)
        self.name = name
        self._lock = threading.Lock()

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            return np.concatenate([self._enc.run(None, {"image": x[i : i + 1]})[0] for i in range(len(x))])

    def _decode_one(self, embedding: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            logits, iou = self._dec.run(None, {"embedding": embedding, "boxes": box})
        return logits, iou


class OpenVinoBackend(_OneBoxDecodeMixin):
    """OpenVINO CPU plugin; ``precision`` ``f32`` or ``bf16`` (its inference precision hint)."""

    def __init__(
        self, folder: Path, name: str = "openvino", threads: int | None = None, precision: str = "f32"
    ) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        enc, dec = (core.compile_model(core.read_model(str(folder / f)), "CPU", config)
                    for f in (ENCODER_FILE, DECODER_FILE))
        self._enc, self._dec = enc.create_infer_request(), dec.create_infer_request()
        self.name = name if precision == "f32" else f"{name}+{precision}"
        self._lock = threading.Lock()

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            return np.concatenate([np.array(self._enc.infer({0: x[i : i + 1]})[0]) for i in range(len(x))])

    def _decode_one(self, embedding: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            out = self._dec.infer({0: embedding, 1: box})
        return np.array(out[0]), np.array(out[1])
