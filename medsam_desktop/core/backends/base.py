"""The interface between the core and an inference runtime, and the names every runtime shares.

Arrays cross the interface as numpy so that a runtime without torch slots in:
``encode``: (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) float32 embeddings;
``decode``: embedding (1, 256, 64, 64) + boxes (N, 4) in the 256 model frame -> logits (N, 256, 256), iou (N,).
Nothing here imports torch or a runtime.
"""

from __future__ import annotations

import logging
import numbers
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

#: the value of ``runtime`` / ``precision`` that means "what the app runs here" (see ``loader.default_configuration``)
DEFAULT = "default"
RUNTIMES = ("torch", "openvino", "onnxruntime")
RUNTIME_TITLES = {"torch": "PyTorch", "openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
#: ``auto`` = bf16 where the CPU computes it natively, else fp32; ``int8`` = the int8 image encoder (OpenVINO only)
#: (its float layers fp32) with the decoders at ``auto``
PRECISIONS = ("auto", "fp32", "bf16", "int8")

#: OpenVINO's precision hints of the int8 configuration: the int8 encoder's float layers (depthwise, squeeze-excite)
#: in fp32, prepare and the decoders bf16 where the CPU has it natively (fp32 elsewhere). With the encoder's float
#: layers in bf16 too, the dev set's MR cases fell 1.4 DSC points below torch fp32, outside the quality gate;
#: the bf16 decoders alone cost MR 0.4 (docs/performance.md, "Default")
INT8_ENCODER_HINT, INT8_DECODER_HINT = "f32", "bf16"


class InferenceBackend(Protocol):
    """A loaded model on one runtime. ``name`` identifies model, runtime and precision (the embedding cache keys on
    it); ``fallback_reason`` is one line for the user when the loader had to run something else than asked."""

    name: str
    fallback_reason: str | None

    def encode(self, images: np.ndarray) -> np.ndarray: ...

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def check_threads(threads: int | None) -> int | None:
    """``threads`` when it is None (all cores) or an integer >= 0 (0 also means all cores), else ValueError."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0):
        raise ValueError(f"threads must be a positive whole number (0 or None: all cores), got {threads!r}")
    return threads


def check_runtime(runtime: str) -> str:
    """``runtime`` when it is one of :data:`RUNTIMES` or :data:`DEFAULT`, else ValueError."""
    if runtime != DEFAULT and runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {DEFAULT}, {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def check_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`PRECISIONS` or :data:`DEFAULT`, else ValueError."""
    if precision != DEFAULT and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {DEFAULT}, {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def backend_name(model_name: str, runtime: str, precision: str) -> str:
    """``model[+runtime][+precision]`` (torch fp32 is the bare model name), e.g. ``repvit_m0_6+openvino+int8``."""
    name = model_name if runtime == "torch" else f"{model_name}+{runtime}"
    return name if precision == "fp32" else f"{name}+{precision}"


def apply_torch_threads(threads: int) -> int:
    """Set torch's CPU threads now, without reloading the model (0: all cores); the count in effect. Only when
    torch is already loaded (never imports it): a runtime that fixes its threads when compiled (OpenVINO) is
    reloaded instead."""
    import os
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return int(torch.get_num_threads())


_blas_limit: object | None = None


def single_threaded_numpy_blas() -> None:
    """Run numpy's BLAS on one thread, once per process: the model runtime owns the cores.

    numpy's OpenBLAS and the runtime each keep a pool of busy-waiting threads; when numpy's matrix products
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


def refiner_image(image: np.ndarray | None) -> np.ndarray:
    """The click path refiner's image checked: the (256, 256, 3) uint8 model-frame slice (``preprocess_uint8``);
    ValueError when there is none or it is another array."""
    if image is None:
        raise ValueError("this click path refines with the image: pass the slice's model-frame image")
    arr = np.asarray(image)
    if arr.shape != (256, 256, 3) or arr.dtype != np.uint8:
        raise ValueError(f"the refiner's image is (256, 256, 3) uint8, not {arr.shape} {arr.dtype}")
    return arr


def refiner_input(image: np.ndarray | None, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The refiner's input from :func:`refiner_image`: (1, 3, h, w) float32 in [0, 1], as training's
    ``model_input`` makes it, of the ``window`` ``(y0, y1, x0, x1)`` (end exclusive) or of the whole frame."""
    arr = refiner_image(image)
    if window is not None:
        y0, y1, x0, x1 = window
        arr = arr[y0:y1, x0:x1]
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None], np.float32) / np.float32(255.0)


def pad_clicks(points: np.ndarray, labels: np.ndarray, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) points and (P,) labels -> the last ``slots`` of them as (1, slots, 2), (1, slots) float32, padded
    with label -1 (an unused slot)."""
    p = np.asarray(points, np.float32).reshape(-1, 2)[-slots:]
    lab = np.asarray(labels, np.float32).reshape(-1)[-slots:]
    if len(p) != len(lab):
        raise ValueError(f"{len(p)} points but {len(lab)} labels")
    out_p = np.zeros((1, slots, 2), np.float32)
    out_l = np.full((1, slots), -1.0, np.float32)
    out_p[0, : len(p)], out_l[0, : len(lab)] = p, lab
    return out_p, out_l
