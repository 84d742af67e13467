"""Review: bad command-line values give one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.cli import infer, segment
from medsam_desktop.core.backends import load_backend


def _case(folder: Path) -> None:
    folder.mkdir()
    np.savez(folder / "2DBox_US_a.npz", imgs=np.zeros((40, 48, 3), np.uint8), boxes=np.array([[4, 4, 30, 30]]))


@pytest.mark.parametrize("threads", ["-1", "-4", "two"])
def test_infer_refuses_bad_threads_in_one_line(
    tmp_path: Path, random_weights: Path, threads: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _case(tmp_path / "imgs")
    code = infer.main(
        [
            "-i",
            str(tmp_path / "imgs"),
            "-o",
            str(tmp_path / "segs"),
            "--model",
            "repvit_m0_6",
            "--weights",
            str(random_weights),
            "--threads",
            threads,
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--threads" in err, err
    assert not (tmp_path / "segs").exists()


def test_segment_refuses_negative_threads(tmp_path: Path, random_weights: Path, capsys) -> None:
    code = segment.main(
        [
            "--sample",
            "ct-vertebra",
            "-o",
            str(tmp_path / "m.nii.gz"),
            "--model",
            "repvit_m0_6",
            "--weights",
            str(random_weights),
            "--threads",
            "-2",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--threads" in err, err


def test_load_backend_refuses_negative_threads_with_a_value_error(random_weights: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        load_backend("repvit_m0_6", random_weights, threads=-1, precision="fp32")
