"""Candidate backends that run the network exported from torch to ONNX: ONNX Runtime and OpenVINO.

Same interface as :class:`~medsam_desktop.core.backend.TorchBackend` (numpy in, numpy out), so the core and
the app cannot tell them apart; neither runtime needs torch, only the exported files. ``export_onnx`` (needs
torch) writes ``encoder.onnx`` ((1, 3, 256, 256) -> (1, 256, 64, 64)) and ``decoder.onnx`` (embedding
(1, 256, 64, 64) + one box (1, 4) model frame -> logits (1, 256, 256), iou (1,); the backends loop over
boxes). Both runtimes are optional
dependencies and are imported only when such a backend is built. See docs/performance.md for the measured
comparison that decides whether one of them replaces torch as the default.

:func:`cached_export` keeps one export per (checkpoint sha256, architecture, exporter version) in the user
cache folder, written atomically (see docs/engine.md, "Runtimes").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"
MANIFEST_FILE = "export.json"  # written last: a folder without a valid manifest is never used
OPSET = 17
EXPORT_FORMAT = 2  # bump whenever export_onnx changes what it writes: old cached exports are then ignored
STALE_TMP_SECONDS = 24 * 3600  # temp folders of exports killed mid-way are removed after this


def exporter_version() -> str:
    """Identifies the exporter in cache folder names: our export format, the opset and the torch version."""
    import torch

    return f"onnx{EXPORT_FORMAT}-opset{OPSET}-torch{torch.__version__}"


def export_onnx(model: object, folder: Path, opset: int = OPSET) -> tuple[Path, Path]:
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
        # one box, static shapes: the traced graph is the decoder's single-mask rewrite specialised to one box
        # (its shape-dependent branches are taken at trace time), and both runtimes ran one box fastest
        torch.onnx.export(_Decoder(), (emb, box), str(dec_path), input_names=["embedding", "boxes"],
                          output_names=["logits", "iou"], opset_version=opset, dynamo=False)
    return enc_path, dec_path


def exports_root() -> Path:
    """``<user cache>/exported``: one subfolder per cached export."""
    from ..paths import user_cache_dir

    return user_cache_dir() / "exported"


def export_key(checkpoint_sha256: str, arch: str) -> str:
    """Cache folder name: first 16 hex of the checkpoint's sha256, the architecture, the exporter version."""
    return f"{checkpoint_sha256[:16]}-{arch}-{exporter_version()}"


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def is_complete_export(folder: Path) -> bool:
    """True when ``folder`` holds a finished export: the manifest exists and every file has its recorded size."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        files = manifest["files"]
        return bool(files) and all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remove_stale_temps(root: Path) -> None:
    """Delete temp folders left by exports that were killed (older than ``STALE_TMP_SECONDS``)."""
    now = time.time()
    for tmp in root.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)


def cached_export(model: object, checkpoint_sha256: str, arch: str, root: Path | None = None) -> Path:
    """The folder of ``model`` exported to ONNX, exporting it only when no finished export is cached.

    The export is written into a fresh temp folder beside the final one, the manifest last, then renamed into
    place in one step: a crash or an exception mid-export never leaves a folder that passes
    :func:`is_complete_export`, and two processes exporting at once both end up with one complete folder
    (the loser of the rename discards its copy).
    """
    root = Path(root) if root is not None else exports_root()
    final = root / export_key(checkpoint_sha256, arch)
    if is_complete_export(final):
        log.debug("reusing exported model %s", final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        log.info("exporting %s to ONNX (once per checkpoint) in %s", arch, final)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # tracer chatter about shape-dependent branches: harmless here
            warnings.simplefilter("ignore")
            paths = export_onnx(model, tmp)
        files = {}
        for path in paths:
            _fsync(path)
            files[path.name] = path.stat().st_size
        manifest = {"arch": arch, "checkpoint_sha256": checkpoint_sha256, "exporter": exporter_version(),
                    "files": files}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
        _fsync(tmp / MANIFEST_FILE)
        if final.exists() and not is_complete_export(final):  # damaged leftover: move it out of the way
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
            with contextlib.suppress(OSError):  # someone else moved or replaced it meanwhile
                os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete_export(final):  # not a lost race with another exporter: a real failure
                raise
            log.debug("another process finished the export of %s first", final.name)
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported %s in %.1f s", arch, time.perf_counter() - t0)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class _OneBoxDecodeMixin:
    """Decodes box by box (the exported decoder takes one box): both runtimes ran one box faster than a
    dynamic batch on a 2-core CPU."""

    fallback_reason: str | None = None  # set by load_backend when it had to change what was asked for

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

        from .backend import single_threaded_numpy_blas

        single_threaded_numpy_blas()
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

        from .backend import single_threaded_numpy_blas

        single_threaded_numpy_blas()
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
