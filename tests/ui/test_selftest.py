"""``--version``, ``--self-test`` and ``--segment-and-export`` (what the packaged app is checked with)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medsam_desktop import __version__
from medsam_desktop.model.checkpoint import card_sha256, student_checkpoint_path
from medsam_desktop.ui import selftest

needs_student = pytest.mark.skipif(student_checkpoint_path() is None, reason="bundled student weights absent")


def _app(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})}
    return subprocess.run([sys.executable, "-m", "medsam_desktop", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)  # fmt: skip


@needs_student
def test_version_names_app_and_model() -> None:
    proc = _app("--version")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    sha = card_sha256(student_checkpoint_path())  # type: ignore[arg-type]
    assert f"medsam-desktop {__version__}" in lines[0]
    assert f"sha256 {sha[:8]}" in lines[0]  # type: ignore[index]
    assert "training steps" in lines[0]


@needs_student
def test_self_test_passes_in_one_line() -> None:
    proc = _app("--self-test")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("self-test OK:"), proc.stdout
    assert "model load" in lines[0] and "first mask" in lines[0]


def test_self_test_without_weights_fails_in_one_line(tmp_path: Path) -> None:
    proc = _app("--self-test", env={"MEDSAM_MODELS_DIR": str(tmp_path)})
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("self-test FAILED: the bundled model could not be loaded"), lines


def test_check_mask_rejects_implausible_masks() -> None:
    box = (10.0, 10.0, 30.0, 30.0)
    mask = np.zeros((40, 40), bool)
    with pytest.raises(selftest.SelfTestError, match="empty"):
        selftest.check_mask(mask, box)
    mask[12:28, 12:28] = True
    assert selftest.check_mask(mask, box) == pytest.approx(256 / 400)
    mask[0:3, 0:3] = True
    with pytest.raises(selftest.SelfTestError, match="outside the box"):
        selftest.check_mask(mask, box)
    mask[:] = False
    mask[15:17, 15:17] = True
    with pytest.raises(selftest.SelfTestError, match="covers 1%"):
        selftest.check_mask(mask, box)


@needs_student
def test_self_test_falls_back_to_a_synthetic_image(qapp, monkeypatch: pytest.MonkeyPatch) -> None:
    from medsam_desktop import samples

    def missing(key: str) -> samples.Sample:
        raise samples.SampleNotAvailableError("pydicom's test files were left out")

    monkeypatch.setattr(samples, "get_sample", missing)
    result = selftest.run_self_test()
    assert result.source == "synthetic disk"
    assert selftest.MIN_BOX_FRACTION <= result.box_fraction <= 1.0


@needs_student
def test_segment_and_export_matches_medsam_segment(tmp_path: Path) -> None:
    """The app's path (model input mapping, session, save) and the CLI give the same mask on the CT sample."""
    import nibabel as nib

    from medsam_desktop.cli import segment
    from medsam_desktop.samples import get_sample

    sample = get_sample("ct-vertebra")
    box = [str(v) for v in sample.box]
    app_out, cli_out = tmp_path / "app.nii.gz", tmp_path / "cli.nii.gz"
    proc = _app(str(sample.path()), "--segment-and-export", str(app_out), "--box", *box)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.startswith("segment-and-export OK")
    assert segment.main(["--sample", "ct-vertebra", "-o", str(cli_out), "-q"]) == 0
    a = np.asarray(nib.load(app_out).dataobj) > 0
    b = np.asarray(nib.load(cli_out).dataobj) > 0
    assert a.sum() > 0 and np.array_equal(a, b)
    assert (tmp_path / "app.json").is_file()  # the app's label-name sidecar
