"""Where bundled files live, resolved from the package (never from the working directory).

Order: an environment override, the PyInstaller bundle (``sys._MEIPASS``), then the source checkout
(``<repo>/models``, ``<repo>/resources``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]


def _bundled(name: str, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        return Path(override)
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / name
    return _REPO_ROOT / name


def models_dir() -> Path:
    """Bundled weights and their cards (``$MEDSAM_MODELS_DIR`` overrides)."""
    return _bundled("models", "MEDSAM_MODELS_DIR")


def resources_dir() -> Path:
    """Icons and the sample list (``$MEDSAM_RESOURCES_DIR`` overrides)."""
    return _bundled("resources", "MEDSAM_RESOURCES_DIR")
