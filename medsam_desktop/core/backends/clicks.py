"""The click path's runtime: box + clicks + the previous mask -> one mask, loaded when the first click comes.

Its weights are separate from the box-only decoder's (``models/x.clicks.pt``, card naming the student's sha256;
the shipped OpenVINO IR ``models/x.openvino/clicks.xml`` and, for a path with a pixel refiner, ``refiner.xml``
(any window size), cards naming the same), so a box without clicks is decoded exactly as before. Frames: the 256
model frame (``model.click_decoder``). ``decode_clicks``: embedding (1, 256, 64, 64), box (4,), points (P, 2) as
(x, y), labels (P,) 1 positive / 0 negative, mask_logits (256, 256) and, for a path with a pixel refiner
(``needs_image``), the slice's (256, 256, 3) uint8 model-frame image -> logits (256, 256) (the decoder's own: the
next click's mask prompt), iou, and the shown logits (256, 256): the refiner's redrawing of the mask (in a window
around the mask and the clicks, :mod:`.refiner_window`), or the logits themselves for a path without a refiner.
The networks take a fixed number of point slots (``slots``): the last ``slots`` clicks are given, the rest padded
with label -1, as in training. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from ...model_files import InvalidCheckpointError, card_field, card_path, sha256_of, tied_to, weights_sha256
from ...text import exception_line
from .base import INT8_DECODER_HINT, pad_clicks, single_threaded_numpy_blas
from .refiner_window import refine_in_window
from .shipped import shipped_network, verify_network

log = logging.getLogger(__name__)

CLICKS_STEM = "clicks"
#: the shipped refiner network beside ``clicks.xml`` (a path with a pixel refiner), named in the click network's
#: card by the sha256 of its graph (``- **refiner sha256**: ...``) and of its weights (``refiner bin sha256``; the
#: cards of session 16 named the graph only, the shipped one names both since session 17), so the two are shipped,
#: and refused, as a pair
REFINER_STEM = "refiner"
REFINER_LABEL = "refiner sha256"
REFINER_BIN_LABEL = "refiner bin sha256"
#: the click network's inputs (an IR of another layout, e.g. session 15's with the refiner inside, is refused)
CLICK_INPUTS = frozenset({"embedding", "boxes", "points", "labels", "mask_logits"})
CLICK_WEIGHTS_SUFFIX = ".clicks.pt"
#: the card line of the click weights that ties them to the student they were trained on
STUDENT_LABEL = "student sha256"


class ClicksUnavailable(RuntimeError):
    """No click path for these weights; the message is one line for the user."""


class ClickBackend(Protocol):
    name: str
    slots: int
    needs_image: bool

    def decode_clicks(
        self, embedding: np.ndarray, box: np.ndarray, points: np.ndarray, labels: np.ndarray, mask_logits: np.ndarray,
        image: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, np.ndarray]: ...  # fmt: skip


def click_weights_path(weights: Path) -> Path:
    """``models/x.pt`` -> ``models/x.clicks.pt`` (whether or not it exists)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + CLICK_WEIGHTS_SUFFIX)


