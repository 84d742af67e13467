"""The inference files shipped beside a student's weights, and the checks that tie them to those weights.

``training/export_runtime.py`` writes, for ``models/x.pt``, the folder ``models/x.openvino/`` with the networks
of :mod:`.layout` as OpenVINO IR: ``encoder-int8`` (the int8 encoder, from ``x.encoder-int8.onnx`` made by
``training/quantize_encoder.py``), ``encoder`` (fp32), ``prepare``, ``decoder`` and ``decoder_b2``; each network
is ``<stem>.xml`` + ``<stem>.bin`` with a card ``<stem>.md`` recording both files' sha256 and the sha256 of the
weights it was made from. These files run on OpenVINO without torch (the packaged app). A file that does not
match its card, or a card of other weights, is refused with one line that says which.

``x.encoder-int8.onnx`` (+ card ``x.encoder-int8.md``) is the quantizer's output; a source install runs it with a
cached ONNX export when no IR folder matches the weights.
"""

from __future__ import annotations

from pathlib import Path

from ...model_files import (
    InvalidCheckpointError,
    card_field,
    card_path,
    runtime_folder,
    sha256_of,
    tied_to,
)
from ...model_files import weights_sha256 as _weights_sha256
from .layout import DECODER_SIZES, ENCODER, ENCODER_INT8, PREPARE, NetworkFiles, decoder_stem

#: card labels (``- **<label>**: `<64 hex>```)
SHA_LABEL, BIN_SHA_LABEL, SOURCE_LABEL = "sha256", "bin sha256", "source weights sha256"
INT8_ENCODER_SUFFIX = ".encoder-int8.onnx"
#: the networks of a shipped folder; the encoder in fp32 is the fallback of the fp32/bf16 precisions
SHIPPED_STEMS = (ENCODER_INT8, ENCODER, PREPARE, *(decoder_stem(k) for k in DECODER_SIZES))


class ShippedFilesUnavailable(RuntimeError):
    """No usable shipped inference files for these weights; the message is one line for the user."""


class Int8EncoderUnavailable(RuntimeError):
    """No usable int8 ONNX encoder for these weights; the message is one line for the user."""


def shipped_network(weights: Path, stem: str) -> Path:
    """``models/x.pt``, ``prepare`` -> ``models/x.openvino/prepare.xml`` (whether or not it exists)."""
    return runtime_folder(weights) / f"{stem}.xml"


def has_shipped_files(weights: Path, int8: bool = True) -> bool:
    """True when the folder holds every network needed (``int8``: with the int8 encoder, else the fp32 one); a
    cheap check of names only, :func:`shipped_files` verifies them."""
    needed = (ENCODER_INT8 if int8 else ENCODER, PREPARE, *(decoder_stem(k) for k in DECODER_SIZES))
    return all(shipped_network(weights, stem).is_file() for stem in needed)


def verify_network(xml: Path, source_sha256: str | None) -> None:
    """Refuse ``xml`` unless it, its ``.bin`` and the card's source weights all match; InvalidCheckpointError."""
    card = card_path(xml)
    label = f"{xml.parent.name}/{xml.stem}"
    if not card.is_file():
        raise InvalidCheckpointError(f"{label} has no card beside it; reinstall the app")
    for path, field in ((xml, SHA_LABEL), (xml.with_suffix(".bin"), BIN_SHA_LABEL)):
        expected = card_field(card, field)
        if expected is None or not path.is_file() or sha256_of(path) != expected:
            raise InvalidCheckpointError(
                f"{label} ({path.suffix}) does not match the sha256 in its card: the file is corrupt or was "
                "replaced; reinstall the app"
            )
    source = card_field(card, SOURCE_LABEL)
    if source is None or source != source_sha256:
        raise InvalidCheckpointError(f"{label} was not made from these weights (its card names other weights)")


def shipped_files(weights: Path, int8: bool = True) -> NetworkFiles:
    """The verified IR files of ``weights`` (``int8``: with the int8 encoder); :class:`ShippedFilesUnavailable`
    says why there are none."""
    folder = runtime_folder(weights)
    if not has_shipped_files(weights, int8):
        what = "int8 " if int8 else "fp32 "
        raise ShippedFilesUnavailable(f"no shipped {what}OpenVINO files for {Path(weights).name} in {folder.name}")
    files = NetworkFiles.in_folder(folder, ".xml", encoder=shipped_network(weights, ENCODER_INT8) if int8 else None)
    source = _weights_sha256(weights)
    try:
        for xml in files.all():
            verify_network(xml, source)
    except InvalidCheckpointError as exc:
        raise ShippedFilesUnavailable(str(exc)) from None
    return files


# --- the quantizer's int8 ONNX encoder ----------------------------------------------------------------------------
def int8_encoder_path(weights: Path) -> Path:
    """``models/x.pt`` -> ``models/x.encoder-int8.onnx`` (whether or not it exists)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + INT8_ENCODER_SUFFIX)


def int8_card_path(encoder: Path) -> Path:
    """``x.encoder-int8.onnx`` -> ``x.encoder-int8.md``."""
    return card_path(encoder)


def find_int8_encoder(weights: Path) -> Path:
    """The verified int8 ONNX encoder quantized from ``weights``; :class:`Int8EncoderUnavailable` says why not.

    Checks: the file exists, its card's sha256 matches the file, and the card's source sha256 is the sha256
    of ``weights``.
    """
    encoder = int8_encoder_path(weights)
    if not encoder.is_file():
        raise Int8EncoderUnavailable(f"no int8 encoder for {Path(weights).name}")
    try:
        tied = tied_to(encoder, SOURCE_LABEL, weights)
    except InvalidCheckpointError as exc:
        raise Int8EncoderUnavailable(str(exc)) from None
    if not tied:
        raise Int8EncoderUnavailable(f"{encoder.name} was not quantized from {Path(weights).name}")
    return encoder
