"""One line naming the app, the bundled model, the default runtime and precision, and the runtimes installed
(``--version`` of the app and the bundle); imports no runtime."""

from __future__ import annotations

import re
import sys

from .. import __version__


def model_summary() -> str:
    """``repvit_m0_6 sha256 fb7181c8 (200 training steps)`` for the bundled student, or why it is absent."""
    from ..model_files import card_path, card_sha256, student_available, student_weights_path

    path = student_weights_path()
    if not student_available():
        return f"none bundled (expected {path})"
    sha = card_sha256(path)
    card = card_path(path)
    steps = None
    if card.is_file():
        match = re.search(r"\*\*training\*\*:\s*([\d,]+)\s+steps", card.read_text(errors="replace"))
        steps = match.group(1).replace(",", "") if match else None
    return (
        f"repvit_m0_6 sha256 {sha[:8] if sha else 'unknown (no card)'}"
        f" ({steps + ' training steps' if steps else 'training steps unknown'})"
    )


def runtime_versions() -> str:
    """``OpenVINO 2026.4.1, torch 2.13.0`` for the runtimes installed (read from their metadata, not imported)."""
    import importlib.metadata

    found = []
    for dist, title in (("openvino", "OpenVINO"), ("torch", "torch"), ("onnxruntime", "ONNX Runtime")):
        try:
            found.append(f"{title} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found) or "no runtime installed"


def default_line() -> str:
    """``default OpenVINO int8`` (what the app runs for its default model here), without loading anything."""
    from ..core.backends import RUNTIME_TITLES, default_configuration
    from ..model_files import ModelNotAvailableError, default_model_name

    try:
        runtime, precision = default_configuration(default_model_name())
    except ModelNotAvailableError:
        return "default: no model"
    return f"default {RUNTIME_TITLES[runtime]} {precision}"


def version_line() -> str:
    """One line: app, model, the default runtime and precision, runtime versions."""
    frozen = " (bundle)" if getattr(sys, "frozen", False) else ""
    return (f"medsam-desktop {__version__}{frozen}; model {model_summary()}; {default_line()}; "
            f"{runtime_versions()}")  # fmt: skip
