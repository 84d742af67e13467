"""Inference runtimes behind one small interface (numpy in, numpy out), and the loader that picks one.

Modules: :mod:`.base` (interface, names, checks), :mod:`.layout` (the exported network's files and chunked
decode), :mod:`.shipped` (the OpenVINO files shipped beside the weights, verified against their cards),
:mod:`.loader` (``load_backend``, the default configuration), one module per runtime (:mod:`.torch_backend`,
:mod:`.openvino_backend`, :mod:`.onnxruntime_backend`), :mod:`.export` (ONNX export, needs torch) and
:mod:`.allocator`. Importing this package imports neither torch nor a runtime.
"""

from .base import (
    DEFAULT,
    PRECISIONS,
    RUNTIME_TITLES,
    RUNTIMES,
    InferenceBackend,
    backend_name,
    check_precision,
    check_runtime,
    check_threads,
    single_threaded_numpy_blas,
)
from .loader import DEFAULT_PRECISION, DEFAULT_RUNTIME, default_configuration, describe, load_backend, runtime_installed

__all__ = [
    "DEFAULT",
    "DEFAULT_PRECISION",
    "DEFAULT_RUNTIME",
    "PRECISIONS",
    "RUNTIMES",
    "RUNTIME_TITLES",
    "InferenceBackend",
    "backend_name",
    "check_precision",
    "check_runtime",
    "check_threads",
    "default_configuration",
    "describe",
    "load_backend",
    "runtime_installed",
    "single_threaded_numpy_blas",
]