class OpenVinoClickBackend:
    """The shipped ``clicks.xml`` (and ``refiner``, the refiner's IR with dynamic height and width) on OpenVINO's
    CPU plugin, at the box decoders' precision rule (:data:`~.base.INT8_DECODER_HINT`: bf16 where the CPU computes
    it natively, f32 elsewhere) and their settings (:data:`~.openvino_backend.DECODER_CONFIG`). Per click figures:
    ``benchmarks/click_latency.py`` (docs/performance.md)."""

    def __init__(
        self, xml: Path, threads: int | None = None, precision: str = INT8_DECODER_HINT, refiner: Path | None = None
    ) -> None:
        import openvino as ov

        from .openvino_backend import DECODER_CONFIG, native_bf16

        single_threaded_numpy_blas()
        core = ov.Core()
        if precision == "bf16" and not native_bf16(core):
            precision = "f32"
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(str(xml))
        inputs = {name for port in model.inputs for name in port.get_names()}
        if not inputs >= CLICK_INPUTS or len(model.inputs) != len(CLICK_INPUTS):
            raise ClicksUnavailable(f"{xml.name} is a click network of another layout than this app's; reinstall")
        self.slots = int(model.input("points").get_partial_shape()[1].get_length())
        try:
            compiled = core.compile_model(model, "CPU", {**config, **DECODER_CONFIG})
        except RuntimeError:  # an OpenVINO that does not know the decoder settings
            compiled = core.compile_model(model, "CPU", config)
        self._request = compiled.create_infer_request()
        self._refiner = None
        if refiner is not None:
            self._refiner = core.compile_model(core.read_model(str(refiner)), "CPU", config).create_infer_request()
        self.needs_image = self._refiner is not None
        self.precision = precision
        self.name = "clicks+openvino" + ("+bf16" if precision == "bf16" else "") + ("+refiner" if refiner else "")
        self._lock = threading.Lock()

    def decode_clicks(
        self, embedding: np.ndarray, box: np.ndarray, points: np.ndarray, labels: np.ndarray, mask_logits: np.ndarray,
        image: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, np.ndarray]:  # fmt: skip
        p, lab = pad_clicks(points, labels, self.slots)
        inputs = {
            "embedding": np.ascontiguousarray(embedding, np.float32).reshape(1, 256, 64, 64),
            "boxes": np.asarray(box, np.float32).reshape(1, 4),
            "points": p,
            "labels": lab,
            "mask_logits": np.ascontiguousarray(mask_logits, np.float32).reshape(1, 1, 256, 256),
        }
        with self._lock:
            out = self._request.infer(inputs)
            logits = np.array(out["logits"]).reshape(256, 256)
            iou = float(np.asarray(out["iou"]).reshape(-1)[0])
            if self._refiner is None:
                return logits, iou, logits.copy()
            return logits, iou, refine_in_window(self._refine, image, logits, points, labels, self.slots)

    def _refine(self, image: np.ndarray, logits: np.ndarray, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The refiner's IR on a window (:data:`~.refiner_window.RefinerRun`); called under the lock."""
        assert self._refiner is not None
        out = self._refiner.infer({"image": image, "logits": logits, "points": points, "labels": labels})
        return np.array(out["shown"])


def _verified_refiner(xml: Path, weights: Path, source: str) -> Path | None:
    """The shipped refiner the click network's card names (verified), or None for a path without one."""
    card = card_path(xml)
    expected = card_field(card, REFINER_LABEL)
    if expected is None:
        return None
    refiner = shipped_network(weights, REFINER_STEM)
    expected_bin = card_field(card, REFINER_BIN_LABEL)
    if (
        not refiner.is_file()
        or sha256_of(refiner) != expected
        or (expected_bin is not None and sha256_of(refiner.with_suffix(".bin")) != expected_bin)
    ):
        raise ClicksUnavailable(f"the click network's refiner ({refiner.name}) is missing or not its own")
    verify_network(refiner, source)
    return refiner


def _verified_click_weights(weights: Path) -> Path:
    """The ``.clicks.pt`` of ``weights`` when it matches its card and the card names these weights."""
    path = click_weights_path(weights)
    if not path.is_file():
        raise ClicksUnavailable(f"no click weights for {Path(weights).name}: clicks are available with the student")
    try:
        tied = tied_to(path, STUDENT_LABEL, weights)
    except InvalidCheckpointError as exc:
        raise ClicksUnavailable(str(exc)) from None
    if not tied:
        raise ClicksUnavailable(f"{path.name} was trained for other weights than {Path(weights).name}")
    return path


def load_click_backend(weights: Path, threads: int | None = None, runtime: str = "default") -> ClickBackend:
    """The click path of ``weights``: the shipped OpenVINO IR (verified) unless ``runtime`` is ``torch``, else
    the torch weights from a source install; :class:`ClicksUnavailable` says why there is none."""
    reason = ""
    if runtime != "torch":
        xml = shipped_network(weights, CLICKS_STEM)
        try:
            if not xml.is_file():
                raise ClicksUnavailable(f"no shipped click network for {Path(weights).name}")
            source = weights_sha256(weights)
            verify_network(xml, source)
            return OpenVinoClickBackend(xml, threads, refiner=_verified_refiner(xml, weights, source))
        except (ClicksUnavailable, InvalidCheckpointError, ImportError, RuntimeError) as exc:
            reason = exception_line(exc, 160)
    try:
        path = _verified_click_weights(weights)
        from .torch_clicks import TorchClickBackend  # needs torch: a source install
    except ImportError:
        raise ClicksUnavailable(reason or "clicks need the shipped click network or PyTorch") from None
    backend = TorchClickBackend.from_file(path, threads)
    if reason:
        log.info("click path on PyTorch (%s)", reason)
    return backend
