"""Readers: real files from ../shared/data/raw plus synthetic files for every format branch and error."""

from __future__ import annotations

import gzip
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from synthetic_dicom import ct_series

from medsam_desktop.io import (
    CorruptFileError,
    DicomSeriesError,
    GeometryMismatchError,
    ImageNotFoundError,
    InvalidImageError,
    MedSAMIOError,
    UnsupportedFormatError,
    Volume,
    list_dicom_series,
    read_challenge_npz,
    read_dicom_series,
    read_image,
)

# ---------------------------------------------------------------------------------------------
# real files (skipped without ../shared)
# ---------------------------------------------------------------------------------------------

# name: (shape, dtype, spacing xyz, modality, is_2d)
RAW_EXPECTED = {
    "brain1_image.nrrd": ((25, 256, 256), np.int16, (0.78125, 0.78125, 6.5), "unknown", False),
    "brain1_label.nrrd": ((25, 256, 256), np.int32, (0.78125, 0.78125, 6.5), "unknown", False),
    "mha.mha": ((37, 64, 64), np.int16, (3.4375, 3.4375, 3.8), "unknown", False),
    "example_mr_sm.nii.gz": ((20, 91, 117), np.int16, (3.0, 3.0, 3.0), "unknown", False),
    "example_seg_mr.nii.gz": ((20, 91, 117), np.uint8, (3.0, 3.0, 3.0), "unknown", False),
    "norm.mgz": ((256, 256, 256), np.uint8, (1.0, 1.0, 1.0), "MR", False),
    "CT_small.dcm": ((1, 128, 128), np.int16, (0.661468, 0.661468, 5.0), "CT", True),
    "MR_small.dcm": ((1, 64, 64), np.int16, (0.3125, 0.3125, 1.0), "MR", True),
    "CR_chest_RG1_UNCR.dcm": ((1, 1955, 1841), np.uint16, (1.0, 1.0, 1.0), "XR", True),
    "US_multiframe_ybr.dcm": ((30, 240, 320, 3), np.uint8, (1.0, 1.0, 1.0), "US", False),
    "retina_rgb.jpg": ((1, 1411, 1411, 3), np.uint8, (1.0, 1.0, 1.0), "RGB", True),
    "MR2_UNCR_16bit.png": ((1, 1024, 1024), np.uint16, (1.0, 1.0, 1.0), "unknown", True),
    "ct_dicom_series": ((20, 512, 512), np.int16, (0.9765625, 0.9765625, 2.0), "CT", False),
}


@pytest.mark.shared
def test_every_raw_file_is_covered(raw_dir: Path) -> None:
    on_disk = {p.name for p in raw_dir.iterdir() if p.name != "README.md"}
    assert on_disk == set(RAW_EXPECTED)


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(RAW_EXPECTED))
def test_raw_file_shape_dtype_spacing_modality(raw_dir: Path, name: str) -> None:
    shape, dtype, spacing, modality, is_2d = RAW_EXPECTED[name]
    vol = read_image(raw_dir / name)
    assert vol.array.shape == shape
    assert vol.array.dtype == dtype
    np.testing.assert_allclose(vol.spacing, spacing, rtol=1e-5)
    assert vol.spacing_zyx == (vol.spacing[2], vol.spacing[1], vol.spacing[0])
    assert vol.modality == modality
    assert vol.is_2d is is_2d
    assert vol.is_rgb is (len(shape) == 4)
    assert vol.shape_zyx == shape[:3]
    assert vol.source_path == raw_dir / name
    assert np.isfinite(vol.array).all()


@pytest.mark.shared
def test_nrrd_geometry_and_labels(raw_dir: Path) -> None:
    img = read_image(raw_dir / "brain1_image.nrrd")
    lab = read_image(raw_dir / "brain1_label.nrrd")
    np.testing.assert_allclose(img.origin, (-99.609375, 99.609375, -78.0), atol=1e-3)
    np.testing.assert_allclose(img.direction, (1, 0, 0, 0, -1, 0, 0, 0, 1), atol=1e-9)
    assert (img.array.min(), img.array.max()) == (0, 3057)
    assert set(np.unique(lab.array).tolist()) == {0, 1}
    assert img.geometry == lab.geometry


