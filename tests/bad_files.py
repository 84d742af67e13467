"""Bad (and odd but usable) input files, generated on the fly, shared by the engine/CLI and app bad-input tests.

Every builder takes a folder and returns the path of the file (or DICOM folder) it wrote there. The tables
say what reading each one must give: :data:`READ_ERRORS` (error type and message text), :data:`READ_OK`
(array shape and dtype).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from fakes import SideEffect
from PIL import Image

from medsam_desktop.io import (
    CorruptFileError,
    DicomSeriesError,
    InvalidImageError,
    InvalidNpzError,
    MedSAMIOError,
    UnsupportedFormatError,
)

Builder = Callable[[Path], Path]


# --- builders ------------------------------------------------------------------------------------


def write_nifti(path: Path, array: np.ndarray, is_vector: bool = False) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=is_vector), str(path), True)
    return path


def zero_byte_nifti(tmp: Path) -> Path:
    path = tmp / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def truncated_nifti(tmp: Path) -> Path:
    arr = np.random.default_rng(0).integers(-1000, 1000, (16, 32, 32)).astype(np.int16)
    data = write_nifti(tmp / "full.nii.gz", arr).read_bytes()
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
    return write_nifti(tmp / "time_series.nii.gz", np.zeros((3, 4, 5, 6), np.float32))


def one_voxel(tmp: Path) -> Path:
    return write_nifti(tmp / "one_voxel.nii.gz", np.zeros((1, 1, 1), np.int16))


def complex_nifti(tmp: Path) -> Path:
    """Complex voxels (e.g. raw MR phase/k-space data): nothing the model or the display can show."""
    return write_nifti(tmp / "complex.nii.gz", np.ones((3, 8, 9), np.complex64))


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
    return write_nifti(tmp / "nan.nrrd", arr)  # NRRD keeps NaN (ITK's NIfTI reader zeroes them itself)


def nan_voxels_nifti(tmp: Path) -> Path:
    arr = np.random.default_rng(1).random((3, 40, 48)).astype(np.float32) * 100
    arr[1, 5, 5], arr[2, 6, 6] = np.nan, np.inf
    return write_nifti(tmp / "nan.nii.gz", arr)


def bool_png(tmp: Path) -> Path:
    img = Image.fromarray(np.random.default_rng(2).random((40, 48)) > 0.5).convert("1")
    img.save(tmp / "bool.png")
    return tmp / "bool.png"


def int64_nifti(tmp: Path) -> Path:
    return write_nifti(tmp / "int64.nii.gz", np.random.default_rng(3).integers(-5, 10**9, (3, 40, 48), dtype=np.int64))


def float64_nifti(tmp: Path) -> Path:
    return write_nifti(tmp / "float64.nii.gz", np.random.default_rng(4).normal(0, 1e6, (3, 40, 48)))


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
    "complex_voxels": (complex_nifti, InvalidImageError, "complex"),
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
