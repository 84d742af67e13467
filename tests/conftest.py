"""Shared fixtures: locating ../shared/data and skipping cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository (override with ``MEDSAM_SHARED_DATA``)."""
    env = os.environ.get("MEDSAM_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not available at {path}")
    return path


@pytest.fixture(scope="session")
def raw_dir(shared_data: Path) -> Path:
    return shared_data / "raw"


@pytest.fixture(scope="session")
def dev_dir(shared_data: Path) -> Path:
    return shared_data / "eval" / "dev"


@pytest.fixture(scope="session", autouse=True)
def _session_user_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test (and every subprocess it starts) writes caches (OpenVINO's compiled models, ONNX exports) into a
    session folder, never into the user's own cache; ``cache_dir`` narrows it to one test."""
    if "MEDSAM_CACHE_DIR" not in os.environ:
        os.environ["MEDSAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-user-cache"))


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test user cache folder (ONNX exports land there); modules that export use it for every test."""
    path = tmp_path / "user-cache"
    monkeypatch.setenv("MEDSAM_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weights student checkpoint in our format: exercises the CLIs' plumbing, not accuracy."""
    import torch

    from medsam_desktop.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "random_student.pt"
    save_checkpoint(build_model("repvit_m0_6"), path, "repvit_m0_6")
    return path
