"""The torch side of :func:`~.loader.load_backend`: load the weights into torch, then run them on torch or on an
ONNX export of them (cached per checkpoint) for OpenVINO / ONNX Runtime. Imported only when torch is installed."""

from __future__ import annotations

import logging
from pathlib import Path

from ...model_files import sha256_of, weights_for
from .base import INT8_ENCODER_HINT, RUNTIME_TITLES, InferenceBackend, backend_name
from .layout import NetworkFiles
from .openvino_backend import OPENVINO_PRECISION
from .shipped import Int8EncoderUnavailable, find_int8_encoder
from .torch_backend import TorchBackend, resolve_precision

log = logging.getLogger(__name__)


def _exported_backend(
    model: object,
    weights: Path,
    model_name: str,
    threads: int | None,
    runtime: str,
    precision: str,
    int8_encoder: Path | None = None,
) -> InferenceBackend:
    """Export once (cached by checkpoint sha256) and compile for ``runtime``; OpenVINO takes ``int8_encoder``
    in place of the exported encoder (``precision`` is then the hint for everything that is not int8)."""
    from .export import cached_export

    folder = cached_export(model, sha256_of(weights), model_name)
    files = NetworkFiles.in_folder(folder, ".onnx", encoder=int8_encoder)
    base = backend_name(model_name, runtime, "int8" if int8_encoder else "fp32")
    if runtime == "openvino":
        from .openvino_backend import OpenVinoBackend

        encoder_hint = INT8_ENCODER_HINT if int8_encoder else None  # the int8 encoder's float layers in fp32
        return OpenVinoBackend(files, name=base, threads=threads, precision=OPENVINO_PRECISION[precision],
                               encoder_precision=encoder_hint)  # fmt: skip
    from .onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend(files, name=base, threads=threads)


def _runtime_importable(runtime: str) -> bool:
    """Import the runtime's package (cheap check before exporting anything)."""
    import importlib

    try:
        importlib.import_module(runtime)
    except ImportError:
        return False
    return True


def load_with_torch(
    model_name: str, weights: Path | None, threads: int | None, runtime: str, precision: str
) -> InferenceBackend:
    """``runtime`` (not ``default``) at ``precision`` (not ``default``) from the weights loaded into torch.

    ``auto`` resolves per CPU (:func:`.torch_backend.resolve_precision`). ``int8`` runs the int8 ONNX encoder of
    these weights (:func:`.shipped.find_int8_encoder`, its float layers fp32) on OpenVINO with the decoders at
    ``auto``; on another
    runtime, or without an int8 encoder made from these weights, the model runs at ``auto`` and
    ``fallback_reason`` says why. When OpenVINO / ONNX Runtime is not installed or the export / compilation
    fails, the model runs on torch at the requested precision (``auto`` for int8) with ``fallback_reason`` set.
    """
    from ...model.checkpoint import load_named_model

    precision = resolve_precision(precision)
    model = load_named_model(model_name, weights)
    title = RUNTIME_TITLES[runtime]
    note, int8_encoder = None, None
    if precision == "int8":  # the int8 encoder on OpenVINO, everything else at auto precision
        precision = resolve_precision("auto")
        shown = "fp32" if runtime == "onnxruntime" else precision
        if runtime != "openvino":
            note = f"int8 runs on OpenVINO only: {title} runs {shown}"
        else:
            try:
                int8_encoder = find_int8_encoder(weights_for(model_name, weights))
            except Int8EncoderUnavailable as exc:
                note = f"{exc}: OpenVINO runs {shown}"
    if runtime == "torch":
        backend = TorchBackend(model, name=model_name, threads=threads, precision=precision)
        if note:
            log.warning("%s", note)
        backend.fallback_reason = note
        return backend

    run_precision = precision
    if runtime == "onnxruntime" and precision != "fp32":
        note, run_precision = note or f"{title} has no {precision} on CPU: running fp32", "fp32"
    if not _runtime_importable(runtime):
        reason = f"{title} is not installed: using PyTorch"
    else:
        try:
            backend = _exported_backend(
                model, weights_for(model_name, weights), model_name, threads, runtime, run_precision, int8_encoder
            )
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
