"""Review of io/: label maps must re-open on the source's exact grid in nibabel *and* SimpleITK."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medsam_desktop.io import (
    DicomSeriesError,
    OutputWriteError,
    Volume,
    read_dicom_series,
    read_image,
    read_labels,
    write_labels_nifti,
    write_mask_png,
)
from medsam_desktop.io import writers as writers_module

_LPS = np.diag([-1.0, -1.0, 1.0])


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _affine(linear: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = origin
    return out


def _volume_affine(volume: Volume) -> np.ndarray:
    """The RAS voxel -> world affine a Volume's (LPS) geometry stands for."""
    lin = _LPS @ np.reshape(volume.direction, (3, 3)) * np.asarray(volume.spacing)
    return _affine(lin, tuple(_LPS @ np.asarray(volume.origin)))


def _labels_for(volume: Volume) -> np.ndarray:
    labels = np.zeros(volume.shape_zyx, np.uint8)
    labels[0, 0, 0] = 1
    labels[-1, -1, -1] = 2
    return labels


_DATA = (np.arange(8 * 7 * 6).reshape(8, 7, 6) % 50).astype(np.int16)  # nibabel (x, y, z)
_OBLIQUE = _affine(_rot_x(0.4) @ np.diag([0.7, 0.8, 2.0]), (-50.0, 60.0, 70.0))
_OTHER = _affine(np.diag([0.7, 0.8, 2.0]), (1.0, 2.0, 3.0))


def _nifti(path: Path, data: np.ndarray, qform: np.ndarray | None, qcode: int,
           sform: np.ndarray | None, scode: int, units: str = "mm") -> Path:  # fmt: skip
    img = nib.Nifti1Image(data, None)
    img.header.set_zooms((0.7, 0.8, 2.0)[: data.ndim])
    img.set_qform(qform, code=qcode)
    img.set_sform(sform, code=scode)
    img.header.set_xyzt_units(units)
    nib.save(img, str(path))
    return path


