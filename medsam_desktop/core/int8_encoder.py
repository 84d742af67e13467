"""The int8 image encoder shipped beside a student's weights, and the checks that tie it to them.

``training/quantize_encoder.py`` writes ``<weights stem>.encoder-int8.onnx`` (the fused encoder with int8
weights and inputs for its dense convolutions, calibrated on the distillation pool) and its card
``<weights stem>.encoder-int8.md``. Only OpenVINO runs it fast (int8 convolutions on VNNI; ONNX Runtime ran an
earlier int8 variant slower than fp32), so it is the OpenVINO backend's ``int8`` precision. Calibration needs
the training data, so the file is built once and shipped; the app never quantizes.

The card records the file's sha256 (checked like the weights' own card) and the sha256 of the weights it was
quantized from: an int8 encoder of other weights is refused, never silently paired with a foreign decoder.
"""

from __future__ import annotations

import re
from pathlib import Path

INT8_ENCODER_SUFFIX = ".encoder-int8.onnx"
_SOURCE_RE = re.compile(r"source weights sha256\**:\s*`?([0-9a-f]{64})")


class Int8EncoderUnavailable(RuntimeError):
    """No usable int8 encoder for these weights; the message is one line for the user."""


def int8_encoder_path(weights: Path) -> Path:
    """``models/x.pt`` -> ``models/x.encoder-int8.onnx`` (whether or not it exists)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + INT8_ENCODER_SUFFIX)


def int8_card_path(encoder: Path) -> Path:
    """``x.encoder-int8.onnx`` -> ``x.encoder-int8.md``."""
    return Path(encoder).with_suffix(".md")


def source_weights_sha256(encoder: Path) -> str | None:
    """The weights sha256 recorded in the int8 encoder's card, or None."""
    card = int8_card_path(encoder)
    if not card.is_file():
        return None
    match = _SOURCE_RE.search(card.read_text(errors="replace"))
    return match.group(1) if match else None


def find_int8_encoder(weights: Path) -> Path:
    """The verified int8 encoder quantized from ``weights``; :class:`Int8EncoderUnavailable` says why not.

    Checks: the file exists, its card's sha256 matches the file, and the card's source sha256 is the sha256
    of ``weights``.
    """
    from ..model.checkpoint import InvalidCheckpointError, sha256_of, verify_against_card

    encoder = int8_encoder_path(weights)
    if not encoder.is_file():
        raise Int8EncoderUnavailable(f"no int8 encoder for {Path(weights).name}")
    try:
        verify_against_card(encoder)
    except InvalidCheckpointError as exc:
        raise Int8EncoderUnavailable(str(exc)) from None
    source = source_weights_sha256(encoder)
    if source is None or source != sha256_of(weights):
        raise Int8EncoderUnavailable(f"{encoder.name} was not quantized from {Path(weights).name}")
    return encoder
