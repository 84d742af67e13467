""":func:`load_backend`, the one entry point of the app, the CLIs and the benchmarks: model, runtime, precision in,
a backend out; and :func:`default_configuration`, what runs when nothing is asked.

The default (``runtime="default"``, ``precision="default"``) is OpenVINO on the weights' shipped files
(:mod:`.shipped`) wherever they exist and OpenVINO is installed, at the precision of this CPU class
(:data:`SHIPPED_DEFAULTS`): int8 where the CPU has VNNI (AVX-512/AMX, AVX2+VNNI), fp32 without (AVX2), the
fastest configuration within the quality gate of each class (docs/performance.md, "Default"). That path imports
no torch. Otherwise (the teacher, other weights, no OpenVINO)
it is torch at ``auto`` precision (bf16 where the CPU computes it natively). A runtime that cannot be used falls
back, and ``fallback_reason`` says why in one line.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from ...model_files import TEACHER_NAME, ModelNotAvailableError, weights_for
from .base import (
    DEFAULT,
    INT8_DECODER_HINT,
    INT8_ENCODER_HINT,
    RUNTIME_TITLES,
    InferenceBackend,
    backend_name,
    check_precision,
    check_runtime,
    check_threads,
)
from .openvino_backend import OPENVINO_PRECISION
from .shipped import ShippedFilesUnavailable, has_shipped_files, shipped_files

log = logging.getLogger(__name__)

DEFAULT_RUNTIME, DEFAULT_PRECISION = DEFAULT, DEFAULT
#: what "default" means per CPU class (:mod:`.cpu`) on the shipped files: the fastest configuration within the
#: quality gate of each class (docs/performance.md, "Default"); int8 needs VNNI
SHIPPED_DEFAULTS = {"avx512_vnni": "int8", "avx2_vnni": "int8", "avx512": "fp32", "avx2": "fp32", "other": "fp32"}
FALLBACK_DEFAULT = ("torch", "auto")


def runtime_installed(name: str) -> bool:
    """True when the package ``name`` (``torch``, ``openvino``, ``onnxruntime``) can be imported (not imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def default_configuration(model_name: str, weights: Path | None = None) -> tuple[str, str]:
    """(runtime, precision) that ``default`` means for this model here: OpenVINO at this CPU class's precision
    (:data:`SHIPPED_DEFAULTS`) when the weights have those shipped files and OpenVINO is installed, else
    :data:`FALLBACK_DEFAULT`."""
    from .cpu import cpu_class

    try:
        path = weights_for(model_name, weights)
    except ModelNotAvailableError:
        return FALLBACK_DEFAULT
    precision = SHIPPED_DEFAULTS[cpu_class()]
    if model_name != TEACHER_NAME and runtime_installed("openvino") and has_shipped_files(path, precision == "int8"):
        return "openvino", precision
    return FALLBACK_DEFAULT


def describe(backend: InferenceBackend) -> str:
    """``OpenVINO int8 (decoder bf16)`` / ``PyTorch bf16``: runtime and precision of a loaded backend, for the user."""
    parts = backend.name.split("+")
    runtime = next((RUNTIME_TITLES[p] for p in parts if p in RUNTIME_TITLES), RUNTIME_TITLES["torch"])
    precisions = [p for p in parts[1:] if p not in RUNTIME_TITLES]
    if "int8" in precisions:
        return f"{runtime} int8 (decoder {'bf16' if 'bf16' in precisions else 'fp32'})"
    return f"{runtime} {' '.join(precisions) or 'fp32'}"


def load_backend(
    model_name: str,
    weights: str | Path | None = None,
    threads: int | None = None,
    precision: str = DEFAULT_PRECISION,
    runtime: str = DEFAULT_RUNTIME,
) -> InferenceBackend:
    """The backend for a registry model name on ``runtime`` at ``precision`` (``default``: see the module).

    OpenVINO runs the shipped files of the weights when they match (no torch), else a cached ONNX export of the
    weights (torch); ``int8`` is the int8 encoder (its float layers fp32) with the decoders at ``auto``, OpenVINO
    only. ONNX Runtime
    runs fp32 only. Where torch is not installed (the packaged app) only the shipped files can run: any other
    request runs them with ``fallback_reason`` set, or raises ModelNotAvailableError when there are none.
    Unknown runtime/precision values and negative ``threads`` raise ValueError; missing or invalid weights raise
    ModelNotAvailableError / InvalidCheckpointError.
    """
    check_runtime(runtime)
    check_precision(precision)
    check_threads(threads)
    path = Path(weights) if weights else None
    if runtime == DEFAULT:
        runtime, default_precision = default_configuration(model_name, path)
        precision = default_precision if precision == DEFAULT else precision
    if precision == DEFAULT:
        from .cpu import cpu_class

        precision = SHIPPED_DEFAULTS[cpu_class()] if runtime == "openvino" else "auto"
    shipped_reason, damaged = None, False
    if runtime == "openvino" and model_name != TEACHER_NAME and runtime_installed("openvino"):
        files_for = weights_for(model_name, path)
        try:
            return _shipped_backend(model_name, files_for, threads, precision)
        except ShippedFilesUnavailable as exc:
            shipped_reason = str(exc)
            damaged = has_shipped_files(files_for, int8=precision == "int8")  # present, but refused
            log.log(logging.WARNING if damaged else logging.INFO, "%s: using an export of the weights", exc)
    if not runtime_installed("torch"):
        return _without_torch(model_name, path, threads, runtime, precision, shipped_reason)
    from .torch_loader import load_with_torch

    backend = load_with_torch(model_name, path, threads, runtime, precision)
    if damaged:  # the user should know the shipped files were refused
        also = f"; {backend.fallback_reason}" if backend.fallback_reason else ""
        backend.fallback_reason = f"{shipped_reason}: running an export of the weights{also}"
    return backend


def _shipped_backend(model_name: str, weights: Path, threads: int | None, precision: str) -> InferenceBackend:
    """OpenVINO on the verified shipped files: ``int8`` -> the int8 encoder with the hints of
    :data:`INT8_ENCODER_HINT` / :data:`INT8_DECODER_HINT`; ``fp32``/``bf16``/``auto`` -> the fp32 encoder with that
    hint everywhere (``auto``: bf16 where the CPU has it natively)."""
    from .openvino_backend import OpenVinoBackend

    int8 = precision == "int8"
    files = shipped_files(weights, int8=int8)
    name = backend_name(model_name, "openvino", "int8" if int8 else "fp32")
    if int8:
        return OpenVinoBackend(files, name=name, threads=threads, precision=INT8_DECODER_HINT,
                               encoder_precision=INT8_ENCODER_HINT)  # fmt: skip
    hint = "bf16" if precision == "auto" else OPENVINO_PRECISION[precision]
    return OpenVinoBackend(files, name=name, threads=threads, precision=hint)


def _without_torch(
    model_name: str, weights: Path | None, threads: int | None, runtime: str, precision: str, why: str | None
) -> InferenceBackend:
    """No torch here: the shipped default, with a one-line reason, or ModelNotAvailableError."""
    asked = f"{RUNTIME_TITLES[runtime]} {precision}"
    if why is None:
        why = (
            "PyTorch is not installed"
            if runtime == "torch"
            else (f"{RUNTIME_TITLES[runtime]} needs PyTorch to export the weights, and PyTorch is not installed")
        )
    if model_name == TEACHER_NAME or not runtime_installed("openvino"):
        raise ModelNotAvailableError(f"cannot run {model_name} ({asked}): {why}")
    path = weights_for(model_name, weights)
    for fallback in dict.fromkeys((default_configuration(model_name, weights)[1], "int8", "fp32")):
        if fallback == precision:
            continue
        try:
            backend = _shipped_backend(model_name, path, threads, fallback)
        except ShippedFilesUnavailable:
            continue
        backend.fallback_reason = f"{why}: running OpenVINO {fallback} instead of {asked}"
        log.warning("%s", backend.fallback_reason)
        return backend
    raise ModelNotAvailableError(f"cannot run {model_name} ({asked}): {why}")
