"""DICOM readers (SimpleITK + GDCM): series in a folder, single files (incl. multi-frame / colour).

Pixel values follow ITK/GDCM: rescale slope/intercept applied (CT in HU), YBR colour converted to
RGB, and MONOCHROME1 inverted so that high values are bright (ITK >= 5.1 does this itself; older
ITK is corrected here).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ._checks import check_size, narrow_int_dtype
from .errors import CorruptFileError, DicomSeriesError, MedSAMIOError, reading
from .native_output import native_stderr_to_log
from .readers_sitk import volume_from_sitk
from .volume import Volume

#: ``Volume.extra`` key of a DICOM volume's source files in slice order (JSON list of paths; DICOM SEG refers to them)
DICOM_FILES_KEY = "dicom_files"

log = logging.getLogger(__name__)

__all__ = ["DicomSeriesInfo", "dicom_modality", "list_dicom_series", "read_dicom_file", "read_dicom_series"]

_MODALITY_MAP = {
    "CT": "CT", "MR": "MR", "PT": "PT", "NM": "NM", "US": "US",
    "CR": "XR", "DX": "XR", "MG": "XR", "RF": "XR", "XA": "XR", "IO": "XR", "PX": "XR", "DR": "XR",
}  # fmt: skip
_MAX_SCAN_DEPTH = 3
_MAX_SCAN_DIRS = 256
#: the suffixes this reader owns (a DICOM file may also have none: the content decides, ``detect_format``)
SUFFIXES = {"dicom": (".dcm", ".dicom", ".ima")}


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One DICOM series found in a folder. ``files`` are sorted by slice position (GDCM)."""

    uid: str
    n_files: int
    description: str
    modality: str
    folder: Path
    files: tuple[str, ...] = ()


def dicom_modality(tag_value: str, is_rgb: bool = False) -> str:
    """Map a DICOM (0008,0060) value to a :data:`~medsam_desktop.io.volume.MODALITIES` hint."""
    mapped = _MODALITY_MAP.get(tag_value.strip().upper())
    if mapped:
        return mapped
    return "RGB" if is_rgb else "unknown"


def _meta(reader: sitk.ImageFileReader | sitk.ImageSeriesReader, key: str, index: int | None = None) -> str:
    try:
        if index is None:
            return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""
        return reader.GetMetaData(index, key).strip() if reader.HasMetaDataKey(index, key) else ""
    except RuntimeError:
        return ""


def _itk_inverts_monochrome1() -> bool:
    """ITK >= 5.1 converts MONOCHROME1 to MONOCHROME2 on read (ITK PR #1370)."""
    try:
        return (sitk.Version.ITKMajorVersion(), sitk.Version.ITKMinorVersion()) >= (5, 1)
    except AttributeError:  # pragma: no cover - very old SimpleITK
        return False


def _fix_monochrome1(array: np.ndarray, photometric: str) -> np.ndarray:
    if photometric.upper().startswith("MONOCHROME1") and not _itk_inverts_monochrome1():
        lo, hi = array.min(), array.max()
        log.info("inverting MONOCHROME1 pixel values")
        return (hi - array + lo).astype(array.dtype)
    return array


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader


def _series_in_dir(folder: Path) -> list[DicomSeriesInfo]:
    out: list[DicomSeriesInfo] = []
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        log.debug("GDCM could not scan %s: %s", folder, exc)
        return out
    for uid in uids:
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        description, modality = "", "unknown"
        try:
            head = _header(files[0])
            description = _meta(head, "0008|103e")
            modality = dicom_modality(_meta(head, "0008|0060"), head.GetNumberOfComponents() == 3)
        except RuntimeError as exc:
            log.debug("could not read the header of %s: %s", files[0], exc)
        out.append(DicomSeriesInfo(uid, len(files), description, modality, folder, files))
    return out


