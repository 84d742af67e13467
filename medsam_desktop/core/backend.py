"""Inference backends: the small interface between the core and a runtime (torch, OpenVINO, ONNX Runtime).

Arrays cross the interface as numpy so a backend without torch can slot in:
``encode``: (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32 embeddings;
``decode``: embedding (1, 256, 64, 64) + boxes (N, 4) in the model frame -> logits (N, 256, 256), iou (N,).

:func:`load_backend` is the one entry point of the CLIs and the app: model name, runtime and precision in,
a backend out (falling back to torch, with ``fallback_reason`` set, when the runtime cannot be used).
"""

from __future__ import annotations

import importlib
import logging
import numbers
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .allocator import tune_malloc_for_inference

log = logging.getLogger(__name__)

#: boxes per decoder call: per box the transformer carries 4 MB of image tokens in fp32; 4 boxes keep every
#: tensor under glibc's 32 MB mmap ceiling (see core/allocator.py) and were fastest per box (docs/performance.md)
DECODE_CHUNK = 4
#: ``int8`` is the shipped int8 encoder on OpenVINO (core/int8_encoder.py); other runtimes run ``auto`` instead
PRECISIONS = ("auto", "fp32", "bf16", "int8")
RUNTIMES = ("torch", "openvino", "onnxruntime")
RUNTIME_TITLES = {"torch": "PyTorch", "openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
#: the defaults of the CLIs and the app (one place to change them)
DEFAULT_RUNTIME = "torch"
# bf16 where the CPU computes it natively: 1.52x faster end to end on the dev set with DSC -0.00 points, within
# issue #6's 0.2-point rule; no other runtime is 1.3x faster than torch (OpenVINO bf16 1.06x, masks IoU 0.986),
# so torch stays the default runtime (docs/performance.md).
DEFAULT_PRECISION = "auto"


_blas_limit: object | None = None


def single_threaded_numpy_blas() -> None:
    """Run numpy's BLAS on one thread, once per process: the model runtime owns the cores.

    numpy's OpenBLAS and torch's OpenMP each keep a pool of busy-waiting threads; when numpy's matrix products
    (resizing a slice, upsampling the mask) follow a model call, the two pools fight over the cores. Measured
    on a 2-core CPU: box -> mask with a cached embedding 148 ms with both pools, 69 ms with single-threaded
    BLAS (docs/performance.md). numpy's products here are small (~0.1 GMAC), so one thread loses nothing.
    """
    global _blas_limit
    if _blas_limit is not None:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it only speed suffers
        log.debug("threadpoolctl not installed: numpy BLAS keeps its default threads")
        _blas_limit = False
        return
    _blas_limit = threadpool_limits(limits=1, user_api="blas")


def native_bf16_available() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16/AMX): elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private probe; absent means "do not rely on it"
        return False


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where the CPU has native bf16, else ``fp32``; other values pass through checked.

    ``int8`` passes through: only :func:`load_backend` knows which runtime can run it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16_available() else "fp32"
    return precision


