"""Where bundled files live, resolved from the package (never from the working directory).

Order: an environment override, the PyInstaller bundle (``sys._MEIPASS``), then the source checkout
(``<repo>/models``, ``<repo>/resources``). Per-user caches: :func:`user_cache_dir`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
APP_DIR_NAME = "MedSAM Desktop"  # the per-user folders' name


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


#: the environment variable that overrides :func:`user_data_dir`
DATA_DIR_ENV = "MEDSAM_DESKTOP_DATA"


def user_data_dir() -> Path:
    """Per-user data folder for what must survive a restart, e.g. autosaved labels (``$MEDSAM_DESKTOP_DATA``
    overrides)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_DIR_NAME, appauthor=False))


def user_cache_dir() -> Path:
    """Per-user cache folder for regenerable files, e.g. exported models (``$MEDSAM_CACHE_DIR`` overrides)."""
    override = os.environ.get("MEDSAM_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_DIR_NAME, appauthor=False))
