"""``read_image``: one entry point for every supported file (or DICOM folder) -> :class:`Volume`.

The format is decided from the file's first bytes ("magic") first and its extension second, so a
mis-named file still opens. Every failure surfaces as a :class:`~medsam_desktop.io.errors.MedSAMIOError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from ._integrity import GZIP_MAGIC, check_nifti_complete
from .errors import (
    CorruptFileError,
    ImageNotFoundError,
    InvalidImageError,
    MedSAMIOError,
    UnsupportedFormatError,
)
from .formats import FORMAT_SUFFIXES, SUPPORTED_EXTENSIONS, format_from_suffix
from .native_output import native_stderr_to_log
from .readers_2d import read_2d_image
from .readers_dicom import read_dicom_file, read_dicom_series
from .readers_nibabel import NIBABEL_FORMATS, NIFTI_FORMS_KEY, nifti_forms, read_nibabel_format, read_nibabel_image
from .readers_sitk import read_sitk_image
from .volume import Volume

log = logging.getLogger(__name__)

__all__ = ["SUPPORTED_EXTENSIONS", "detect_format", "read_image"]


def _suffix_is_lower_case(path: Path) -> bool:
    name = path.name
    return not any(name.lower().endswith(s) and not name.endswith(s) for ss in FORMAT_SUFFIXES.values() for s in ss)


def _sniff_gzip(path: Path) -> str | None:
    """Look inside a gzip stream: NIfTI (sizeof_hdr 348/540) or MGH (version 1, big-endian)."""
    try:
        with gzip.open(path, "rb") as gz:
            head = gz.read(352)
    except (OSError, EOFError, zlib.error):
        return None
    if len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
        return "nifti"
    if len(head) >= 8 and head[4:7] == b"n+2":
        return "nifti"
    if len(head) >= 4 and struct.unpack(">i", head[:4])[0] == 1:
        return "mgh"
    return None


def detect_format(path: Path) -> str | None:
    """Format key ("nifti", "nrrd", "meta", "mgh", "dicom", "2d", "npz", "minc", "afni", "parrec") from magic
    bytes, then extension."""
    with open(path, "rb") as fh:
        head = fh.read(352)
    by_ext = format_from_suffix(path)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "2d"
    if head.startswith(b"BM") and by_ext in (None, "2d"):
        return "2d"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
        return "nifti"
    if len(head) >= 8 and head[4:7] == b"n+2":
        return "nifti"
    if head.startswith(GZIP_MAGIC):
        return _sniff_gzip(path) or (by_ext if by_ext in ("nifti", "mgh") else None)
    text = head[:64].lstrip().lower()
    if text.startswith((b"objecttype", b"ndims", b"comment", b"transformtype")):
        return "meta"
    if by_ext == "mgh" and len(head) >= 4 and struct.unpack(">i", head[:4])[0] == 1:
        return "mgh"
    if by_ext == "dicom" or (not path.suffix and head[:2] in (b"\x08\x00", b"\x02\x00")):
        return "dicom"  # DICOM without the 128-byte preamble (starts with group 0002/0008): let GDCM try
    if by_ext == "nifti" and path.name.lower().endswith((".hdr", ".img")):
        return "nifti"  # Analyze / NIfTI pair: header magic lives in the .hdr
    if by_ext == "minc" and head.startswith((b"CDF\x01", b"CDF\x02", b"\x89HDF\r\n\x1a\n")):
        return "minc"  # MINC 1 is netCDF, MINC 2 is HDF5
    if by_ext == "afni" and (b"type = " in head[:64] or not path.name.lower().endswith(".head")):
        return "afni"  # a HEAD is text ("type = ... name = ..."); a BRIK is raw voxels (checked by its HEAD)
    if by_ext == "parrec" and (head.startswith(b"# === DATA DESCRIPTION FILE") or path.name.lower().endswith(".rec")):
        return "parrec"
    return None


_FORMAT_NAMES = {"nifti": "NIfTI", "nrrd": "NRRD", "meta": "MetaImage", "mgh": "MGH/MGZ",
                 "dicom": "DICOM", "2d": "picture", "npz": "NumPy .npz", "minc": "MINC", "afni": "AFNI",
                 "parrec": "PAR/REC"}  # fmt: skip


def _claimed_format_error(path: Path, by_ext: str) -> MedSAMIOError:
    return CorruptFileError(
        f"its content is not a valid {_FORMAT_NAMES[by_ext]} file (wrong extension or damaged file)",
        path=path,
    )


_CANONICAL_SUFFIX = {"nifti": ".nii", "nrrd": ".nrrd", "meta": ".mha", "mgh": ".mgh"}


@contextlib.contextmanager
def _named_for(path: Path, fmt: str) -> Iterator[Path]:
    """Yield a path whose extension matches ``fmt`` (ITK/nibabel choose their reader by extension).

    A mis-named file is exposed through a temporary symlink (or copy) called ``<name><ext>``.
    """
    by_ext = format_from_suffix(path)
    if fmt not in _CANONICAL_SUFFIX or (by_ext == fmt and _suffix_is_lower_case(path)):
        yield path  # ITK refuses mixed-case extensions such as '.Nii': those get a lower-case alias below
        return
    with open(path, "rb") as fh:
        gz = fh.read(2) == GZIP_MAGIC
    suffix = {"nifti": ".nii.gz", "mgh": ".mgz"}.get(fmt, _CANONICAL_SUFFIX[fmt]) if gz else _CANONICAL_SUFFIX[fmt]
    with tempfile.TemporaryDirectory(prefix="medsam-io-") as tmp:
        alias = Path(tmp) / f"{path.name}{suffix}"
        try:
            alias.symlink_to(path.resolve())
        except OSError:  # e.g. Windows without symlink rights
            shutil.copyfile(path, alias)
        yield alias


def _read_nifti(path: Path) -> Volume:
    check_nifti_complete(path)
    forms = nifti_forms(path)
    if forms is not None and forms["ndim"] < 3:
        # ITK reads a 2D NIfTI as a 2D image and drops the slice's z position and out-of-plane orientation
        volume = read_nibabel_image(path)
    else:
        try:
            volume = read_sitk_image(path)
        except CorruptFileError as exc:  # e.g. non-orthonormal sform that ITK refuses: nibabel copes
            log.debug("%s: SimpleITK failed (%s); retrying with nibabel", path.name, exc.detail)
            try:
                volume = read_nibabel_image(path)
            except MedSAMIOError:
                raise exc from None
    if forms is not None:  # lets write_labels_nifti give the mask the very same header transforms
        volume.extra[NIFTI_FORMS_KEY] = json.dumps(forms)
    return volume


def _read_volume_file(path: Path, fmt: str) -> Volume:
    if fmt == "nifti":
        return _read_nifti(path)
    if fmt == "mgh":
        return read_nibabel_image(path, modality="MR")  # FreeSurfer MGH/MGZ are MR-derived
    return read_sitk_image(path)  # nrrd, meta


def _read_file(path: Path) -> Volume:
    fmt = detect_format(path)
    by_ext = format_from_suffix(path)
    if fmt is None:
        if by_ext is not None:
            raise _claimed_format_error(path, by_ext)
        raise UnsupportedFormatError("this file type is not supported", path=path)
    if by_ext is not None and by_ext != fmt:
        log.info("%s: content is %s although the extension suggests %s", path.name, fmt, by_ext)
    if fmt in _CANONICAL_SUFFIX:
        with _named_for(path, fmt) as named:
            try:
                volume = _read_volume_file(named, fmt)
            except MedSAMIOError as exc:
                if named == path:
                    raise
                raise type(exc)(exc.problem, path=path, action=exc.action, detail=exc.detail) from exc
        return volume if named == path else dataclasses.replace(volume, source_path=path)
    if fmt in NIBABEL_FORMATS:
        return read_nibabel_format(path, fmt)
    if fmt == "dicom":
        return read_dicom_file(path)
    if fmt == "2d":
        return read_2d_image(path)
    if fmt == "npz":
        from .challenge_npz import read_challenge_npz

        return read_challenge_npz(path).volume
    raise UnsupportedFormatError("this file type is not supported", path=path)  # pragma: no cover


def read_image(path: str | os.PathLike[str]) -> Volume:
    """Open any supported image, volume, DICOM folder or challenge ``.npz`` as a :class:`Volume`.

    Formats: NIfTI-1/2, NRRD, MetaImage, MGH/MGZ, MINC 1 (MINC 2 with h5py), AFNI HEAD/BRIK, PAR/REC, DICOM (file
    or series folder), PNG/JPEG/BMP/TIFF, challenge npz. Arrays are (D, H, W) or (D, H, W, 3) in SimpleITK
    (z, y, x) order, source dtype.
    Raises only :class:`~medsam_desktop.io.errors.MedSAMIOError` subclasses. What the native libraries print
    meanwhile (e.g. OpenJPEG on a damaged JPEG 2000 frame) goes to the debug log, not to the terminal.
    """
    path = Path(path)
    with native_stderr_to_log(f"reading {path.name}"):
        return _read_image(path)


def _read_image(path: Path) -> Volume:
    try:
        if path.is_dir():
            return read_dicom_series(path)
        if not path.exists():
            raise ImageNotFoundError("the file does not exist", path=path)
        if not path.is_file():
            raise UnsupportedFormatError("it is not a regular file", path=path)
        if path.stat().st_size == 0:
            raise CorruptFileError("the file is empty (0 bytes)", path=path, action="Copy or export the file again.")
        return _read_file(path)
    except MedSAMIOError:
        raise
    except MemoryError as exc:
        raise InvalidImageError(
            "there is not enough memory to open this image",
            path=path,
            action="Close other images or programs, or open a smaller image.",
        ) from exc
    except PermissionError as exc:
        raise CorruptFileError(
            "you do not have permission to read it",
            path=path,
            action="Copy the file to a folder you own, or ask for read access.",
            detail=str(exc),
        ) from exc
    except Exception as exc:  # last line of defence: never leak raw library errors
        log.debug("unexpected error reading %s", path, exc_info=True)
        raise CorruptFileError("the file could not be read", path=path, detail=f"{type(exc).__name__}: {exc}") from exc