@pytest.mark.shared
def test_nifti_label_values(raw_dir: Path) -> None:
    seg = read_image(raw_dir / "example_seg_mr.nii.gz").array
    labels = set(np.unique(seg).tolist())
    assert {0, 1, 2, 3, 5, 6, 23} <= labels  # background, spleen, kidneys, liver, stomach, aorta
    assert max(labels) < 50


@pytest.mark.shared
def test_mgz_lia_geometry_matches_sitk_nifti(raw_dir: Path, tmp_path: Path) -> None:
    """norm.mgz (LIA): our RAS->LPS conversion equals SimpleITK reading the same data as NIfTI."""
    import nibabel as nib

    vol = read_image(raw_dir / "norm.mgz")
    np.testing.assert_allclose(vol.direction, (1, 0, 0, 0, 0, -1, 0, -1, 0), atol=1e-6)
    np.testing.assert_allclose(vol.origin, (-121.767, 118.484, 127.561), atol=1e-3)
    mgh = nib.load(raw_dir / "norm.mgz")
    nii_path = tmp_path / "norm.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(mgh.dataobj), mgh.affine), nii_path)
    ref = sitk.ReadImage(str(nii_path))
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.direction, ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayViewFromImage(ref))


@pytest.mark.shared
def test_dicom_series_listing_and_hu(raw_dir: Path, dev_dir: Path) -> None:
    folder = raw_dir / "ct_dicom_series"
    series = list_dicom_series(folder)
    assert len(series) == 1
    assert series[0].n_files == 20 and series[0].modality == "CT"
    assert series[0].description == "CT Body 3.0"
    vol = read_dicom_series(folder)
    assert vol.description == "CT Body 3.0"
    assert vol.array.min() <= -1000 and vol.array.max() >= 1000  # HU: air and bone
    # The dev npz was made from this series with a W400/L40 window: same slice order and axes.
    imgs = np.load(dev_dir / "imgs" / "3DBox_CT_totalseg_abdomen-dicom.npz")["imgs"]
    windowed = np.round(np.clip((vol.array.astype(np.float64) + 160.0) / 400.0, 0, 1) * 255)
    assert np.abs(windowed - imgs).max() <= 1
    assert np.abs(windowed[::-1] - imgs).mean() > 5  # reversed slice order would be detected


@pytest.mark.shared
def test_ct_single_slice_keeps_hu(raw_dir: Path) -> None:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(raw_dir / "CT_small.dcm")
    hu = apply_modality_lut(ds.pixel_array, ds)
    vol = read_image(raw_dir / "CT_small.dcm")
    np.testing.assert_array_equal(vol.array[0], hu)
    assert vol.array.min() < -800  # air in HU, not raw stored values


@pytest.mark.shared
def test_monochrome1_xray_displays_bone_bright(raw_dir: Path) -> None:
    import pydicom

    vol = read_image(raw_dir / "CR_chest_RG1_UNCR.dcm")
    img = vol.array[0].astype(np.float64)
    right_lung = img[400:880, 320:720].mean()
    left_lung = img[400:880, 1120:1520].mean()
    mediastinum = img[320:960, 860:980].mean()
    assert mediastinum > right_lung + 3000 and mediastinum > left_lung + 3000
    raw = pydicom.dcmread(raw_dir / "CR_chest_RG1_UNCR.dcm").pixel_array.astype(np.int64)
    assert raw[320:960, 860:980].mean() < raw[400:880, 320:720].mean()  # stored data is inverted
    np.testing.assert_array_equal(img, (2**15 - 1) - raw)  # exact 15-bit inversion
    assert vol.extra["photometric"] == "MONOCHROME1"
    assert "window_center" not in vol.extra  # would refer to the un-inverted values


@pytest.mark.shared
def test_us_multiframe_ybr_becomes_rgb(raw_dir: Path) -> None:
    vol = read_image(raw_dir / "US_multiframe_ybr.dcm")
    arr = vol.array.astype(np.int16)
    assert arr.std() > 10
    # Grey-scale ultrasound: after YBR->RGB the channels agree (raw Y/Cb/Cr would differ by ~128).
    assert np.abs(arr[..., 0] - arr[..., 1]).mean() < 3
    assert np.abs(arr[..., 2] - arr[..., 1]).mean() < 3
    assert not np.array_equal(vol.slice(0), vol.slice(29))  # frames are distinct
    assert vol.slice(-1).shape == (240, 320, 3)


