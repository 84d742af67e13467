"""OpenVINO (CPU plugin) on an exported network: the shipped IR files (no torch needed) or a cached ONNX export.

``precision`` is OpenVINO's inference precision hint, ``f32`` or ``bf16``; a bf16 hint runs f32 on a CPU without
native bf16, and :attr:`OpenVinoBackend.precision` is what the decoders really run. The encoder may have its own
hint (``encoder_precision``: the int8 encoder's float layers run f32, see ``base.INT8_ENCODER_HINT``). An int8
encoder's quantized
convolutions run int8 whatever the hint, which then applies to the rest of it. The decoders are compiled without
OpenVINO's "snippets" (fused subgraphs, :data:`DECODER_CONFIG`), whose kernels for the token -> image attentions
(a few query rows against 4096 keys) made a call 16 % slower. The prepared image goes from ``prepare`` to the
decoders as OpenVINO tensors in the real inference precision, never through numpy. Compiled models are cached in
the user cache folder (:func:`model_cache_dir`), so a second launch does not compile again.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ...text import exception_line
from .base import single_threaded_numpy_blas
from .layout import IMAGE_TENSORS, ChunkedDecoder, NetworkFiles

log = logging.getLogger(__name__)

#: our precision names -> OpenVINO's INFERENCE_PRECISION_HINT
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16"}
#: OpenVINO settings of the decoders only: without snippets (its fused subgraphs) a decoder call took 16 % less
#: time (1 box 14.0 -> 11.7 ms, 2 boxes 24.1 -> 20.2 ms; bf16 hint, 2 threads, session 6); the encoder keeps them
#: (36.3 ms with, 38.6 ms without). An OpenVINO that does not know the key compiles without it
DECODER_CONFIG: dict[str, object] = {"SNIPPETS_MODE": "DISABLE"}


#: oneDNN ISA caps (``ONEDNN_MAX_CPU_ISA``) that include native bf16; a lower cap (AVX2, AVX2_VNNI, AVX512_CORE, ...)
#: emulates a CPU without it
_BF16_CAPS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL", "DEFAULT")


def native_bf16(core: Any) -> bool:
    """True when OpenVINO can run bf16 natively here. Its own check reads the CPU and ignores an
    ``ONEDNN_MAX_CPU_ISA`` cap, under which a bf16 hint then fails to compile: the cap is honoured here."""
    import os

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and not cap.startswith(_BF16_CAPS):
        return False
    try:
        return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return False


def model_cache_dir() -> Path | None:
    """``<user cache>/openvino-cache/<OpenVINO version>-<ISA cap>`` (created), or None when it cannot be created
    (then nothing is cached). A compiled blob is specific to the instruction set it was compiled for, and OpenVINO's
    own cache key does not include an ``ONEDNN_MAX_CPU_ISA`` cap, so each cap gets its own folder."""
    import os

    import openvino as ov

    from ...paths import user_cache_dir

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native").lower()
    version = ov.__version__.split("-")[0]
    folder = user_cache_dir() / "openvino-cache" / f"{version}-{isa}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.info("OpenVINO model cache disabled (%s)", exc)
        return None
    return folder


class OpenVinoBackend(ChunkedDecoder):
    """Runs :class:`~.layout.NetworkFiles` (IR ``.xml`` or ``.onnx``) on OpenVINO's CPU plugin."""

    def __init__(
        self,
        files: NetworkFiles,
        name: str = "openvino",
        threads: int | None = None,
        precision: str = "f32",
        cache: bool = True,
        encoder_precision: str | None = None,
    ) -> None:
        """``precision``: the hint of ``prepare`` and the decoders (and of the encoder unless ``encoder_precision``
        is given). ``name`` gains ``+bf16`` when the decoders really run bf16."""
        import openvino as ov

        single_threaded_numpy_blas()
        core = ov.Core()
        if "bf16" in (precision, encoder_precision) and not native_bf16(core):
            precision = "f32" if precision == "bf16" else precision
            encoder_precision = "f32" if encoder_precision == "bf16" else encoder_precision
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        encoder_config = {**config, "INFERENCE_PRECISION_HINT": encoder_precision or precision}
        cache_dir = model_cache_dir() if cache else None
        try:
            self._compile(core, files, config, encoder_config, cache_dir)
        except RuntimeError as exc:
            if cache_dir is None:
                raise
            # a cached blob that no longer fits (another OpenVINO build, a damaged file): compile afresh
            log.warning("OpenVINO's model cache could not be used (%s): compiling without it",
                        exception_line(exc, 200))  # fmt: skip
            self._compile(ov.Core(), files, config, encoder_config, None)
        self.name = name if self.precision == "f32" else f"{name}+{self.precision}"
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()

    def _compile(
        self,
        core: Any,
        files: NetworkFiles,
        config: dict[str, object],
        encoder_config: dict[str, object],
        cache_dir: Path | None,
    ) -> None:
        """Compile every network of ``files`` on ``core`` (with its model cache in ``cache_dir`` when given)."""
        import openvino as ov

        if cache_dir is not None:
            core.set_property({"CACHE_DIR": str(cache_dir)})

        def compile_(path: Path, extra: dict[str, object] | None = None, image_io: str = "", image_type: Any = None,
                     config: dict[str, object] = config) -> Any:  # fmt: skip
            model: Any = str(path)  # compiled from the path: a cached blob is used without reading the model
            if image_io and image_type != ov.Type.f32:
                from openvino.preprocess import PrePostProcessor

                ppp = PrePostProcessor(core.read_model(str(path)))
                for name in IMAGE_TENSORS:
                    (ppp.output(name) if image_io == "out" else ppp.input(name)).tensor().set_element_type(image_type)
                model = ppp.build()
            if extra:
                try:
                    return core.compile_model(model, "CPU", {**config, **extra}).create_infer_request()
                except RuntimeError as exc:
                    if not any(key in str(exc) for key in extra) and "Unsupported property" not in str(exc):
                        raise
                    log.info("OpenVINO does not take %s (%s); %s compiled without it", extra, exc, Path(path).name)
            return core.compile_model(model, "CPU", config).create_infer_request()

        self._enc = compile_(files.encoder, config=encoder_config)
        # the prepared image crosses from one compiled model to the next in the precision OpenVINO really runs
        # (a bf16 hint runs f32 on a CPU without native bf16): prepare is compiled as it is first, to ask
        self._prep = compile_(files.prepare)
        real = self._prep.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        image_type = ov.Type.bf16 if real == ov.Type.bf16 else ov.Type.f32
        self.precision = "bf16" if image_type == ov.Type.bf16 else "f32"
        if image_type != ov.Type.f32:
            self._prep = compile_(files.prepare, image_io="out", image_type=image_type)
        self._dec = {k: compile_(p, DECODER_CONFIG, "in", image_type) for k, p in files.decoders.items()}

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            # results are copied out of OpenVINO's buffers once (np.array), never handed out as views
            return np.concatenate(
                [
                    np.array(self._enc.infer({0: x[i : i + 1]}, share_inputs=True, share_outputs=True)[0])
                    for i in range(len(x))
                ]
            )

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
