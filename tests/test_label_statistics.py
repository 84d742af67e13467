"""Label statistics (core.document.statistics) and ``medsam-stats``, checked against SimpleITK's
LabelStatisticsImageFilter computed independently."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medsam_desktop.cli import stats
from medsam_desktop.core.document.statistics import label_statistics


def _case(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray, tuple[float, float, float]]:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1500, size=(12, 40, 50)).astype(np.int16)
    labels = np.zeros(image.shape, np.uint8)
    labels[2:9, 5:25, 10:30] = 1
    labels[4:6, 30:38, 35:48] = 2
    labels[11, 0, 0] = 7  # one voxel on the last slice
    spacing = (0.7, 0.8, 2.5)  # x, y, z mm
    paths = []
    for name, arr in (("ct.nii.gz", image), ("ct_seg.nii.gz", labels)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        img.SetOrigin((-10.0, 5.0, 30.0))
        sitk.WriteImage(img, str(tmp_path / name))
        paths.append(tmp_path / name)
    return paths[0], paths[1], image, labels, spacing


def _itk_reference(image: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float]) -> dict[int, tuple]:
    img, lab = sitk.GetImageFromArray(image.astype(np.float64)), sitk.GetImageFromArray(labels)
    img.SetSpacing(spacing)
    lab.SetSpacing(spacing)
    f = sitk.LabelStatisticsImageFilter()
    f.Execute(img, lab)
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(lab)
    out = {}
    for label in f.GetLabels():
        if label == 0:
            continue
        out[label] = (f.GetCount(label), shape.GetPhysicalSize(label) / 1000.0, f.GetMean(label), f.GetSigma(label),
                      f.GetMinimum(label), f.GetMaximum(label))  # fmt: skip
    return out


def test_statistics_agree_with_simpleitk(tmp_path: Path) -> None:
    _, _, image, labels, spacing = _case(tmp_path)
    ref = _itk_reference(image, labels, spacing)
    rows = label_statistics(labels, spacing, image)
    assert [r.label for r in rows] == [1, 2, 7]
    for r in rows:
        count, ml, mean, sd, lo, hi = ref[r.label]
        assert r.voxels == count
        assert r.volume_ml == pytest.approx(ml, abs=1e-6)
        assert r.mean == pytest.approx(mean, rel=1e-9)
        assert r.sd == pytest.approx(sd, rel=1e-9, abs=1e-12)
        assert (r.minimum, r.maximum) == (lo, hi)
    assert (rows[0].first_slice, rows[0].last_slice) == (2, 8) and (rows[2].first_slice, rows[2].last_slice) == (11, 11)


def test_without_an_image_only_counts_volumes_and_extents() -> None:
    labels = np.zeros((3, 4, 5), np.uint16)
    labels[1, :2, :2] = 300
    (row,) = label_statistics(labels, (1.0, 2.0, 3.0))
    assert (row.label, row.voxels, row.volume_ml) == (300, 4, pytest.approx(4 * 6 / 1000))
    assert np.isnan(row.mean) and row.name == "label 300"
    assert label_statistics(np.zeros((2, 3, 3), np.uint8), (1, 1, 1)) == []


def test_medsam_stats_prints_and_writes_csv(tmp_path: Path, capsys) -> None:
    img, seg, image, labels, spacing = _case(tmp_path)
    out = tmp_path / "stats.csv"
    assert stats.main([str(seg), "--image", str(img), "--csv", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "HU" in printed and "label 7" in printed
    rows = list(csv.DictReader(out.open()))
    ref = _itk_reference(image, labels, spacing)
    assert [int(r["label"]) for r in rows] == [1, 2, 7]
    assert float(rows[0]["volume_ml"]) == pytest.approx(ref[1][1], abs=1e-6)


def test_medsam_stats_refuses_a_mask_of_another_image_in_one_line(tmp_path: Path, capsys) -> None:
    _, seg, *_ = _case(tmp_path)
    other = sitk.GetImageFromArray(np.zeros((12, 40, 51), np.int16))
    sitk.WriteImage(other, str(tmp_path / "other.nii.gz"))
    assert stats.main([str(seg), "--image", str(tmp_path / "other.nii.gz"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medsam-stats: error:") and "does not fit" in err[0]
