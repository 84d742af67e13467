"""medsam-infer and medsam-segment end to end, with a small random-weights checkpoint (plumbing, geometry,
exit codes, error messages: bad values give one clear line, never a traceback). The real-model accuracy test is
in test_teacher_dev.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fakes import model_args

from medsam_desktop.cli import infer, segment
from medsam_desktop.core.backends import load_backend


def _write_cases(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    img2d = rng.integers(0, 255, (96, 120, 3), dtype=np.uint8)
    np.savez(folder / "2DBox_US_test_a.npz", imgs=img2d, boxes=np.array([[10, 10, 60, 50], [40, 30, 100, 90]]))
    img3d = rng.integers(0, 255, (6, 64, 80), dtype=np.uint8)
    np.savez(
        folder / "3DBox_CT_test_b.npz",
        imgs=img3d,
        boxes=np.array([[5, 5, 1, 40, 40, 4]]),
        spacing=np.array([2.5, 0.8, 0.8]),
    )


def test_infer_writes_segs_and_timing(tmp_path: Path, random_weights: Path) -> None:
    _write_cases(tmp_path / "imgs")
    (tmp_path / "imgs" / "3DBox_CT_broken.npz").write_bytes(b"garbage")
    code = infer.main(["-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "segs"), *model_args(random_weights)])
    assert code == 1  # one broken case, the others still done
    a = np.load(tmp_path / "segs" / "2DBox_US_test_a.npz")
    assert a["segs"].shape == (96, 120) and a["segs"].dtype == np.uint8
    b = np.load(tmp_path / "segs" / "3DBox_CT_test_b.npz")
    assert b["segs"].shape == (6, 64, 80)
    np.testing.assert_allclose(b["spacing"], [2.5, 0.8, 0.8])
    assert b["segs"][0].max() == 0 and b["segs"][5].max() == 0  # nothing outside the box's slices
    assert not (tmp_path / "segs" / "3DBox_CT_broken.npz").exists()
    with open(tmp_path / "segs" / "timing.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["case"] for r in rows) == ["2DBox_US_test_a.npz", "3DBox_CT_test_b.npz"]
    assert all(float(r["seconds"]) > 0 for r in rows)


def test_infer_reports_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = infer.main(["-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o"), "-q"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input folder not found" in err[0] and "Traceback" not in err[0]


def test_segment_volume_keeps_geometry(tmp_path: Path, random_weights: Path) -> None:
    arr = (np.random.default_rng(1).random((8, 40, 50)) * 1000 - 500).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.9, 3.0))
    img.SetOrigin((-12.5, 30.25, 7.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    src = tmp_path / "ct.nii.gz"
    sitk.WriteImage(img, str(src))
    out = tmp_path / "mask.nii.gz"
    code = segment.main(
        [
            str(src),
            "--box",
            "5",
            "5",
            "30",
            "25",
            "--zrange",
            "2",
            "5",
            "--label",
            "3",
            "-o",
            str(out),
            *model_args(random_weights),
        ]
    )
    assert code == 0
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == img.GetSize()
    np.testing.assert_allclose(mask.GetSpacing(), img.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(mask.GetOrigin(), img.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(mask.GetDirection(), img.GetDirection(), atol=1e-6)
    labels = sitk.GetArrayFromImage(mask)
    assert set(np.unique(labels)) <= {0, 3}
    assert labels[:2].max() == 0 and labels[6:].max() == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --slice Z or --zrange"),
        (["--slice", "99"], "outside the volume"),
        (["--slice", "1", "--label", "0"], "--label must be between"),
    ],
)
def test_segment_errors_are_one_line(tmp_path: Path, random_weights: Path, capsys, extra, message) -> None:
    src = tmp_path / "v.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 20, 20), np.int16)), str(src))
    code = segment.main(
        [str(src), "--box", "1", "1", "10", "10", "-o", str(tmp_path / "m.nii.gz"), *extra, *model_args(random_weights)]
    )
    assert code == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "m.nii.gz").exists()


def test_segment_2d_png_and_refuses_overwriting_source(tmp_path: Path, random_weights: Path) -> None:
    from PIL import Image

    src = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 80), dtype=np.uint8)).save(src)
    out = tmp_path / "mask.png"
    assert segment.main([str(src), "--box", "10", "10", "50", "40", "-o", str(out), *model_args(random_weights)]) == 0
    assert np.asarray(Image.open(out)).shape == (60, 80)
    assert segment.main([str(src), "--box", "10", "10", "50", "40", "-o", str(src), *model_args(random_weights)]) == 1
    assert Image.open(src).size == (80, 60)  # source untouched


# --- bad --threads values ----------------------------------------------------------------------------------


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