@pytest.mark.shared
def test_raw_volumes_match_dev_npz_orientation(raw_dir: Path, dev_dir: Path) -> None:
    for raw, npz in [
        ("brain1_image.nrrd", "3DBox_MR_pyradiomics_brain1.npz"),
        ("example_mr_sm.nii.gz", "3DBox_MR_totalseg_abdomen-mr.npz"),
    ]:
        vol = read_image(raw_dir / raw)
        case = read_challenge_npz(dev_dir / "imgs" / npz)
        assert case.volume.shape_zyx == vol.shape_zyx
        np.testing.assert_allclose(case.volume.spacing, vol.spacing, rtol=1e-5)
        a, b = vol.array.astype(np.float64).ravel(), case.volume.array.astype(np.float64).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.99


# ---------------------------------------------------------------------------------------------
# synthetic files
# ---------------------------------------------------------------------------------------------


def _oblique_affine(spacing: tuple[float, float, float], flip: bool = True) -> np.ndarray:
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rz @ rx @ (np.diag([-1.0, 1.0, 1.0]) if flip else np.eye(3))
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = (12.5, -40.25, 77.0)
    return affine


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_mgz_geometry_equals_sitk_reading_nibabel_nifti(tmp_path: Path, dtype: type) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    data = rng.integers(0, 200, size=(7, 9, 5)).astype(dtype)  # nibabel order (x, y, z)
    affine = _oblique_affine((0.9, 1.3, 2.5))
    nib.save(nib.MGHImage(data, affine), tmp_path / "t.mgz")
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "t.nii.gz")
    vol = read_image(tmp_path / "t.mgz")
    ref = sitk.ReadImage(str(tmp_path / "t.nii.gz"))
    assert vol.array.shape == (5, 9, 7) and vol.array.dtype == dtype
    np.testing.assert_array_equal(vol.array, sitk.GetArrayViewFromImage(ref))
    np.testing.assert_allclose(vol.spacing, ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(vol.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.direction, ref.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (0.9, 1.3, 2.5), atol=1e-5)
    assert vol.origin[0] == pytest.approx(-12.5, abs=1e-4)  # RAS x -> LPS -x


def _sitk_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def test_nifti_ct_heuristic_and_nan_replacement(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ct = np.full((3, 4, 5), -1000, np.int16)
    ct[1, 2, 3] = 400
    vol = read_image(_sitk_nifti(tmp_path / "ct.nii.gz", ct, (0.5, 0.5, 3.0)))
    assert vol.modality == "CT" and vol.array.dtype == np.int16
    assert vol.spacing_zyx == pytest.approx((3.0, 0.5, 0.5))

    arr = np.arange(60, dtype=np.float32).reshape(3, 4, 5) + 10
    arr[0, 0, 0] = np.nan
    arr[2, 3, 4] = np.inf
    with caplog.at_level(logging.WARNING):  # (ITK's NIfTI reader zeroes NaNs itself; NRRD keeps them)
        vol = read_image(_sitk_nifti(tmp_path / "nan.nrrd", arr))
    assert vol.array[0, 0, 0] == 11.0 and vol.array[2, 3, 4] == 11.0  # finite minimum
    assert vol.array[1, 1, 1] == arr[1, 1, 1]
    assert "NaN" in caplog.text


def test_all_nan_and_time_series_are_refused(tmp_path: Path) -> None:
    nan = np.full((2, 3, 4), np.nan, np.float32)
    with pytest.raises(InvalidImageError, match="NaN"):
        read_image(_sitk_nifti(tmp_path / "nan.mha", nan))
    ts = sitk.JoinSeries([sitk.Image([4, 3, 2], sitk.sitkInt16)] * 3)  # 4D: t = 3
    sitk.WriteImage(ts, str(tmp_path / "ts.nii.gz"))
    with pytest.raises(InvalidImageError, match="4D"):
        read_image(tmp_path / "ts.nii.gz")
    one = sitk.JoinSeries([sitk.Image([4, 3, 2], sitk.sitkInt16)])  # 4D with t = 1 is a 3D volume
    one.SetSpacing((0.5, 0.6, 0.7, 1.0))
    sitk.WriteImage(one, str(tmp_path / "one.nii.gz"))
    vol = read_image(tmp_path / "one.nii.gz")
    assert vol.array.shape == (2, 3, 4)
    np.testing.assert_allclose(vol.spacing, (0.5, 0.6, 0.7), rtol=1e-6)


def test_too_large_is_refused_from_header(tmp_path: Path) -> None:
    for name, dims in [("big2d.mhd", "20000 20000 1"), ("big3d.mhd", "2048 2048 1024")]:
        (tmp_path / name).write_text(
            f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\nElementDataFile = missing.raw\n"
        )
        with pytest.raises(InvalidImageError, match="too large") as info:
            read_image(tmp_path / name)
        assert name in str(info.value)


def test_2d_sitk_image_is_embedded_in_3d(tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.arange(12, dtype=np.uint16).reshape(3, 4))
    img.SetSpacing((0.25, 0.5))
    img.SetOrigin((3.0, 4.0))
    sitk.WriteImage(img, str(tmp_path / "flat.mha"))
    vol = read_image(tmp_path / "flat.mha")
    assert vol.array.shape == (1, 3, 4) and vol.is_2d
    assert vol.spacing == (0.25, 0.5, 1.0) and vol.origin == (3.0, 4.0, 0.0)


# --- 2D pictures ---------------------------------------------------------------------------------


def _png(tmp_path: Path, name: str, img: Image.Image, fmt: str | None = None) -> Path:
    path = tmp_path / name
    img.save(path, format=fmt)
    return path


def test_png_grey_8_and_16_bit(tmp_path: Path) -> None:
    g8 = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    vol = read_image(_png(tmp_path, "g8.png", Image.fromarray(g8)))
    assert vol.array.shape == (1, 12, 10) and vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array[0], g8)
    assert vol.is_2d and not vol.is_rgb and vol.modality == "unknown"
    assert vol.spacing == (1.0, 1.0, 1.0) and vol.origin == (0.0, 0.0, 0.0)

    g16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    vol = read_image(_png(tmp_path, "g16.png", Image.fromarray(g16)))
    assert vol.array.dtype == np.uint16
    np.testing.assert_array_equal(vol.array[0], g16)
    assert vol.array.max() > 255


def test_png_colour_variants(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    vol = read_image(_png(tmp_path, "rgb.png", Image.fromarray(rgb)))
    assert vol.array.shape == (1, 6, 7, 3) and vol.modality == "RGB" and vol.is_rgb
    np.testing.assert_array_equal(vol.array[0], rgb)

    rgba = np.dstack([rgb, np.full((6, 7), 7, np.uint8)])
    vol = read_image(_png(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(vol.array[0], rgb)  # alpha dropped, colour untouched

    pal = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    vol = read_image(_png(tmp_path, "pal.png", pal))
    assert vol.array.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(vol.array[0, 0, 0], (255, 0, 0))
    np.testing.assert_array_equal(vol.array[0, 1, 0], (0, 0, 255))

    grey = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    vol = read_image(_png(tmp_path, "grey_rgb.png", Image.fromarray(np.dstack([grey] * 3))))
    assert vol.array.shape == (1, 5, 4) and vol.modality == "unknown"
    np.testing.assert_array_equal(vol.array[0], grey)

    la = Image.fromarray(np.dstack([grey, np.zeros_like(grey)]), "LA")
    np.testing.assert_array_equal(read_image(_png(tmp_path, "la.png", la)).array[0], grey)


def test_png_bool_and_rgb16(tmp_path: Path) -> None:
    bits = np.array([[True, False, True], [False, False, True]])
    vol = read_image(_png(tmp_path, "bits.png", Image.fromarray(bits)))
    assert vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array[0], bits.astype(np.uint8) * 255)

    rgb16 = (np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000).astype(np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(rgb16, isVector=True), str(tmp_path / "rgb16.png"))
    vol = read_image(tmp_path / "rgb16.png")
    assert vol.array.shape == (1, 4, 5, 3) and vol.array.dtype == np.uint16
    np.testing.assert_array_equal(vol.array[0], rgb16)


def test_jpeg_bmp_and_multipage_tiff(tmp_path: Path) -> None:
    grad = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))
    vol = read_image(_png(tmp_path, "g.jpg", Image.fromarray(grad), "JPEG"))
    assert vol.array.shape == (1, 8, 16) and np.abs(vol.array[0].astype(int) - grad).max() < 12

    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200
    vol = read_image(_png(tmp_path, "c.bmp", Image.fromarray(rgb), "BMP"))
    np.testing.assert_array_equal(vol.array[0], rgb)

    pages = [np.full((6, 5), v, np.uint16) for v in (10, 2000, 40000)]
    frames = [Image.fromarray(p) for p in pages]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    vol = read_image(tmp_path / "stack.tif")
    assert vol.array.shape == (3, 6, 5) and vol.array.dtype == np.uint16 and not vol.is_2d
    np.testing.assert_array_equal(vol.array[:, 0, 0], (10, 2000, 40000))


def test_magic_bytes_beat_wrong_extension(tmp_path: Path) -> None:
    g8 = np.full((4, 4), 9, np.uint8)
    misnamed = tmp_path / "really_a_png.nii"
    Image.fromarray(g8).save(misnamed, format="PNG")
    vol = read_image(misnamed)
    assert vol.array.shape == (1, 4, 4) and int(vol.array[0, 0, 0]) == 9

    nii = _sitk_nifti(tmp_path / "vol.nii.gz", np.ones((2, 3, 4), np.int16))
    renamed = tmp_path / "vol.dat"
    renamed.write_bytes(nii.read_bytes())
    assert read_image(renamed).array.shape == (2, 3, 4)


# --- DICOM synthesised from pydicom's bundled CT_small.dcm ---------------------------------------


def _two_series_folder(folder: Path) -> dict[str, int]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir()
    src = get_testdata_file("CT_small.dcm")
    counts = {}
    for series, n, desc in (("A", 3, "axial A"), ("B", 2, "axial B")):
        uid = generate_uid()
        counts[uid] = n
        for i in range(n):
            ds = pydicom.dcmread(src)
            ds.SeriesInstanceUID = uid
            ds.SeriesDescription = desc
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + 2.5 * i]
            arr = ds.pixel_array.copy()
            arr[0, 0] = 100 * i  # marks the slice index
            ds.PixelData = arr.tobytes()
            ds.save_as(folder / f"{series}{i}.dcm")
    return counts


