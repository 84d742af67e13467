"""Candidate backends that run the network exported from torch to ONNX: ONNX Runtime and OpenVINO.

Same interface as :class:`~medsam_desktop.core.backend.TorchBackend` (numpy in, numpy out), so the core and
the app cannot tell them apart; neither runtime needs torch, only the exported files. ``export_onnx`` (needs
torch) writes ``encoder.onnx`` ((1, 3, 256, 256) -> (1, 256, 64, 64)), ``prepare.onnx`` (the decoder's
box-independent image side, :meth:`MedSAMLite.prepare_decode`: embedding (1, 256, 64, 64) -> keys (1, 4096, 256),
keys_pe_t (1, 256, 4096)) and one decoder per box count in :data:`DECODER_SIZES` (keys, keys_pe_t + boxes (K, 4)
model frame -> logits (K, 256, 256), iou (K,); ``decoder.onnx`` for one box, ``decoder_b<K>.onnx`` otherwise).
A decode call prepares its image once and splits its boxes into those sizes.
Both runtimes are optional dependencies and are imported only when such a backend is built. See
docs/performance.md for the measured comparison that decides whether one of them replaces torch as the default.

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
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ENCODER_FILE, PREPARE_FILE, DECODER_FILE = "encoder.onnx", "prepare.onnx", "decoder.onnx"
#: box counts with their own static decoder export, largest first. The decoder rewrite's branches depend on the
#: box count, so each count is its own trace. OpenVINO bf16 per box: 13.3 ms (1 box), 10.9 (2), 10.3 (4); each
#: compiled decoder holds ~100 MB of its own buffers (RSS with sizes 1 / 2,1 / 4,2,1: 257 / 355 / 471 MB), so
#: the 4-box one is not worth its memory (session 4, 2 threads, docs/performance.md)
DECODER_SIZES = (2, 1)
#: OpenVINO settings of the decoders only: without snippets (its fused subgraphs) a decoder call took 16 % less
#: time (1 box 14.0 -> 11.7 ms, 2 boxes 24.1 -> 20.2 ms; bf16 hint, 2 threads, session 6); the encoder keeps them
#: (36.3 ms with, 38.6 ms without). An OpenVINO that does not know the key compiles without it
DECODER_CONFIG: dict[str, object] = {"SNIPPETS_MODE": "DISABLE"}
IMAGE_TENSORS = ("keys", "keys_pe_t")  # prepare.onnx's outputs = the decoders' first two inputs, by name
MANIFEST_FILE = "export.json"  # written last: a folder without a valid manifest is never used
OPSET = 17
EXPORT_FORMAT = 7  # bump whenever export_onnx changes what it writes: old cached exports are then ignored
STALE_TMP_SECONDS = 24 * 3600  # temp folders of exports killed mid-way are removed after this


def exporter_version() -> str:
    """Identifies the exporter in cache folder names: our export format, the opset and the torch version."""
    import torch

    return f"onnx{EXPORT_FORMAT}-opset{OPSET}-torch{torch.__version__}"


def decoder_file(boxes: int) -> str:
    """File name of the decoder exported for ``boxes`` boxes (one of :data:`DECODER_SIZES`)."""
    return DECODER_FILE if boxes == 1 else f"decoder_b{boxes}.onnx"


def split_boxes(n: int) -> list[int]:
    """``n`` boxes as a sequence of :data:`DECODER_SIZES` chunks, largest first: 5 -> [2, 2, 1]."""
    sizes = []
    for size in DECODER_SIZES:
        k, n = divmod(n, size)
        sizes += [size] * k
    return sizes


def export_onnx(model: object, folder: Path, opset: int = OPSET) -> tuple[Path, ...]:
    """Export a :class:`~medsam_desktop.model.MedSAMLite` (fused for inference) to ``folder``: the encoder, the
    decoder's image preparation, then one decoder per size in :data:`DECODER_SIZES`."""
    import torch

    from ..model.fuse import fuse_for_inference
    from ..model.single_mask import PreparedImage

    net = fuse_for_inference(model).eval()  # type: ignore[arg-type]

    class _Prepare(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return tuple(self.net.prepare_decode(embedding))

    class _Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(
            self, keys: torch.Tensor, keys_pe_t: torch.Tensor, boxes: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            logits, iou = self.net.decode_prepared(PreparedImage(keys, keys_pe_t), boxes)
            return logits[:, 0], iou[:, 0]

    folder.mkdir(parents=True, exist_ok=True)
    enc_path = folder / ENCODER_FILE
    x = torch.zeros(1, 3, 256, 256)
    emb = torch.zeros(1, 256, 64, 64)
    paths = [enc_path, folder / PREPARE_FILE]
    with torch.inference_mode():
        torch.onnx.export(net.image_encoder, (x,), str(enc_path), input_names=["image"], output_names=["embedding"],
                          opset_version=opset, dynamo=False)
        torch.onnx.export(_Prepare(), (emb,), str(paths[1]), input_names=["embedding"],
                          output_names=list(IMAGE_TENSORS), opset_version=opset, dynamo=False)
        image = net.prepare_decode(emb)
        # static shapes, one file per box count: the traced graph is the decoder's single-mask rewrite
        # specialised to that count (its shape-dependent branches are taken at trace time)
        for size in sorted(DECODER_SIZES):
            box = torch.tensor([[10.0, 10.0, 100.0, 100.0]]).repeat(size, 1) + torch.arange(size)[:, None]
            path = folder / decoder_file(size)
            torch.onnx.export(_Decoder(), (*image, box), str(path), input_names=[*IMAGE_TENSORS, "boxes"],
                              output_names=["logits", "iou"], opset_version=opset, dynamo=False)
            paths.append(path)
    return tuple(paths)


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


class _ChunkedDecodeMixin:
    """Prepares a call's image once, then decodes its boxes in chunks of :data:`DECODER_SIZES` (each size has
    its own static export), all under the backend's lock (a prepared image may live in the runtime's own
    buffers until the next call)."""

    fallback_reason: str | None = None  # set by load_backend when it had to change what was asked for
    _lock: threading.Lock

    def _prepare(self, embedding: np.ndarray) -> tuple[Any, Any]:
        """embedding (1, 256, 64, 64) -> keys (1, 4096, 256), keys_pe_t (1, 256, 4096) (``prepare.onnx``), in
        whatever form :meth:`_decode_chunk` takes them; called with the lock held."""
        raise NotImplementedError

    def _decode_chunk(self, image: tuple[Any, Any], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """prepared image, boxes (K, 4) with K in DECODER_SIZES -> logits (K, 256, 256), iou (K,); called with
        the lock held."""
        raise NotImplementedError

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = np.ascontiguousarray(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        if not len(b):
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        outs, start = [], 0
        with self._lock:
            image = self._prepare(np.ascontiguousarray(embedding, dtype=np.float32))
            for size in split_boxes(len(b)):
                outs.append(self._decode_chunk(image, b[start : start + size]))
                start += size
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


class OnnxRuntimeBackend(_ChunkedDecodeMixin):
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
        self._prep = ort.InferenceSession(str(folder / PREPARE_FILE), opts, providers=providers)
        self._dec = {k: ort.InferenceSession(str(folder / decoder_file(k)), opts, providers=providers)
                     for k in DECODER_SIZES}
        self.name = name
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


class OpenVinoBackend(_ChunkedDecodeMixin):
    """OpenVINO CPU plugin; ``precision`` ``f32`` or ``bf16`` (its inference precision hint).

    ``encoder`` replaces the exported encoder, e.g. the shipped int8 one (:mod:`.int8_encoder`): its
    quantized convolutions run int8 whatever the hint, which then applies to the rest of it.
    The decoders are compiled without OpenVINO's "snippets" (fused subgraphs, :data:`DECODER_CONFIG`), whose
    kernels for the token -> image attentions (a few query rows against 4096 keys) made a call 16 % slower.
    The prepared image goes from ``prepare.onnx`` to the decoders as OpenVINO tensors in the inference precision
    (bf16 under the bf16 hint), never through numpy: no copies, no conversions per box chunk.
    """

    def __init__(
        self, folder: Path, name: str = "openvino", threads: int | None = None, precision: str = "f32",
        encoder: Path | None = None,
    ) -> None:
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        from .backend import single_threaded_numpy_blas

        single_threaded_numpy_blas()
        core = ov.Core()
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads

        def request(
            path: Path, extra: dict[str, object] | None = None, image_io: str = "", image_type: Any = None
        ) -> Any:
            model = core.read_model(str(path))
            if image_io:
                ppp = PrePostProcessor(model)
                for name in IMAGE_TENSORS:
                    (ppp.output(name) if image_io == "out" else ppp.input(name)).tensor().set_element_type(image_type)
                model = ppp.build()
            if extra:
                try:
                    return core.compile_model(model, "CPU", {**config, **extra}).create_infer_request()
                except RuntimeError as exc:
                    if not any(key in str(exc) for key in extra) and "Unsupported property" not in str(exc):
                        raise
                    log.info("OpenVINO does not take %s (%s); %s compiled without it", extra, exc, path.name)
            return core.compile_model(model, "CPU", config).create_infer_request()

        self._enc = request(encoder or folder / ENCODER_FILE)
        # the prepared image crosses from one compiled model to the next in the precision OpenVINO really runs
        # (a bf16 hint runs f32 on a CPU without AVX-512)
        real = self._enc.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        image_type = ov.Type.bf16 if real == ov.Type.bf16 else ov.Type.f32
        self._prep = request(folder / PREPARE_FILE, image_io="out", image_type=image_type)
        self._dec = {k: request(folder / decoder_file(k), DECODER_CONFIG, "in", image_type) for k in DECODER_SIZES}
        self.name = name if precision == "f32" else f"{name}+{precision}"
        self._lock = threading.Lock()

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            # results are copied out of OpenVINO's buffers once (np.array), never handed out as views
            return np.concatenate([
                np.array(self._enc.infer({0: x[i : i + 1]}, share_inputs=True, share_outputs=True)[0])
                for i in range(len(x))
            ])

    def _prepare(self, embedding: np.ndarray) -> tuple[Any, Any]:
        """The prepare request's own output tensors: valid until its next call (decode holds the lock)."""
        self._prep.infer({"embedding": embedding}, share_inputs=True, share_outputs=True)
        keys, keys_pe_t = IMAGE_TENSORS
        return self._prep.get_tensor(keys), self._prep.get_tensor(keys_pe_t)

    def _decode_chunk(self, image: tuple[Any, Any], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = self._dec[len(boxes)]
        for name, tensor in zip(IMAGE_TENSORS, image):
            request.set_tensor(name, tensor)
        out = request.infer({"boxes": boxes}, share_inputs=True, share_outputs=True)
        return np.array(out["logits"]), np.array(out["iou"])