def _sheared(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out[:3, 2] += [0.0, 0.5, 0.0]
    return out


# qform/sform combinations where ITK and nibabel pick different transforms (or none)
NIFTI_CASES = {
    "qform_and_sform_disagree": (_OTHER, 1, _OBLIQUE, 2, "mm"),
    "no_transform_codes": (None, 0, None, 0, "mm"),
    "sheared_sform_with_qform": (_OBLIQUE, 1, _sheared(_OBLIQUE), 1, "mm"),
    "sheared_sform_only": (None, 0, _sheared(_OBLIQUE), 1, "mm"),
    "micron_units": (_OBLIQUE, 1, _OBLIQUE, 1, "micron"),
    "left_handed_sform": (None, 0, _affine(_rot_x(0.3) @ np.diag([0.7, 0.8, -2.0]), (5.0, 6.0, 7.0)), 1, "mm"),
}


@pytest.mark.parametrize("case", sorted(NIFTI_CASES))
def test_nifti_mask_opens_like_its_image_in_nibabel_and_sitk(tmp_path: Path, case: str) -> None:
    qform, qcode, sform, scode, units = NIFTI_CASES[case]
    src = _nifti(tmp_path / "img.nii.gz", _DATA, qform, qcode, sform, scode, units)
    volume = read_image(src)
    labels = _labels_for(volume)
    out = write_labels_nifti(labels, volume, tmp_path / "img_seg.nii.gz")

    img, seg = nib.load(str(src)), nib.load(str(out))
    np.testing.assert_allclose(seg.affine, img.affine, atol=1e-5)  # nibabel: same voxel -> world
    np.testing.assert_array_equal(np.asarray(seg.dataobj).transpose(2, 1, 0), labels)
    try:
        itk_img = sitk.ReadImage(str(src))
    except RuntimeError:  # ITK refuses this image (sheared sform only): it must refuse the mask alike
        with pytest.raises(RuntimeError):
            sitk.ReadImage(str(out))
    else:
        itk_seg = sitk.ReadImage(str(out))
        np.testing.assert_allclose(itk_seg.GetSpacing(), itk_img.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(itk_seg.GetOrigin(), itk_img.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(itk_seg.GetDirection(), itk_img.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(read_labels(out, volume), labels)


def test_2d_nifti_keeps_its_plane_in_3d(tmp_path: Path) -> None:
    """A 2D (dim[0] = 2) oblique NIfTI slice: ITK drops z origin and tilt; the volume must keep them."""
    src = _nifti(tmp_path / "slice.nii.gz", _DATA[:, :, 0], _OBLIQUE, 1, _OBLIQUE, 1)
    volume = read_image(src)
    assert volume.shape_zyx == (1, 7, 8)
    np.testing.assert_allclose(volume.origin, (50.0, -60.0, 70.0), atol=1e-4)
    np.testing.assert_allclose(_volume_affine(volume)[:3, :2], _OBLIQUE[:3, :2], atol=1e-5)
    out = write_labels_nifti(_labels_for(volume), volume, tmp_path / "slice_seg.nii.gz")
    np.testing.assert_allclose(nib.load(str(out)).affine[:, [0, 1, 3]], _OBLIQUE[:, [0, 1, 3]], atol=1e-4)


def test_stale_nifti_transforms_are_not_copied(tmp_path: Path) -> None:
    """A volume whose geometry was changed after reading must get its own geometry, not the file's header."""
    import dataclasses

    volume = read_image(_nifti(tmp_path / "img.nii.gz", _DATA, _OBLIQUE, 1, _OBLIQUE, 1))
    moved = dataclasses.replace(volume, origin=(1.0, 2.0, 3.0), spacing=(1.0, 1.0, 1.0))
    assert moved.extra  # the recorded header travels with the copy
    out = write_labels_nifti(_labels_for(moved), moved, tmp_path / "seg.nii.gz")
    saved = read_image(out)
    np.testing.assert_allclose(saved.origin, (1.0, 2.0, 3.0), atol=1e-5)
    np.testing.assert_allclose(saved.spacing, (1.0, 1.0, 1.0), atol=1e-6)
    np.testing.assert_allclose(nib.load(str(out)).affine, _volume_affine(moved), atol=1e-5)


def test_a_write_that_would_change_the_geometry_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = Volume(np.zeros((3, 4, 5), np.int16), spacing=(0.5, 0.6, 2.0), origin=(1.0, 2.0, 3.0))
    target = tmp_path / "seg.nii.gz"
    write_labels_nifti(np.ones((3, 4, 5), np.uint8), volume, target)
    before = target.read_bytes()
    real_write = sitk.WriteImage

    def wrong_spacing(image: sitk.Image, *args: object, **kwargs: object) -> None:
        image.SetSpacing((0.5, 0.6, 2.5))
        real_write(image, *args, **kwargs)

    monkeypatch.setattr(writers_module.sitk, "WriteImage", wrong_spacing)
    with pytest.raises(OutputWriteError, match="spacing") as info:
        write_labels_nifti(np.full((3, 4, 5), 2, np.uint8), volume, target)
    assert "\n" not in str(info.value)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]


@pytest.mark.parametrize("name", ["SEG.NII.GZ", "Seg.Nii", "séance_日本.nii.gz"])
def test_upper_case_and_unicode_names(tmp_path: Path, name: str) -> None:
    volume = Volume(np.zeros((3, 4, 5), np.int16), spacing=(0.5, 0.6, 2.0), origin=(1.0, 2.0, 3.0))
    labels = _labels_for(volume)
    out = write_labels_nifti(labels, volume, tmp_path / name)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == name.lower().endswith(".gz")
    np.testing.assert_array_equal(read_labels(out, volume), labels)  # re-opens despite the case


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_read_only_existing_file_is_not_replaced(tmp_path: Path) -> None:
    volume = Volume(np.zeros((1, 4, 5), np.int16))
    for target, write in ((tmp_path / "seg.nii.gz", write_labels_nifti), (tmp_path / "m.png", None)):
        if write is None:
            write_mask_png(np.ones((4, 5), np.uint8), target)
        else:
            write(np.ones((1, 4, 5), np.uint8), volume, target)
        before = target.read_bytes()
        os.chmod(target, stat.S_IRUSR | stat.S_IRGRP)
        try:
            with pytest.raises(OutputWriteError, match="read-only"):
                if write is None:
                    write_mask_png(np.zeros((4, 5), np.uint8), target)
                else:
                    write(np.zeros((1, 4, 5), np.uint8), volume, target)
            assert target.read_bytes() == before
        finally:
            os.chmod(target, 0o644)


# --- DICOM series geometry ------------------------------------------------------------------------


def _series(raw_dir: Path, folder: Path, positions: list[tuple[float, float, float]]) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir()
    uid = generate_uid()
    for i, pos in enumerate(positions):
        ds = pydicom.dcmread(raw_dir / "CT_small.dcm")
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.save_as(folder / f"s{i:03d}.dcm")
    return folder


@pytest.mark.shared
def test_gantry_tilted_series_mask_has_every_slice_at_its_position(raw_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    shift = 2.0 * np.tan(np.deg2rad(20.0))  # 20 degree tilt: each slice 0.73 mm further along y
    positions = [(5.0, -3.0 + i * shift, 7.0 + 2.0 * i) for i in range(10)]
    volume = read_dicom_series(_series(raw_dir, tmp_path / "tilt", positions))
    out = write_labels_nifti(_labels_for(volume), volume, tmp_path / "tilt_seg.nii.gz")
    affine = nib.load(str(out)).affine
    for i in (0, 4, 9):
        world_lps = _LPS @ (affine @ [0.0, 0.0, i, 1.0])[:3]
        np.testing.assert_allclose(world_lps, positions[i], atol=1e-3)
    np.testing.assert_array_equal(read_labels(out, volume), _labels_for(volume))


@pytest.mark.shared
def test_series_whose_spacing_drifts_is_refused(raw_dir: Path, tmp_path: Path) -> None:
    """Gaps 2.0 then 2.18 mm (each within 10% of the median): ITK averages them and puts slices ~1 mm off."""
    pytest.importorskip("pydicom")
    z = np.cumsum([0.0] + [2.0] * 9 + [2.18] * 10)
    with pytest.raises(DicomSeriesError, match="not evenly spaced") as info:
        read_dicom_series(_series(raw_dir, tmp_path / "drift", [(0.0, 0.0, float(v)) for v in z]))
    assert "\n" not in str(info.value)
    regular = read_dicom_series(_series(raw_dir, tmp_path / "ok", [(0.0, 0.0, 2.0 * i) for i in range(6)]))
    np.testing.assert_allclose(regular.spacing[2], 2.0, atol=1e-6)
    np.testing.assert_allclose(regular.direction, np.eye(3).ravel(), atol=1e-9)