def test_dicom_folder_with_two_series(tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    counts = _two_series_folder(folder)
    series = list_dicom_series(folder)
    assert [s.n_files for s in series] == [3, 2]
    assert [s.description for s in series] == ["axial A", "axial B"]
    assert {s.uid: s.n_files for s in series} == counts
    assert all(s.modality == "CT" for s in series)

    vol = read_image(folder)  # default: the series with most files
    assert vol.array.shape == (3, 128, 128) and not vol.is_2d and vol.modality == "CT"
    assert vol.spacing[2] == pytest.approx(2.5)
    np.testing.assert_array_equal(vol.array[:, 0, 0], np.array([0, 100, 200]) - 1024)  # sorted, HU

    small = read_dicom_series(folder, series_uid=series[1].uid)
    assert small.array.shape == (2, 128, 128) and small.description == "axial B"

    with pytest.raises(DicomSeriesError, match="not in this folder"):
        read_dicom_series(folder, series_uid="1.2.3.4")


def test_dicom_series_found_in_subfolder_and_empty_folder(tmp_path: Path) -> None:
    _two_series_folder(tmp_path / "inner")
    nested = tmp_path / "outer"
    nested.mkdir()
    (tmp_path / "inner").rename(nested / "inner")
    assert [s.n_files for s in list_dicom_series(nested)] == [3, 2]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DicomSeriesError, match="no DICOM") as info:
        read_image(empty)
    assert "empty" in str(info.value)


