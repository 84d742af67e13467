"""Writers: atomic replacement, NIfTI label maps on the exact reference geometry, PNG masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsam_desktop.io import (
    GeometryMismatchError,
    OutputWriteError,
    Volume,
    atomic_write,
    read_image,
    read_labels,
    write_labels_nifti,
    write_mask_png,
)


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
