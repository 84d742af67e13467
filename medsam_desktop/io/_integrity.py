"""Truncation checks SimpleITK does not do itself (it silently zero-fills short NIfTI files)."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

from .errors import CorruptFileError

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _gzip_stream_size(path: Path) -> int:
    """Decompress the whole (possibly multi-member) gzip file; return its size or raise if truncated."""
    total = 0
    dec = zlib.decompressobj(wbits=31)
    fed = False  # has the current member received input?
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            buf = chunk
            while buf:
                if not fed and not buf.strip(b"\x00"):
                    break  # zero padding after the last member
                fed = True
                total += len(dec.decompress(buf, 64 * _CHUNK))
                if dec.eof:
                    buf = dec.unused_data
                    dec, fed = zlib.decompressobj(wbits=31), False
                else:
                    buf = dec.unconsumed_tail
    if fed:
        raise EOFError("compressed stream ended before its end marker")
    return total


def _nifti_expected_size(header: bytes) -> int | None:
    """Expected total byte size (header + voxels) of a single-file NIfTI-1/2, or None if unknown."""
    if len(header) < 348:
        return None
    for endian in "<>":
        n = struct.unpack(f"{endian}i", header[:4])[0]
        if n == 348:
            if header[344:347] != b"n+1":
                return None
            dims = struct.unpack(f"{endian}8h", header[40:56])
            bitpix = struct.unpack(f"{endian}h", header[72:74])[0]
            vox_offset = int(struct.unpack(f"{endian}f", header[108:112])[0])
            break
        if n == 540 and len(header) >= 540:
            if header[4:7] != b"n+2":
                return None
            bitpix = struct.unpack(f"{endian}h", header[14:16])[0]
            dims = struct.unpack(f"{endian}8q", header[16:80])
            vox_offset = int(struct.unpack(f"{endian}q", header[168:176])[0])
            break
    else:
        return None
    return _data_end(dims, bitpix, vox_offset)


def _data_end(dims: tuple[int, ...], bitpix: int, vox_offset: int) -> int | None:
    """``vox_offset`` + the bytes of the voxels of a header's ``dim`` / ``bitpix`` (None when they are invalid)."""
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    n_vox = 1
    for d in dims[1 : ndim + 1]:
        n_vox *= max(int(d), 1)
    return vox_offset + n_vox * bitpix // 8


def _pair_voxel_bytes(header: bytes) -> int | None:
    """Voxel bytes an Analyze 7.5 / NIfTI-1 pair header (``.hdr``) promises in its ``.img``, or None if unknown."""
    if len(header) < 348:
        return None
    for endian in "<>":
        if struct.unpack(f"{endian}i", header[:4])[0] == 348:
            break
    else:
        return None
    if header[344:347] == b"n+1":  # a single-file NIfTI header, not a pair
        return None
    dims = struct.unpack(f"{endian}8h", header[40:56])
    bitpix = struct.unpack(f"{endian}h", header[72:74])[0]
    vox_offset = max(int(struct.unpack(f"{endian}f", header[108:112])[0]), 0)
    return _data_end(dims, bitpix, vox_offset)


def _pair_files(path: Path) -> tuple[Path, Path] | None:
    """(header, image) of an Analyze/NIfTI pair named by either file, or None when ``path`` is not one."""
    name = path.name.lower()
    for hdr_suffix, img_suffixes in ((".hdr", (".img", ".img.gz")), (".img", (".img",)), (".img.gz", (".img.gz",))):
        if name.endswith(hdr_suffix):
            stem = path.name[: -len(hdr_suffix)]
            header = path if hdr_suffix == ".hdr" else path.with_name(stem + ".hdr")
            for suffix in img_suffixes:
                image = path.with_name(stem + suffix) if hdr_suffix == ".hdr" else path
                if image.is_file():
                    return header, image
            return None
    return None


def check_pair_complete(path: Path) -> None:
    """Raise :class:`CorruptFileError` when the ``.img`` of an Analyze/NIfTI pair is shorter than its ``.hdr``
    says: ITK would read the missing voxels as zeros without a word."""
    files = _pair_files(path)
    if files is None or not files[0].is_file():
        return
    header_path, image_path = files
    with open(header_path, "rb") as fh:
        expected = _pair_voxel_bytes(fh.read(348))
    if expected is None:
        return
    if image_path.name.lower().endswith(".gz"):
        try:
            actual = _gzip_stream_size(image_path)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFileError("the compressed image data is damaged", path=image_path, detail=str(exc)) from exc
    else:
        actual = image_path.stat().st_size
    if actual < expected:
        raise CorruptFileError(
            f"the image data file {image_path.name} is truncated ({actual} of {expected} bytes)",
            path=path,
            action="It was probably copied or downloaded incompletely; copy or export both files again.",
        )


def check_nifti_complete(path: Path) -> None:
    """Raise :class:`CorruptFileError` when a ``.nii``/``.nii.gz`` is shorter than its header says.

    Fast path for gzip: the trailer's ISIZE (size mod 2**32) equals the expected size; otherwise the
    whole stream is decompressed once to tell a truncated file from a valid multi-member gzip.
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
    truncated = CorruptFileError(
        "the file is truncated (it ends before all image data)",
        path=path,
        action="It was probably copied or downloaded incompletely; copy or export it again.",
    )
    if magic == GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as gz:
                header = gz.read(540)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFileError("the compressed data is damaged", path=path, detail=str(exc)) from exc
        expected = _nifti_expected_size(header)
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            isize = struct.unpack("<I", fh.read(4))[0]
        if expected is not None and isize == expected % 2**32:
            return
        try:
            actual = _gzip_stream_size(path)
        except (EOFError, zlib.error) as exc:
            raise truncated from exc
        if expected is not None and actual < expected:
            raise truncated
        return
    with open(path, "rb") as fh:
        header = fh.read(540)
    expected = _nifti_expected_size(header)
    if expected is not None and path.stat().st_size < expected:
        raise truncated
    check_pair_complete(path)