# --- errors ---------------------------------------------------------------------------------------


def _assert_one_line(err: MedSAMIOError, name: str) -> None:
    text = str(err)
    assert "\n" not in text and name in text and len(text) < 400
    assert "Exception thrown" not in text and "sitk::ERROR" not in text
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err) and str(clone) == text


def test_zero_byte_missing_and_unsupported(tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty") as info:
        read_image(empty)
    _assert_one_line(info.value, "empty.nii.gz")

    with pytest.raises(ImageNotFoundError) as info:
        read_image(tmp_path / "nope.nrrd")
    _assert_one_line(info.value, "nope.nrrd")

    odd = tmp_path / "notes.xyz"
    odd.write_bytes(b"just some text, not an image")
    with pytest.raises(UnsupportedFormatError) as info:
        read_image(odd)
    _assert_one_line(info.value, "notes.xyz")

    fake = tmp_path / "fake.nii.gz"
    fake.write_text("this is not a NIfTI file")
    with pytest.raises(CorruptFileError, match="not a valid NIfTI") as info:
        read_image(fake)
    _assert_one_line(info.value, "fake.nii.gz")

    bad_mha = tmp_path / "bad.mha"
    bad_mha.write_text("ObjectType = Image\nNDims = banana\n")
    with pytest.raises(CorruptFileError) as info:
        read_image(bad_mha)
    _assert_one_line(info.value, "bad.mha")


@pytest.mark.parametrize("name", ["trunc.nii.gz", "trunc.nii", "trunc.nrrd", "trunc.mgz"])
def test_truncated_files_are_corrupt(tmp_path: Path, name: str) -> None:
    import nibabel as nib

    rng = np.random.default_rng(2)
    arr = rng.integers(-1000, 1000, size=(16, 32, 32)).astype(np.int16)
    full = tmp_path / f"full_{name}"
    if name.endswith(".mgz"):
        nib.save(nib.MGHImage(arr, np.eye(4)), full)
    else:
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(full), True)
    assert read_image(full).array.shape[0] in (16, 32)
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(CorruptFileError) as info:
        read_image(tmp_path / name)
    _assert_one_line(info.value, name)


