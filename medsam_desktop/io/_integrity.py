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
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    n_vox = 1
    for d in dims[1 : ndim + 1]:
        n_vox *= max(int(d), 1)
    return vox_offset + n_vox * bitpix // 8


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
