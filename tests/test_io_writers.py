"""Writers: atomic replacement, NIfTI label maps on the exact reference geometry (re-opened on the source's grid
in nibabel *and* SimpleITK, whatever its qform/sform), PNG masks, read-only and oddly named targets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from synthetic_dicom import ct_series

from medsam_desktop.io import (
    GeometryMismatchError,
    OutputWriteError,
    Volume,
    atomic_write,
    read_dicom_series,
    read_image,
    read_labels,
    write_labels_nifti,
    write_mask_png,
)
from medsam_desktop.io import writers as writers_module


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.fixture
def oblique_reference(tmp_path: Path) -> Volume:
    direction = _rotation(0.3, -0.5, 1.1)
    assert not np.allclose(direction, np.eye(3))
    return Volume(
        np.zeros((6, 7, 8), np.int16),
        spacing=(0.7, 0.85, 2.5),
        origin=(-123.4567, 45.6789, 301.25),
        direction=tuple(direction.ravel()),
        modality="MR",
        source_path=tmp_path / "image.nii.gz",
    )


# --- atomic_write -----------------------------------------------------------------------------


def test_atomic_write_keeps_previous_file_when_body_raises(tmp_path: Path) -> None:
    target = tmp_path / "result.txt"
    target.write_text("previous version")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        tmp.write_text("half-written garbage")
        raise RuntimeError("boom")
    assert target.read_text() == "previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]  # temp file removed


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "result.nii.gz"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != target
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    if os.name == "posix":
        assert target.stat().st_mode & 0o777 == 0o644
        os.chmod(target, 0o600)
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"newer")
        assert target.read_bytes() == b"newer" and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["result.nii.gz"]


# --- NIfTI labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.nii"])
def test_labels_nifti_round_trip_oblique(tmp_path: Path, oblique_reference: Volume, name: str) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=oblique_reference.shape_zyx).astype(np.int64)
    out = write_labels_nifti(labels, oblique_reference, tmp_path / name)
    assert out == tmp_path / name
    img = sitk.ReadImage(str(out))  # independent check with plain SimpleITK
    assert img.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(img), labels)
    np.testing.assert_allclose(img.GetSpacing(), oblique_reference.spacing, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), oblique_reference.origin, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(img.GetDirection(), oblique_reference.direction, rtol=1e-6, atol=1e-6)
    back = read_labels(out, oblique_reference)
    np.testing.assert_array_equal(back, labels)


def test_labels_dtype_uint16_above_255(tmp_path: Path, oblique_reference: Volume) -> None:
    labels = np.zeros(oblique_reference.shape_zyx, np.int32)
    labels[0, 0, 0] = 300
    out = write_labels_nifti(labels, oblique_reference, tmp_path / "many.nii.gz")
    assert sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkUInt16
    assert read_labels(out, oblique_reference)[0, 0, 0] == 300


def test_labels_shape_mismatch_and_bad_names(tmp_path: Path, oblique_reference: Volume) -> None:
    with pytest.raises(GeometryMismatchError, match="6x7x8") as info:
        write_labels_nifti(np.zeros((6, 7, 9), np.uint8), oblique_reference, tmp_path / "x.nii.gz")
    assert "\n" not in str(info.value) and "x.nii.gz" in str(info.value)
    with pytest.raises(OutputWriteError, match="NIfTI"):
        write_labels_nifti(np.zeros((6, 7, 8), np.uint8), oblique_reference, tmp_path / "x.png")
    with pytest.raises(OutputWriteError, match="0 and 65535"):
        write_labels_nifti(np.full((6, 7, 8), -1), oblique_reference, tmp_path / "x.nii.gz")
    with pytest.raises(OutputWriteError):
        write_labels_nifti(np.zeros((6, 7, 8)), oblique_reference, tmp_path / "x.nii.gz")  # float
    with pytest.raises(OutputWriteError, match="could not be written"):
        write_labels_nifti(np.zeros((6, 7, 8), np.uint8), oblique_reference, tmp_path / "no" / "x.nii.gz")
    assert not list(tmp_path.iterdir())


def test_refuses_to_overwrite_the_source_image(tmp_path: Path) -> None:
    src = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 3, 4), 7, np.int16)), str(src))
    ref = read_image(src)
    before = src.read_bytes()
    with pytest.raises(OutputWriteError, match="overwrite the original"):
        write_labels_nifti(np.ones((2, 3, 4), np.uint8), ref, tmp_path / "." / "ct.nii.gz")
    assert src.read_bytes() == before


def test_read_labels_reports_geometry_mismatch(tmp_path: Path, oblique_reference: Volume) -> None:
    labels = np.ones(oblique_reference.shape_zyx, np.uint8)
    out = write_labels_nifti(labels, oblique_reference, tmp_path / "seg.nii.gz")
    other_spacing = Volume(oblique_reference.array, spacing=(0.7, 0.85, 3.0), origin=oblique_reference.origin,
                           direction=oblique_reference.direction)  # fmt: skip
    with pytest.raises(GeometryMismatchError, match="spacing") as info:
        read_labels(out, other_spacing)
    assert "seg.nii.gz" in str(info.value) and "\n" not in str(info.value)
    shifted = Volume(oblique_reference.array, spacing=oblique_reference.spacing, origin=(0.0, 0.0, 0.0),
                     direction=oblique_reference.direction)  # fmt: skip
    with pytest.raises(GeometryMismatchError, match="origin"):
        read_labels(out, shifted)
    identity = Volume(oblique_reference.array, spacing=oblique_reference.spacing, origin=oblique_reference.origin)
    with pytest.raises(GeometryMismatchError, match="orientation"):
        read_labels(out, identity)
    bigger = Volume(np.zeros((6, 7, 9)), spacing=oblique_reference.spacing, origin=oblique_reference.origin,
                    direction=oblique_reference.direction)  # fmt: skip
    with pytest.raises(GeometryMismatchError, match="size"):
        read_labels(out, bigger)
    # within tolerance (1e-4 relative): accepted
    close = Volume(oblique_reference.array, spacing=(0.70000001, 0.85, 2.5), origin=oblique_reference.origin,
                   direction=oblique_reference.direction)  # fmt: skip
    np.testing.assert_array_equal(read_labels(out, close), labels)


def test_read_labels_accepts_integral_float_masks(tmp_path: Path) -> None:
    ref = Volume(np.zeros((2, 3, 4), np.int16), spacing=(1.0, 1.0, 2.0))
    img = sitk.GetImageFromArray(np.array([0.0, 1.0, 2.0] * 8, np.float32).reshape(2, 3, 4))
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "float_seg.nrrd"))
    labels = read_labels(tmp_path / "float_seg.nrrd", ref)
    assert labels.dtype == np.uint8 and labels.max() == 2


@pytest.mark.shared
def test_labels_on_real_images(raw_dir: Path, tmp_path: Path) -> None:
    img = read_image(raw_dir / "brain1_image.nrrd")
    lab = read_labels(raw_dir / "brain1_label.nrrd", img)
    assert lab.shape == (25, 256, 256) and int(lab.sum()) > 100
    out = write_labels_nifti(lab, img, tmp_path / "brain1_seg.nii.gz")
    np.testing.assert_array_equal(read_labels(out, img), lab)
    saved = read_image(out)
    np.testing.assert_allclose(saved.direction, (1, 0, 0, 0, -1, 0, 0, 0, 1), atol=1e-6)
    np.testing.assert_allclose(saved.origin, img.origin, atol=1e-4)

    mr = read_image(raw_dir / "example_mr_sm.nii.gz")
    seg = read_labels(raw_dir / "example_seg_mr.nii.gz", mr)
    assert seg.dtype == np.uint8 and 5 in np.unique(seg)
    with pytest.raises(GeometryMismatchError):
        read_labels(raw_dir / "example_seg_mr.nii.gz", img)

    mgz = read_image(raw_dir / "norm.mgz")  # LIA oblique-free but permuted axes
    mask = (mgz.array > 100).astype(np.uint8)
    out = write_labels_nifti(mask, mgz, tmp_path / "norm_seg.nii.gz")
    np.testing.assert_array_equal(read_labels(out, mgz), mask)


# --- PNG masks ----------------------------------------------------------------------------------


def test_write_mask_png_labels_and_binary(tmp_path: Path) -> None:
    mask = np.zeros((1, 5, 6), np.int64)
    mask[0, 1:3, 2:5] = 1
    mask[0, 4, 0] = 7
    out = write_mask_png(mask, tmp_path / "m.png")
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (6, 5)
        np.testing.assert_array_equal(np.asarray(im), mask[0])
    out = write_mask_png(mask[0], tmp_path / "b.png", binary=True)
    np.testing.assert_array_equal(read_image(out).array[0], np.where(mask[0] > 0, 255, 0))
    # the reopened PNG fits a PNG reference image
    ref = Volume(np.zeros((1, 5, 6), np.uint8), is_2d=True)
    np.testing.assert_array_equal(read_labels(tmp_path / "m.png", ref)[0], mask[0])
    # a PNG has no geometry: it also fits a DICOM slice with real spacing/origin, but not another size
    dicom_like = Volume(np.zeros((1, 5, 6), np.int16), spacing=(0.66, 0.66, 5.0), origin=(-158.0, -179.0, -75.7))
    np.testing.assert_array_equal(read_labels(tmp_path / "m.png", dicom_like)[0], mask[0])
    with pytest.raises(GeometryMismatchError, match="size"):
        read_labels(tmp_path / "m.png", Volume(np.zeros((1, 6, 6), np.uint8)))


def test_write_mask_png_errors_keep_previous(tmp_path: Path) -> None:
    target = tmp_path / "m.png"
    write_mask_png(np.ones((3, 3), np.uint8), target)
    before = target.read_bytes()
    with pytest.raises(OutputWriteError, match="above 255"):
        write_mask_png(np.full((3, 3), 256), target)
    with pytest.raises(OutputWriteError, match="one 2D slice"):
        write_mask_png(np.zeros((2, 3, 3), np.uint8), target)
    with pytest.raises(OutputWriteError, match="PNG"):
        write_mask_png(np.zeros((3, 3), np.uint8), tmp_path / "m.jpg")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_labels_keep_a_sheared_nifti_affine(tmp_path: Path) -> None:
    """A NIfTI whose sform is sheared (e.g. gantry-tilted CT) opens through nibabel; its labels must be saved on
    that exact affine (not ITK's orthogonalised one) and open back onto the image."""
    import nibabel as nib

    affine = np.array([[0.8, 0.1, 0.0, -100.0], [0.0, 0.8, 0.0, -90.0], [0.0, 0.3, 2.5, 10.0], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(np.arange(20 * 16 * 6, dtype=np.int16).reshape(20, 16, 6) - 1000, affine)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    src = tmp_path / "tilted.nii.gz"
    nib.save(img, src)
    volume = read_image(src)
    labels = np.zeros(volume.shape_zyx, np.uint8)
    labels[2, 3:5, 4:8] = 1
    labels[5, 0, 0] = 2

    out = write_labels_nifti(labels, volume, tmp_path / "tilted_seg.nii.gz")

    saved = nib.load(out)
    np.testing.assert_allclose(saved.affine, affine, atol=1e-4)  # the image's own voxel -> world mapping
    np.testing.assert_array_equal(np.asarray(saved.dataobj).transpose(2, 1, 0), labels)
    np.testing.assert_array_equal(read_labels(out, volume), labels)  # "Open mask onto image" accepts it


# --- label maps re-open on the source's exact grid in nibabel and SimpleITK ----------------------------

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


@pytest.mark.shared
def test_gantry_tilted_series_mask_has_every_slice_at_its_position(raw_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    shift = 2.0 * np.tan(np.deg2rad(20.0))  # 20 degree tilt: each slice 0.73 mm further along y
    positions = [(5.0, -3.0 + i * shift, 7.0 + 2.0 * i) for i in range(10)]
    volume = read_dicom_series(ct_series(raw_dir, tmp_path / "tilt", positions))
    out = write_labels_nifti(_labels_for(volume), volume, tmp_path / "tilt_seg.nii.gz")
    affine = nib.load(str(out)).affine
    for i in (0, 4, 9):
        world_lps = _LPS @ (affine @ [0.0, 0.0, i, 1.0])[:3]
        np.testing.assert_allclose(world_lps, positions[i], atol=1e-3)
    np.testing.assert_array_equal(read_labels(out, volume), _labels_for(volume))