def test_multimember_gzip_nifti_is_not_flagged(tmp_path: Path) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    raw = _sitk_nifti(tmp_path / "v.nii", arr).read_bytes()
    half = len(raw) // 2
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    np.testing.assert_array_equal(read_image(tmp_path / "multi.nii.gz").array, arr)


def test_corrupt_picture_is_typed(tmp_path: Path) -> None:
    path = _png(tmp_path, "cut.png", Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64), np.uint8)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFileError) as info:
        read_image(path)
    _assert_one_line(info.value, "cut.png")


# --- Volume -------------------------------------------------------------------------------------


def test_volume_contract() -> None:
    arr = np.zeros((4, 5, 6), np.int16)
    vol = Volume(arr, spacing=(0.5, 0.6, 2.0), origin=(1, 2, 3), modality="CT")
    assert vol.shape_zyx == (4, 5, 6) and vol.n_slices == 4 and not vol.is_2d
    assert vol.spacing_zyx == (2.0, 0.6, 0.5)
    assert vol.slice(3).shape == (5, 6)
    with pytest.raises(IndexError):
        vol.slice(4)
    ref = vol.to_sitk_reference()
    assert ref.GetSize() == (6, 5, 4) and ref.GetSpacing() == (0.5, 0.6, 2.0) and ref.GetOrigin() == (1, 2, 3)
    assert vol.to_sitk().GetPixelID() == sitk.sitkInt16
    rgb = vol.with_array(np.zeros((4, 5, 6, 3), np.uint8))
    assert rgb.is_rgb and rgb.spacing == vol.spacing and rgb.modality == "CT"
    with pytest.raises(GeometryMismatchError):
        vol.with_array(np.zeros((4, 5, 7)))
    with pytest.raises(ValueError):
        Volume(np.zeros((5, 6)))
    with pytest.raises(ValueError):
        Volume(np.zeros((1, 5, 6, 4)))
    with pytest.raises(ValueError):
        Volume(arr, modality="CAT")
    assert Volume(np.zeros((1, 5, 6))).is_2d


