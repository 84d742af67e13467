"""Bad inputs, table-driven, through ``read_image``/``read_labels`` and the ``medsam-segment``/``medsam-infer`` CLIs.

Library: a typed :class:`MedSAMIOError`, one line, naming the file and saying what to do. CLIs: non-zero exit,
exactly one ``error:`` line on stderr, no traceback, no (partial) output file. Inputs that are odd but usable
(NaN voxels, unusual dtypes, RGBA/palette, two DICOM series) must still work. Every file is generated here.
"""

from __future__ import annotations

import logging
import resource
import struct
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fakes import BoxBackend, SideEffect, model_args
from PIL import Image

from medsam_desktop.cli import infer, segment
from medsam_desktop.core.predictor import Predictor
from medsam_desktop.io import (
    CorruptFileError,
    DicomSeriesError,
    GeometryMismatchError,
    InvalidImageError,
    InvalidNpzError,
    MedSAMIOError,
    UnsupportedFormatError,
    Volume,
    read_image,
    read_labels,
    write_labels_nifti,
)

Builder = Callable[[Path], Path]


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> BoxBackend:
    """Both CLIs get an instant backend whose mask is the prompt box (the real --weights path is covered by
    test_infer_cli_runs_odd_but_valid_boxes and tests/test_cli_tools.py)."""
    backend = BoxBackend()
    for module in (segment, infer):
        monkeypatch.setattr(module, "predictor_from_args", lambda args: Predictor(backend))
    return backend


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


# --- file builders ------------------------------------------------------------------------------


def _nifti(path: Path, array: np.ndarray, is_vector: bool = False) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=is_vector), str(path), True)
    return path


def zero_byte_nifti(tmp: Path) -> Path:
    path = tmp / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def truncated_nifti(tmp: Path) -> Path:
    arr = np.random.default_rng(0).integers(-1000, 1000, (16, 32, 32)).astype(np.int16)
    data = _nifti(tmp / "full.nii.gz", arr).read_bytes()
    path = tmp / "truncated.nii.gz"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def text_as_nifti(tmp: Path) -> Path:
    path = tmp / "notes.nii.gz"
    path.write_text("this is a text file, not a NIfTI volume\n")
    return path


def text_as_png(tmp: Path) -> Path:
    path = tmp / "picture.png"
    path.write_text("not a picture at all")
    return path


def unknown_magic(tmp: Path) -> Path:
    path = tmp / "scan.dat"
    path.write_bytes(bytes(range(256)) * 4)
    return path


def four_d(tmp: Path) -> Path:
    return _nifti(tmp / "time_series.nii.gz", np.zeros((3, 4, 5, 6), np.float32))