@native_stderr_to_log("reading DICOM")  # GDCM's and OpenJPEG's prints go to the debug log (ITK's are off)
def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeriesInfo]:
    """All DICOM series in ``folder``, most files first.

    If the folder itself holds none, its sub-folders are scanned (up to 3 levels, 256 folders),
    which covers the usual ``DICOM/<study>/<series>`` export layouts.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DicomSeriesError("the folder does not exist", path=root)
    found = _series_in_dir(root)
    if not found:
        scanned = 0
        for dirpath, dirnames, _ in os.walk(root):
            depth = len(Path(dirpath).relative_to(root).parts)
            dirnames.sort()
            if depth >= _MAX_SCAN_DEPTH:
                dirnames.clear()
            if depth == 0:
                continue
            scanned += 1
            found.extend(_series_in_dir(Path(dirpath)))
            if scanned >= _MAX_SCAN_DIRS:
                break
    found.sort(key=lambda s: (-s.n_files, s.description, s.uid))
    return found


@native_stderr_to_log("reading DICOM")
def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Read one series of a DICOM folder as a (D, H, W) volume sorted along the slice normal.

    ``series_uid=None`` picks the series with the most files. Geometry comes from the DICOM
    position/orientation tags (LPS), pixel values are rescaled (e.g. HU for CT).
    """
    root = Path(folder)
    series = list_dicom_series(root)
    if not series:
        raise DicomSeriesError("no DICOM images were found in this folder (or its sub-folders)", path=root)
    if series_uid is None:
        info = series[0]
        if len(series) > 1:
            log.info(
                "%s holds %d series; reading the largest (%s, %d files)",
                root.name,
                len(series),
                info.description or info.uid,
                info.n_files,
            )
    else:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            raise DicomSeriesError(
                f"series {series_uid} is not in this folder ({len(series)} other series found)",
                path=root,
                action="Pick one of the series listed for this folder.",
            )
        info = matches[0]
    if info.n_files == 1:
        return read_dicom_file(info.files[0])

    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames(list(info.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        head = _header(info.files[0])
        check_size([*head.GetSize()[:2], info.n_files], root)
        image = reader.Execute()
    except RuntimeError as exc:
        raise DicomSeriesError(
            f"the {info.n_files} files of series '{info.description or info.uid}' could not be read "
            "as one volume (missing, damaged or mixed-size slices)",
            path=root,
            detail=str(exc),
        ) from exc
    tilted = _check_slice_geometry(reader, info.n_files, root, image)
    if tilted is not None:  # gantry tilt: ITK stacks the slices along the normal, they really lie along `step`
        spacing_z, direction = tilted
        sx, sy, _ = image.GetSpacing()
        image.SetSpacing((sx, sy, spacing_z))
        image.SetDirection(direction)
    photometric = _meta(reader, "0028|0004", 0)
    volume = volume_from_sitk(
        image,
        root,
        modality=dicom_modality(_meta(reader, "0008|0060", 0), image.GetNumberOfComponentsPerPixel() == 3),
        description=info.description,
        is_2d=False,
        source_path=root,
    )
    array = narrow_int_dtype(_fix_monochrome1(volume.array, photometric))
    volume = _with_dicom_extra(volume.with_array(array), reader, 0, photometric)
    volume.extra[DICOM_FILES_KEY] = json.dumps([str(f) for f in info.files])  # slice k = file k (DICOM SEG)
    return volume


def _floats_tag(reader: sitk.ImageSeriesReader, index: int, key: str, n: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in _meta(reader, key, index).split("\\")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.shape == (n,) and np.all(np.isfinite(values)) else None


def _check_slice_geometry(
    reader: sitk.ImageSeriesReader, n_files: int, root: Path, image: sitk.Image | None = None
) -> tuple[float, tuple[float, ...]] | None:
    """Refuse a series whose slices differ in orientation or are unevenly spaced (missing slice, drift).

    Every slice's Image Position must lie where the volume's grid puts it (first position + i * step, within
    10% of the slice step): ITK would silently average the spacing, placing every slice after a gap (or after a
    change of spacing) at the wrong position. A series whose slices are evenly spaced along a line that is not
    the slice normal (gantry tilt) is kept: returns ``(spacing_z, direction)`` whose third column is that
    line (a sheared direction, as nibabel reads tilted CT), to replace ITK's un-sheared geometry of ``image``.
    Returns None when ``image``'s geometry is right. Slices without position/orientation tags are not checked.
    """
    orients = [_floats_tag(reader, i, "0020|0037", 6) for i in range(n_files)]
    positions = [_floats_tag(reader, i, "0020|0032", 3) for i in range(n_files)]
    if any(o is None for o in orients) or any(p is None for p in positions):
        return None
    first = orients[0]
    if any(not np.allclose(o, first, atol=1e-3) for o in orients):  # type: ignore[arg-type]
        raise DicomSeriesError(
            "its slices have different orientations (e.g. a localizer or a reformat mixed into the series)",
            path=root,
            action="Export the axial (or sagittal/coronal) slices of one scan into a separate folder.",
        )
    normal = np.cross(first[:3], first[3:])  # type: ignore[index]
    pos = np.array(positions, dtype=np.float64)  # in file (= slice) order
    z = pos @ normal
    gaps = np.diff(np.sort(z))
    if gaps.size == 0:
        return None
    step = float(np.median(gaps))
    if step <= 1e-6 or np.any(gaps <= 1e-6):
        raise DicomSeriesError(
            "several slices have the same position (duplicated or mixed acquisitions)",
            path=root,
            action="Export one acquisition of the scan into a separate folder.",
        )
    tol = max(0.1 * step, 0.01)
    worst = int(np.argmax(np.abs(gaps - step)))
    if abs(gaps[worst] - step) > tol:
        raise DicomSeriesError(
            f"the slices are not evenly spaced ({gaps[worst]:.3g} mm between slices {worst + 1} and "
            f"{worst + 2}, {step:.3g} mm elsewhere): a slice is probably missing",
            path=root,
            action="Copy or export the complete series again.",
        )
    n = len(pos)
    step_vec = (pos[-1] - pos[0]) / (n - 1)  # the grid: slice i at pos[0] + i * step_vec
    off = np.linalg.norm(pos - (pos[0] + np.arange(n)[:, None] * step_vec), axis=1)
    if np.any(np.diff(z) * np.sign(z[-1] - z[0]) <= 0) or float(off.max()) > tol:
        bad = int(np.argmax(off))
        raise DicomSeriesError(
            f"the slices are not evenly spaced (slice {bad + 1} lies {off[bad]:.3g} mm from where a regular "
            f"{np.linalg.norm(step_vec):.3g} mm spacing puts it)",
            path=root,
            action="Copy or export the complete series again, or convert it with a tool that resamples it.",
        )
    if image is None or image.GetDimension() != 3:
        return None
    direction = np.reshape(np.asarray(image.GetDirection(), dtype=np.float64), (3, 3))
    spacing_z = float(image.GetSpacing()[2])
    itk_step = direction[:, 2] * spacing_z
    if float(np.linalg.norm(itk_step - step_vec)) * (n - 1) <= tol:
        return None  # ITK's grid already puts every slice where it is
    length = float(np.linalg.norm(step_vec))
    direction[:, 2] = step_vec / length
    tilt = float(np.degrees(np.arccos(min(1.0, abs(float(np.dot(step_vec, normal))) / length))))
    log.info("%s: slices are stacked %.2f degrees off their normal (gantry tilt), kept sheared", root.name, tilt)
    return length, tuple(float(v) for v in direction.ravel())


def _with_dicom_extra(
    volume: Volume, reader: sitk.ImageFileReader | sitk.ImageSeriesReader, index: int | None, photometric: str
) -> Volume:
    extra = {"photometric": photometric, "series_uid": _meta(reader, "0020|000e", index)}
    center, width = _meta(reader, "0028|1050", index), _meta(reader, "0028|1051", index)
    if center and width and not photometric.upper().startswith("MONOCHROME1"):  # window is pre-inversion
        extra["window_center"] = center.split("\\")[0]
        extra["window_width"] = width.split("\\")[0]
    volume.extra.update(extra)
    return volume


@native_stderr_to_log("reading DICOM")
def read_dicom_file(path: str | os.PathLike[str]) -> Volume:
    """Read one DICOM file: single frame -> (1, H, W), multi-frame -> (frames, H, W), colour -> (..., 3).

    X-ray files without Pixel Spacing use Imager Pixel Spacing (0018,1164) when present.
    """
    path = Path(path)
    try:
        with reading(path, "it is not a readable DICOM image (damaged, or no pixel data)", (RuntimeError,)):
            reader = _header(str(path))
    except CorruptFileError as exc:
        volume = _read_with_pydicom(path)  # e.g. a single-frame RT dose, which GDCM does not take
        if volume is None:
            raise exc from None
        return volume
    check_size(reader.GetSize(), path)
    with reading(
        path, "its DICOM pixel data could not be decoded (damaged or unsupported compression)", (RuntimeError,)
    ):
        image = reader.Execute()
    n_frames = image.GetSize()[2] if image.GetDimension() == 3 else 1
    photometric = _meta(reader, "0028|0004")
    if not _meta(reader, "0028|0030").strip("0.\\ ") and image.GetDimension() == 3:
        imager = _meta(reader, "0018|1164").split("\\")
        try:
            row, col = (float(v) for v in imager[:2])
            if row > 0 and col > 0:
                image.SetSpacing((col, row, image.GetSpacing()[2]))
        except ValueError:
            pass
    volume = volume_from_sitk(
        image,
        path,
        modality=dicom_modality(_meta(reader, "0008|0060"), image.GetNumberOfComponentsPerPixel() == 3),
        description=_meta(reader, "0008|103e"),
        is_2d=n_frames == 1,
    )
    array = narrow_int_dtype(_fix_monochrome1(volume.array, photometric))
    dose_scaling = _meta(reader, "3004|000e")  # RT dose: stored integers x Dose Grid Scaling = Gy (GDCM leaves them)
    if dose_scaling:
        try:
            array = (array * float(dose_scaling.split("\\")[0])).astype(np.float32)
        except ValueError:
            log.warning("%s: unreadable Dose Grid Scaling %r: raw dose values shown", path.name, dose_scaling)
    volume = _with_dicom_extra(volume.with_array(array), reader, None, photometric)
    if n_frames == 1:
        volume.extra[DICOM_FILES_KEY] = json.dumps([str(path)])
    return volume


def _read_with_pydicom(path: Path) -> Volume | None:
    """A grey DICOM image GDCM refused, read with pydicom (None when pydicom cannot either): frames (F, H, W)
    scaled to their physical values (RT dose: DoseGridScaling, Gy; else Rescale Slope/Intercept), geometry
    from Image Position/Orientation (Patient) and Pixel Spacing; the frame spacing from Grid Frame Offset
    Vector, else Slice Thickness, else 1 mm."""
    import pydicom

    try:
        with warnings.catch_warnings():  # pydicom's complaints about a damaged file: the one-line error says it
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            if "PixelData" not in ds or int(getattr(ds, "SamplesPerPixel", 1)) != 1:
                return None
            check_size([int(ds.Columns), int(ds.Rows), int(getattr(ds, "NumberOfFrames", 1) or 1)], path)
            pixels = np.asarray(ds.pixel_array)
    except (MedSAMIOError, OSError, ValueError, AttributeError, TypeError, KeyError, RuntimeError) as exc:
        if isinstance(exc, MedSAMIOError) and not isinstance(exc, CorruptFileError):
            raise
        log.debug("%s: pydicom cannot read it either (%s)", path.name, exc)
        return None
    frames = pixels[None] if pixels.ndim == 2 else pixels
    if "DoseGridScaling" in ds:
        array = (frames * float(ds.DoseGridScaling)).astype(np.float32)
    else:
        slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
        array = frames if (slope, intercept) == (1.0, 0.0) else (frames * slope + intercept).astype(np.float32)
    row_mm, col_mm = (float(v) for v in getattr(ds, "PixelSpacing", [1.0, 1.0])[:2])
    orientation = np.array([float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])])
    x_dir, y_dir = orientation[:3], orientation[3:6]
    z_dir = np.cross(x_dir, y_dir)
    offsets = [float(v) for v in getattr(ds, "GridFrameOffsetVector", []) or []]
    if len(offsets) == len(frames) > 1 and offsets[1] != offsets[0]:
        z_mm = abs(offsets[1] - offsets[0])
    else:
        z_mm = float(getattr(ds, "SliceThickness", 0) or 0) or 1.0
    origin = tuple(float(v) for v in getattr(ds, "ImagePositionPatient", [0.0, 0.0, 0.0])[:3])
    volume = Volume(
        array=narrow_int_dtype(np.ascontiguousarray(array)),
        spacing=(col_mm, row_mm, z_mm),
        origin=origin,  # type: ignore[arg-type]
        direction=tuple(np.column_stack([x_dir, y_dir, z_dir]).ravel().tolist()),
        modality=dicom_modality(str(getattr(ds, "Modality", ""))),
        is_2d=len(frames) == 1,
        source_path=path,
        description=str(getattr(ds, "SeriesDescription", "") or ""),
    )
    if len(frames) == 1:
        volume.extra[DICOM_FILES_KEY] = json.dumps([str(path)])
    log.info("%s: read with pydicom (GDCM could not: e.g. a single-frame RT dose)", path.name)
    return volume