def test_import_pulls_no_gui_torch_or_lazy_libraries() -> None:
    code = (
        "import sys, medsam_desktop.io\n"
        "lazy = {'PyQt6', 'torch', 'nibabel', 'pydicom'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in lazy)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_nifti_nibabel_fallback_matches_sitk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When SimpleITK refuses a NIfTI, the nibabel path must give the same voxels and geometry."""
    import nibabel as nib

    from medsam_desktop.io import readers

    data = np.random.default_rng(4).integers(-5, 90, size=(6, 5, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, _oblique_affine((1.1, 0.6, 3.0))), tmp_path / "o.nii.gz")
    direct = read_image(tmp_path / "o.nii.gz")

    def refuse(path: Path, image_io: str = "") -> Volume:
        raise CorruptFileError("refused", path=path)

    monkeypatch.setattr(readers, "read_sitk_image", refuse)
    fallback = read_image(tmp_path / "o.nii.gz")
    np.testing.assert_array_equal(fallback.array, direct.array)
    np.testing.assert_allclose(fallback.spacing, direct.spacing, atol=1e-5)
    np.testing.assert_allclose(fallback.origin, direct.origin, atol=1e-4)
    np.testing.assert_allclose(fallback.direction, direct.direction, atol=1e-5)


def test_dicom_without_preamble_or_extension(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(tmp_path / "IM0001", enforce_file_format=True)
    raw = (tmp_path / "IM0001").read_bytes()
    assert raw[128:132] == b"DICM"
    (tmp_path / "IM0002").write_bytes(raw[132:])  # strip preamble + "DICM": starts with group 0002
    for name in ("IM0001", "IM0002"):
        vol = read_image(tmp_path / name)
        assert vol.shape_zyx == (1, 128, 128) and vol.modality == "CT"


# --- DICOM series geometry: slices must be evenly spaced ------------------------------------------------


@pytest.mark.shared
def test_series_whose_spacing_drifts_is_refused(raw_dir: Path, tmp_path: Path) -> None:
    """Gaps 2.0 then 2.18 mm (each within 10% of the median): ITK averages them and puts slices ~1 mm off."""
    pytest.importorskip("pydicom")
    z = np.cumsum([0.0] + [2.0] * 9 + [2.18] * 10)
    with pytest.raises(DicomSeriesError, match="not evenly spaced") as info:
        read_dicom_series(ct_series(raw_dir, tmp_path / "drift", [(0.0, 0.0, float(v)) for v in z]))
    assert "\n" not in str(info.value)
    regular = read_dicom_series(ct_series(raw_dir, tmp_path / "ok", [(0.0, 0.0, 2.0 * i) for i in range(6)]))
    np.testing.assert_allclose(regular.spacing[2], 2.0, atol=1e-6)
    np.testing.assert_allclose(regular.direction, np.eye(3).ravel(), atol=1e-9)


# --- Analyze / NIfTI pairs: a truncated .img is refused, ITK says nothing -------------------------------------
@pytest.mark.parametrize("kind", ["analyze", "nifti-pair"])
def test_a_pair_with_a_truncated_img_is_refused_in_one_line(tmp_path: Path, kind: str, capfd) -> None:
    """ITK reads the missing voxels of a short .img as zeros without a word; the reader refuses the pair."""
    import nibabel as nib

    data = np.random.default_rng(0).random((20, 30, 10)).astype(np.float32)
    cls = nib.AnalyzeImage if kind == "analyze" else nib.Nifti1Pair
    nib.save(cls(data, np.eye(4)), str(tmp_path / "a.hdr"))
    assert read_image(tmp_path / "a.hdr").array.shape == (10, 30, 20)  # complete: read
    img = tmp_path / "a.img"
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 3])
    with pytest.raises(CorruptFileError, match=r"a\.img is truncated"):
        read_image(tmp_path / "a.hdr")
    err = capfd.readouterr().err
    assert "WARNING: In" not in err and "SimpleITK-build" not in err  # no ITK noise on stderr


def test_rt_dose_opens_in_gy_single_frame_or_not() -> None:
    """A single-frame RT dose (GDCM refuses it) is read with pydicom; every RT dose is in Gy (Dose Grid Scaling)."""
    import pydicom
    from pydicom.data import get_testdata_file

    for name in ("rtdose_1frame.dcm", "rtdose_rle_1frame.dcm", "rtdose.dcm"):
        path = get_testdata_file(name)
        if path is None:
            pytest.skip(f"pydicom's test file {name} is not installed")
        ds = pydicom.dcmread(path)
        volume = read_image(path)
        frames = np.asarray(ds.pixel_array).reshape(-1, int(ds.Rows), int(ds.Columns))
        np.testing.assert_allclose(volume.array, frames * float(ds.DoseGridScaling), rtol=1e-6)
        assert volume.spacing[:2] == (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]))
        np.testing.assert_allclose(volume.origin, [float(v) for v in ds.ImagePositionPatient])
        assert volume.array.shape[0] == len(frames)