def one_voxel(tmp: Path) -> Path:
    return _nifti(tmp / "one_voxel.nii.gz", np.zeros((1, 1, 1), np.int16))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(tmp: Path, size: int = 20000, palette: bool = False) -> Path:
    """A ``size`` x ``size`` 1-bit PNG (grey or palette) written row by row: a few KB, no big allocation."""
    path = tmp / ("huge_palette.png" if palette else "huge_1bit.png")
    row = b"\x00" * (1 + (size + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(size)) + comp.flush()
    header = struct.pack(">IIBBBBB", size, size, 1, 3 if palette else 0, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if palette:
        chunks.append(_png_chunk(b"PLTE", b"\x00\x00\x00\xff\x00\x00"))
    chunks += [_png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
    return path


def huge_palette_png(tmp: Path) -> Path:
    return huge_png(tmp, palette=True)


def _dicom_series(
    folder: Path,
    z_positions: list[float],
    orientations: dict[int, list[float]] | None = None,
    description: str = "axial",
) -> str:
    """CT slices made from pydicom's bundled CT_small.dcm at the given z positions; returns the series UID."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for i, z in enumerate(z_positions):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = description
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, float(z)]
        if orientations and i in orientations:
            ds.ImageOrientationPatient = orientations[i]
        ds.save_as(folder / f"{uid[-6:]}_{i:03d}.dcm")
    return uid


def dicom_two_series(tmp: Path) -> Path:
    _dicom_series(tmp / "two_series", [0.0, 2.5, 5.0], description="big")
    _dicom_series(tmp / "two_series", [0.0, 2.5], description="small")
    return tmp / "two_series"


def dicom_missing_slice(tmp: Path) -> Path:
    _dicom_series(tmp / "missing_slice", [0.0, 2.5, 5.0, 10.0, 12.5])
    return tmp / "missing_slice"


def dicom_mixed_orientation(tmp: Path) -> Path:
    _dicom_series(tmp / "mixed_orientation", [0.0, 2.5, 5.0, 7.5], {2: [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]})
    return tmp / "mixed_orientation"


def dicom_without_pixels(tmp: Path) -> Path:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp / "no_pixels.dcm")
    return tmp / "no_pixels.dcm"


def npz_object_array(tmp: Path) -> Path:
    path = tmp / "2DBox_CT_pickle.npz"
    boom = np.empty(1, dtype=object)
    boom[0] = SideEffect(tmp / "PWNED")
    np.savez(path, imgs=np.zeros((20, 20, 3), np.uint8), boxes=np.array([[1, 1, 10, 10]]), gts=boom)
    return path


def npz_missing_key(tmp: Path) -> Path:
    np.savez(tmp / "2DBox_CT_nobox.npz", imgs=np.zeros((20, 20, 3), np.uint8))
    return tmp / "2DBox_CT_nobox.npz"


def npz_extra_key(tmp: Path) -> Path:
    np.savez(
        tmp / "2DBox_CT_extra.npz",
        imgs=np.zeros((20, 20, 3), np.uint8),
        boxes=np.array([[1, 1, 9, 9]]),
        secret=np.ones(3),
    )
    return tmp / "2DBox_CT_extra.npz"


def nan_voxels(tmp: Path) -> Path:
    arr = np.random.default_rng(1).random((3, 40, 48)).astype(np.float32) * 100
    arr[1, 5, 5], arr[2, 6, 6], arr[0, 7, 7] = np.nan, np.inf, -np.inf
    return _nifti(tmp / "nan.nrrd", arr)  # NRRD keeps NaN (ITK's NIfTI reader zeroes them itself)


def nan_voxels_nifti(tmp: Path) -> Path:
    arr = np.random.default_rng(1).random((3, 40, 48)).astype(np.float32) * 100
    arr[1, 5, 5], arr[2, 6, 6] = np.nan, np.inf
    return _nifti(tmp / "nan.nii.gz", arr)


def bool_png(tmp: Path) -> Path:
    img = Image.fromarray(np.random.default_rng(2).random((40, 48)) > 0.5).convert("1")
    img.save(tmp / "bool.png")
    return tmp / "bool.png"


def int64_nifti(tmp: Path) -> Path:
    return _nifti(tmp / "int64.nii.gz", np.random.default_rng(3).integers(-5, 10**9, (3, 40, 48), dtype=np.int64))


def float64_nifti(tmp: Path) -> Path:
    return _nifti(tmp / "float64.nii.gz", np.random.default_rng(4).normal(0, 1e6, (3, 40, 48)))


def rgba_png(tmp: Path) -> Path:
    arr = np.random.default_rng(5).integers(0, 255, (40, 48, 4), dtype=np.uint8)
    Image.fromarray(arr, "RGBA").save(tmp / "rgba.png")
    return tmp / "rgba.png"


def palette_png(tmp: Path) -> Path:
    arr = np.random.default_rng(6).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp / "palette.png")
    return tmp / "palette.png"


# --- expectations -------------------------------------------------------------------------------

#: id -> (builder, error type, text the message must contain)
READ_ERRORS: dict[str, tuple[Builder, type[MedSAMIOError], str]] = {
    "zero_byte_nii_gz": (zero_byte_nifti, CorruptFileError, "empty"),
    "truncated_nii_gz": (truncated_nifti, CorruptFileError, "truncated"),
    "wrong_extension_nii": (text_as_nifti, CorruptFileError, "not a valid NIfTI"),
    "wrong_extension_png": (text_as_png, CorruptFileError, "not a valid picture"),
    "unknown_magic": (unknown_magic, UnsupportedFormatError, "not supported"),
    "four_d": (four_d, InvalidImageError, "4D"),
    "one_voxel": (one_voxel, InvalidImageError, "too small"),
    "huge_png_1bit": (huge_png, InvalidImageError, "too large"),
    "huge_png_palette": (huge_palette_png, InvalidImageError, "too large"),
    "dicom_missing_slice": (dicom_missing_slice, DicomSeriesError, "slice is probably missing"),
    "dicom_mixed_orientation": (dicom_mixed_orientation, DicomSeriesError, "different orientations"),
    "dicom_without_pixels": (dicom_without_pixels, CorruptFileError, "no pixel data"),
    "npz_object_array": (npz_object_array, InvalidNpzError, "Python objects"),
    "npz_missing_key": (npz_missing_key, InvalidNpzError, "missing boxes"),
    "npz_extra_key": (npz_extra_key, InvalidNpzError, "unexpected secret"),
}

#: id -> (builder, expected array shape, expected dtype)
READ_OK: dict[str, tuple[Builder, tuple[int, ...], type]] = {
    "nan_voxels": (nan_voxels, (3, 40, 48), np.float32),
    "nan_voxels_nifti": (nan_voxels_nifti, (3, 40, 48), np.float32),
    "bool_png": (bool_png, (1, 40, 48), np.uint8),
    "int64": (int64_nifti, (3, 40, 48), np.int64),
    "float64": (float64_nifti, (3, 40, 48), np.float64),
    "rgba_png": (rgba_png, (1, 40, 48, 3), np.uint8),
    "palette_png": (palette_png, (1, 40, 48, 3), np.uint8),
    "dicom_two_series": (dicom_two_series, (3, 128, 128), np.int16),
}


def _assert_message(err: MedSAMIOError, path: Path, text: str) -> None:
    message = str(err)
    assert "\n" not in message, message
    assert path.name in message, f"the message does not name {path.name}: {message}"
    assert text in message, f"expected {text!r} in: {message}"
    assert message.rstrip().endswith("."), f"no action sentence: {message}"
    assert err.action and len(err.action) > 10, f"no action in: {message}"
    assert "Traceback" not in message and "sitk::ERROR" not in message and len(message) < 400


def _cli(main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def _assert_no_leftovers(folder: Path, allowed: set[str]) -> None:
    leftovers = {p.name for p in folder.iterdir()} - allowed
    assert not leftovers, f"unexpected files left behind: {sorted(leftovers)}"


# --- read_image ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(READ_ERRORS))
def test_read_image_refuses_with_one_actionable_line(tmp_path: Path, case: str) -> None:
    build, error, text = READ_ERRORS[case]
    path = build(tmp_path)
    with warnings.catch_warnings(), pytest.raises(error) as info:
        warnings.simplefilter("error")  # no raw library warnings (e.g. Pillow's DecompressionBombWarning)
        read_image(path)
    _assert_message(info.value, path, text)
    assert not (tmp_path / "PWNED").exists(), "an object array was unpickled"


@pytest.mark.parametrize("case", sorted(READ_OK))
def test_read_image_accepts_odd_but_usable_inputs(tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    build, shape, dtype = READ_OK[case]
    path = build(tmp_path)
    with caplog.at_level(logging.INFO, logger="medsam_desktop"), warnings.catch_warnings():
        warnings.simplefilter("error")  # problems are reported through logging, not raw warnings
        vol = read_image(path)
    assert vol.array.shape == shape and vol.array.dtype == dtype, (vol.array.shape, vol.array.dtype)
    if vol.array.dtype.kind == "f":
        assert np.isfinite(vol.array).all()
    if case == "nan_voxels":
        assert any("NaN/Inf" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        assert vol.array[1, 5, 5] == np.nanmin(np.where(np.isfinite(vol.array), vol.array, np.nan))
    if case == "bool_png":
        assert set(np.unique(vol.array)) == {0, 255}
    if case == "dicom_two_series":
        assert vol.description == "big" and any("2 series" in r.getMessage() for r in caplog.records)


def test_huge_png_is_refused_without_allocating(tmp_path: Path) -> None:
    path = huge_png(tmp_path)
    assert path.stat().st_size < 200_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImageError, match="too large"):
            read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert peak < 50e6, f"python allocations peaked at {peak / 1e6:.0f} MB"
    assert rss_growth_mb < 500, f"peak RSS grew by {rss_growth_mb:.0f} MB"


def test_nothing_is_written_next_to_refused_inputs(tmp_path: Path) -> None:
    for build, error, _ in READ_ERRORS.values():
        folder = tmp_path / build.__name__
        folder.mkdir()
        path = build(folder)
        before = sorted(p.name for p in folder.rglob("*"))
        with pytest.raises(error):
            read_image(path)
        assert sorted(p.name for p in folder.rglob("*")) == before


# --- read_labels: a mask that does not fit its image ---------------------------------------------


@pytest.mark.parametrize(
    ("what", "text"),
    [("shape", "size 12x10x4 vs 12x10x5"), ("spacing", "spacing"), ("origin", "origin"), ("direction", "orientation")],
)
def test_read_labels_refuses_mask_of_another_image(tmp_path: Path, what: str, text: str) -> None:
    ref = Volume(np.zeros((5, 10, 12), np.int16), spacing=(0.8, 0.8, 2.0), origin=(1.0, 2.0, 3.0))
    labels = np.zeros((4, 10, 12) if what == "shape" else (5, 10, 12), np.uint8)
    other = Volume(
        labels,
        spacing=(0.8, 0.9, 2.0) if what == "spacing" else ref.spacing,
        origin=(1.0, 2.0, 9.0) if what == "origin" else ref.origin,
        direction=(0, 1, 0, 1, 0, 0, 0, 0, 1) if what == "direction" else ref.direction,
    )
    path = write_labels_nifti(labels, other, tmp_path / "mask.nii.gz")
    with pytest.raises(GeometryMismatchError) as info:
        read_labels(path, ref)
    _assert_message(info.value, path, text)


# --- medsam-segment -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(READ_ERRORS))
def test_segment_cli_refuses_bad_images(
    tmp_path: Path, case: str, random_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, _, text = READ_ERRORS[case]
    (tmp_path / "in").mkdir()
    src = build(tmp_path / "in")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = _cli(
        segment.main,
        [
            str(src),
            "--box",
            "1",
            "1",
            "8",
            "8",
            "--slice",
            "0",
            "-o",
            str(out_dir / "mask.nii.gz"),
            *model_args(random_weights),
        ],
        capsys,
    )
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and text in lines[0] and src.name in lines[0], err
    assert "Traceback" not in err and "Warning" not in err, err
    _assert_no_leftovers(out_dir, set())
    assert not (tmp_path / "in" / "PWNED").exists()


@pytest.mark.parametrize("case", sorted(READ_OK))
def test_segment_cli_handles_odd_but_usable_images(
    tmp_path: Path, case: str, random_weights: Path, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    build, shape, _ = READ_OK[case]
    src = build(tmp_path)
    out = tmp_path / ("mask.png" if shape[0] == 1 else "mask.nii.gz")
    code, err = _cli(
        segment.main,
        [
            str(src),
            "--box",
            "4",
            "4",
            "30",
            "30",
            "--slice",
            "1" if shape[0] > 1 else "0",
            "-o",
            str(out),
            "--label",
            "7",
            *model_args(random_weights),
        ],
        capsys,
    )
    assert code == 0, err
    assert not _error_lines(err) and "Traceback" not in err
    labels = np.asarray(Image.open(out)) if out.suffix == ".png" else sitk.GetArrayFromImage(sitk.ReadImage(out))
    assert labels.shape == (shape[1], shape[2]) if out.suffix == ".png" else labels.shape == shape[:3]
    assert set(np.unique(labels)) == {0, 7} and fake_model.encodes == 1
    assert np.abs(np.subtract(_bbox(labels == 7 if labels.ndim == 2 else labels[1] == 7), [4, 4, 30, 30])).max() <= 1
    if case == "nan_voxels":
        assert "NaN/Inf" in err and "warning:" in err


#: --box values -> (exit code, expected mask bbox or text of the error line)
SEGMENT_BOXES: dict[str, tuple[list[str], int, list[int] | str]] = {
    "partly_negative": (["-5", "-5", "20", "20"], 0, [0, 0, 20, 20]),  # clipped to the image
    "past_far_edge": (["30", "20", "90", "70"], 0, [30, 20, 47, 39]),  # clipped to the 48x40 image
    "inverted": (["30", "30", "4", "4"], 0, [4, 4, 30, 30]),  # corners sorted
    "zero_area": (["10", "10", "10", "30"], 1, "no area"),
    "outside": (["100", "100", "140", "140"], 1, "outside"),
    "all_negative": (["-30", "-30", "-2", "-2"], 1, "outside"),
    "nan": (["nan", "1", "20", "20"], 1, "finite"),
    "inf": (["1", "1", "inf", "20"], 1, "finite"),
}


@pytest.mark.parametrize("case", sorted(SEGMENT_BOXES))
@pytest.mark.parametrize("zrange", [False, True], ids=["slice", "zrange"])
def test_segment_cli_boxes(
    tmp_path: Path,
    case: str,
    zrange: bool,
    random_weights: Path,
    fake_model: BoxBackend,
    capsys: pytest.CaptureFixture[str],
) -> None:
    box, expected, result = SEGMENT_BOXES[case]
    src = _nifti(tmp_path / "vol.nii.gz", np.random.default_rng(7).integers(0, 255, (3, 40, 48)).astype(np.uint8))
    out = tmp_path / "out" / "mask.nii.gz"
    out.parent.mkdir()
    where = ["--zrange", "0", "2"] if zrange else ["--slice", "1"]
    code, err = _cli(
        segment.main, [str(src), "--box", *box, *where, "-o", str(out), *model_args(random_weights)], capsys
    )
    assert code == expected, err
    assert "Traceback" not in err
    if isinstance(result, list):
        assert out.is_file() and not _error_lines(err)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(out))
        for z in (0, 1, 2) if zrange else (1,):
            assert np.abs(np.subtract(_bbox(labels[z] > 0), result)).max() <= 1, (z, _bbox(labels[z] > 0))
    else:
        lines = _error_lines(err)
        assert len(lines) == 1 and result in lines[0], err
        _assert_no_leftovers(out.parent, set())


# --- medsam-infer -------------------------------------------------------------------------------


def _npz_2d(tmp: Path, name: str, boxes: np.ndarray) -> Path:
    img = np.random.default_rng(8).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    np.savez(tmp / name, imgs=img, boxes=boxes)
    return tmp / name


def _npz_3d(tmp: Path, name: str, boxes: np.ndarray) -> Path:
    img = np.random.default_rng(9).integers(0, 255, (4, 40, 48), dtype=np.uint8)
    np.savez(tmp / name, imgs=img, boxes=boxes, spacing=np.array([2.0, 1.0, 1.0]))
    return tmp / name


#: id -> (builder, text of the error line)
INFER_ERRORS: dict[str, tuple[Builder, str]] = {
    "object_array": (npz_object_array, "Python objects"),
    "missing_key": (npz_missing_key, "missing boxes"),
    "extra_key": (npz_extra_key, "unexpected secret"),
    "truncated": (lambda t: _cut(npz_extra_key(t)), "damaged or truncated"),
    "box_negative": (lambda t: _npz_2d(t, "2DBox_US_neg.npz", np.array([[-3, 2, 20, 20]])), "outside the image"),
    "box_inverted": (lambda t: _npz_2d(t, "2DBox_US_inv.npz", np.array([[20, 20, 2, 2]])), "min > max"),
    "box_zero_area": (lambda t: _npz_2d(t, "2DBox_US_zero.npz", np.array([[5, 5, 5, 20]])), "no area"),
    "box_outside": (lambda t: _npz_2d(t, "2DBox_US_out.npz", np.array([[10, 10, 60, 20]])), "outside the image"),
    "box_nan": (lambda t: _npz_2d(t, "2DBox_US_nan.npz", np.array([[np.nan, 1.0, 20.0, 20.0]])), "NaN"),
    "box3d_zero_area": (lambda t: _npz_3d(t, "3DBox_CT_zero.npz", np.array([[5, 5, 0, 30, 5, 3]])), "no area"),
    "box3d_outside": (lambda t: _npz_3d(t, "3DBox_CT_out.npz", np.array([[5, 5, 0, 30, 30, 9]])), "outside"),
    "box3d_nan": (lambda t: _npz_3d(t, "3DBox_CT_nan.npz", np.array([[5.0, 5, 0, np.nan, 30, 3]])), "NaN"),
}


def _cut(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-40])
    return path


@pytest.mark.parametrize("case", sorted(INFER_ERRORS))
def test_infer_cli_refuses_bad_cases(
    tmp_path: Path, case: str, random_weights: Path, fake_model: BoxBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    build, text = INFER_ERRORS[case]
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    bad = build(inputs)
    good = _npz_2d(inputs, "2DBox_US_good.npz", np.array([[4, 4, 30, 30]]))
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), *model_args(random_weights)], capsys)
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and bad.name in lines[0] and text in lines[0], err
    assert "Traceback" not in err
    _assert_no_leftovers(outputs, {good.name, "timing.csv"})  # the good case is still done, nothing else
    assert not (inputs / "PWNED").exists(), "an object array was unpickled"
    assert "2DBox_US_good.npz" in (outputs / "timing.csv").read_text()


def test_infer_cli_runs_odd_but_valid_boxes(
    tmp_path: Path, random_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Boxes touching the far edge (x1 == W, allowed by the file format) and float boxes are clipped/rounded."""
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    _npz_2d(inputs, "2DBox_US_edge.npz", np.array([[0, 0, 48, 40]]))
    _npz_3d(inputs, "3DBox_CT_float.npz", np.array([[5.2, 5.0, 0.0, 30.7, 30.0, 3.0]]))
    code, err = _cli(infer.main, ["-i", str(inputs), "-o", str(outputs), *model_args(random_weights)], capsys)
    assert code == 0, err
    assert np.load(outputs / "2DBox_US_edge.npz")["segs"].shape == (40, 48)
    assert np.load(outputs / "3DBox_CT_float.npz")["segs"].shape == (4, 40, 48)


def test_unexpected_failures_are_still_one_line(
    tmp_path: Path, fake_model: BoxBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug or resource error deep in the engine (here: RuntimeError/MemoryError) never prints a traceback."""
    inputs, outputs = tmp_path / "imgs", tmp_path / "segs"
    inputs.mkdir()
    _npz_2d(inputs, "2DBox_US_a.npz", np.array([[4, 4, 30, 30]]))
    _npz_2d(inputs, "2DBox_US_b.npz", np.array([[4, 4, 30, 30]]))
    real = infer.segment_challenge_case
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory\nwith a second line")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(infer, "segment_challenge_case", flaky)
    assert infer.main(["-i", str(inputs), "-o", str(outputs), "-q"]) == 1
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "2DBox_US_a.npz: RuntimeError: CUDA out of memory" in lines[0], err
    assert "Traceback" not in err
    _assert_no_leftovers(outputs, {"2DBox_US_b.npz", "timing.csv"})

    src = _nifti(tmp_path / "v.nii.gz", np.zeros((2, 20, 20), np.uint8))

    def no_memory(*args: object, **kwargs: object) -> np.ndarray:
        raise MemoryError()

    monkeypatch.setattr(segment, "segment_slice", no_memory)
    out = tmp_path / "m.nii.gz"
    argv = [str(src), "--box", "1", "1", "10", "10", "--slice", "0", "-o", str(out), "-q"]
    assert segment.main(argv) == 1
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "MemoryError" in err and "Traceback" not in err, err
    assert not out.exists()