class InferenceBackend(Protocol):
    name: str  # identifies model, runtime and precision: the embedding cache keys on it

    def encode(self, images: np.ndarray) -> np.ndarray: ...

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBackend:
    """Runs a :class:`~medsam_desktop.model.MedSAMLite` with fused blocks under ``inference_mode``.

    ``precision``: ``fp32``, ``bf16`` (autocast; weights stay fp32, outputs come back fp32) or ``auto``
    (see :func:`resolve_precision`). ``name`` carries a ``+bf16`` suffix in bf16, so cached embeddings of the
    two precisions never mix.
    """

    def __init__(self, model: object, name: str = "torch", threads: int | None = None, precision: str = "fp32") -> None:
        import torch

        from ..model.fuse import fuse_for_inference

        self.precision = resolve_precision(precision)
        if self.precision == "int8":
            raise ValueError("PyTorch has no int8 path here: int8 runs on OpenVINO (load_backend falls back)")
        self._torch = torch
        if check_threads(threads):
            torch.set_num_threads(threads)
        single_threaded_numpy_blas()
        tune_malloc_for_inference()
        self.model = fuse_for_inference(model)  # type: ignore[arg-type]
        self.model.image_encoder.to(memory_format=torch.channels_last)
        self.name = name if self.precision == "fp32" else f"{name}+{self.precision}"
        self._lock = threading.Lock()  # one forward at a time: torch already uses every thread
        self.fallback_reason: str | None = None  # set by load_backend when another runtime was asked for

    def _autocast(self) -> Any:  # a torch autocast context manager
        return self._torch.autocast("cpu", dtype=self._torch.bfloat16, enabled=self.precision == "bf16")

    def encode(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        with self._lock, torch.inference_mode(), self._autocast():
            out = self.model.encode(x.contiguous(memory_format=torch.channels_last))
        return out.float().contiguous().numpy()

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes are decoded in chunks of ``DECODE_CHUNK`` (after the first layer each box carries its own
        copy of the 64x64x256 image tokens through the two-way transformer); the image side that no box changes
        is prepared once per call."""
        torch = self._torch
        emb = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
        b = torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        if not len(b):  # as the exported runtimes: no boxes, no masks
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        logits, ious = [], []
        model = self.model
        # SAM's decoder as written when the rewrite is switched off (benchmarks/decoder_rewrite.py compares them)
        rewrite = model.mask_decoder.single_mask_rewrite
        with self._lock, torch.inference_mode(), self._autocast():
            image = model.prepare_decode(emb) if rewrite else None
            for start in range(0, len(b), DECODE_CHUNK):
                chunk = b[start : start + DECODE_CHUNK]
                lg, iou = model.decode(emb, chunk) if image is None else model.decode_prepared(image, chunk)
                logits.append(lg[:, 0].float().numpy())
                ious.append(iou[:, 0].float().numpy())
        return np.concatenate(logits), np.concatenate(ious)


def check_threads(threads: int | None) -> int | None:
    """``threads`` when it is None (all cores) or an integer >= 0 (0 also means all cores), else ValueError."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0):
        raise ValueError(f"threads must be a positive whole number (0 or None: all cores), got {threads!r}")
    return threads


def check_runtime(runtime: str) -> str:
    """``runtime`` when it is one of :data:`RUNTIMES`, else ValueError."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def backend_name(model_name: str, runtime: str, precision: str) -> str:
    """``model[+runtime][+bf16]`` (torch fp32 is the bare model name), e.g. ``repvit_m0_6+openvino+bf16``."""
    name = model_name if runtime == "torch" else f"{model_name}+{runtime}"
    return name if precision == "fp32" else f"{name}+{precision}"


def _checkpoint_file(model_name: str, weights: Path | None) -> Path:
    """The weights file ``load_named_model`` read for this name (the export cache is keyed by its sha256)."""
    from ..model.checkpoint import student_checkpoint_path, teacher_checkpoint_path

    path = weights or (teacher_checkpoint_path() if model_name == "litemedsam" else student_checkpoint_path())
    if path is None:
        raise FileNotFoundError(f"no weights file for {model_name}")
    return path


OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}  # our names -> OpenVINO's INFERENCE_PRECISION_HINT


def _exported_backend(
    model: object, model_name: str, weights: Path | None, threads: int | None, runtime: str, precision: str,
    int8_encoder: Path | None = None,
) -> InferenceBackend:
    """Export once (cached by checkpoint sha256) and compile for ``runtime``; OpenVINO takes ``int8_encoder``
    in place of the exported encoder (``precision`` is then the hint for everything that is not int8)."""
    from ..model.checkpoint import sha256_of
    from . import exported_backends as eb

    folder = eb.cached_export(model, sha256_of(_checkpoint_file(model_name, weights)), model_name)
    base = backend_name(model_name, runtime, "int8" if int8_encoder else "fp32")
    if runtime == "openvino":
        return eb.OpenVinoBackend(folder, name=base, threads=threads, precision=OPENVINO_PRECISION[precision],
                                  encoder=int8_encoder)
    return eb.OnnxRuntimeBackend(folder, name=base, threads=threads)


def _find_int8_encoder(model_name: str, weights: Path | None) -> tuple[Path | None, str | None]:
    """(the verified int8 encoder for these weights, None) or (None, why there is none)."""
    from .int8_encoder import Int8EncoderUnavailable, find_int8_encoder

    try:
        return find_int8_encoder(_checkpoint_file(model_name, weights)), None
    except (Int8EncoderUnavailable, FileNotFoundError) as exc:
        return None, str(exc)


def _runtime_installed(runtime: str) -> bool:
    """Import the runtime's package (cheap check before exporting anything)."""
    try:
        importlib.import_module(runtime)
    except ImportError:
        return False
    return True


def load_backend(
    model_name: str,
    weights: str | Path | None = None,
    threads: int | None = None,
    precision: str = DEFAULT_PRECISION,
    runtime: str = DEFAULT_RUNTIME,
) -> InferenceBackend:
    """The backend for a registry model name (see ``model.load_named_model``) on ``runtime`` at ``precision``.

    ``auto`` precision resolves per CPU (:func:`resolve_precision`). ONNX Runtime runs fp32 only: a bf16
    request runs fp32 and says so in ``fallback_reason``. ``int8`` runs the shipped int8 encoder
    (:mod:`.int8_encoder`) on OpenVINO with everything else at ``auto``; on another runtime, or without an int8
    encoder made from these weights, the model runs at ``auto`` and ``fallback_reason`` says why. When
    OpenVINO / ONNX Runtime is not installed or the export / compilation fails, the model runs on torch at the
    requested precision (``auto`` for int8), a WARNING is logged and ``fallback_reason`` (one line for the
    user) is set; otherwise ``fallback_reason`` is None. Unknown runtime/precision values and negative
    ``threads`` raise ValueError; missing or invalid weights raise as ``load_named_model`` does.
    """
    from ..model.checkpoint import load_named_model

    check_runtime(runtime)
    check_threads(threads)
    precision = resolve_precision(precision)
    path = Path(weights) if weights else None
    model = load_named_model(model_name, path)
    title = RUNTIME_TITLES[runtime]
    note, int8_encoder = None, None
    if precision == "int8":  # the int8 encoder on OpenVINO, everything else at auto precision
        precision = resolve_precision("auto")
        shown = "fp32" if runtime == "onnxruntime" else precision
        if runtime != "openvino":
            note = f"int8 runs on OpenVINO only: {title} runs {shown}"
        else:
            int8_encoder, why = _find_int8_encoder(model_name, path)
            note = f"{why}: OpenVINO runs {shown}" if why else None
    if runtime == "torch":
        backend = TorchBackend(model, name=model_name, threads=threads, precision=precision)
        if note:
            log.warning("%s", note)
        backend.fallback_reason = note
        return backend

    run_precision = precision
    if runtime == "onnxruntime" and precision != "fp32":
        note, run_precision = note or f"{title} has no {precision} on CPU: running fp32", "fp32"
    if not _runtime_installed(runtime):
        reason = f"{title} is not installed: using PyTorch"
    else:
        try:
            backend = _exported_backend(model, model_name, path, threads, runtime, run_precision, int8_encoder)
        except Exception as exc:  # export or compilation failed: torch still works
            log.debug("%s backend failed", title, exc_info=True)
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            reason = f"{title} failed ({exc.__class__.__name__}{': ' + detail if detail else ''}): using PyTorch"
        else:
            if note:
                log.warning("%s", note)
            backend.fallback_reason = note
            return backend
    log.warning("%s", reason)
    torch_backend = TorchBackend(model, name=model_name, threads=threads, precision=precision)  # as requested
    torch_backend.fallback_reason = reason
    return torch_backend
