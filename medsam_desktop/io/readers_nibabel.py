"""nibabel-backed readers: FreeSurfer MGH/MGZ (SimpleITK has no MGH reader), MINC 1/2, AFNI (HEAD/BRIK), Philips
PAR/REC (SimpleITK reads none of them), and the NIfTI fallback.

nibabel gives a voxel array in (x, y, z) index order and a 4x4 *RAS* affine; ITK uses *LPS*.
Conversion: ``A_lps = diag(-1, -1, 1) @ A_ras[:3]``; spacing = column norms of ``A_lps[:, :3]``;
direction = those columns normalised; origin = ``A_lps[:, 3]``; array transposed to (z, y, x).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ._checks import check_size, finalize_array, guess_modality
from .errors import DATA_UNREADABLE, HEADER_UNREADABLE, InvalidImageError, reading
from .volume import Volume

log = logging.getLogger(__name__)

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

#: ``Volume.extra`` key holding a NIfTI source's header transforms (JSON, see :func:`nifti_forms`).
NIFTI_FORMS_KEY = "nifti_forms"
#: the suffixes of the formats nibabel reads here (NIfTI's 3D images go through SimpleITK, ``io.readers``)
SUFFIXES = {
    "nifti": (".nii.gz", ".nii", ".img.gz", ".hdr", ".img"), "mgh": (".mgz", ".mgh"), "minc": (".mnc",),
    "afni": (".head", ".brik", ".brik.gz"), "parrec": (".par", ".rec"),
}  # fmt: skip
#: formats read only through nibabel, each from the file nibabel opens (the header of a pair), with its modality
#: (None: guessed from the values)
NIBABEL_FORMATS: dict[str, str | None] = {"minc": None, "afni": None, "parrec": "MR"}
_PAIRS = {".brik.gz": ".HEAD", ".brik": ".HEAD", ".rec": ".PAR"}  # data file -> its header's suffix


def header_of_pair(path: Path) -> Path:
    """The header file of an AFNI or PAR/REC pair given either file (``x+orig.BRIK`` -> ``x+orig.HEAD``); the
    path itself when it is the header. The header's suffix keeps the data file's case (``.rec`` -> ``.par``)."""
    name = path.name
    for data, header in _PAIRS.items():
        if name.lower().endswith(data):
            stem = name[: -len(data)]
            suffix = header if name[-len(data) :].isupper() else header.lower()
            return path.with_name(stem + suffix)
    return path


def read_nibabel_format(path: Path, fmt: str) -> Volume:
    """A MINC, AFNI or PAR/REC file (``fmt`` from :data:`NIBABEL_FORMATS`) as a :class:`Volume`; MINC 2 needs
    h5py (a one-line refusal saying so without it); the other file of a pair must sit beside it."""
    import importlib.util

    from .errors import UnsupportedFormatError

    header = header_of_pair(path)
    if fmt == "minc":
        with open(path, "rb") as fh:
            hdf5 = fh.read(8) == b"\x89HDF\r\n\x1a\n"
        if hdf5 and importlib.util.find_spec("h5py") is None:
            raise UnsupportedFormatError(
                "it is a MINC 2 file, which needs the h5py package", path=path,
                action="Convert it to NIfTI (e.g. mnc2nii) or install h5py, then open it again.",
            )  # fmt: skip
    if not header.is_file():
        raise InvalidImageError(
            f"its header {header.name} is missing", path=path, action="Keep both files of the pair in one folder."
        )
    if fmt in ("afni", "parrec"):
        data = _data_of_pair(header)
        if data is None:
            raise InvalidImageError(
                f"the data file beside {header.name} is missing", path=path,
                action="Keep both files of the pair in one folder.",
            )  # fmt: skip
    volume = read_nibabel_image(header, modality=NIBABEL_FORMATS[fmt])
    return volume if header == path else dataclasses.replace(volume, source_path=path)


def _data_of_pair(header: Path) -> Path | None:
    """The data file of an AFNI or PAR/REC header (any case, AFNI's BRIK also gzipped), or None."""
    stem = header.name[: -len(header.suffix)]
    wanted = (".brik", ".brik.gz") if header.suffix.lower() == ".head" else (".rec",)
    for sibling in header.parent.iterdir():
        name = sibling.name
        if name.startswith(stem) and name[len(stem) :].lower() in wanted:
            return sibling
    return None


def nifti_forms(path: Path) -> dict[str, object] | None:
    """The header transforms of a NIfTI-1/2 file, or None (not NIfTI, e.g. Analyze, or unreadable header).

    Keys: ``qform``/``sform`` (4x4 lists, RAS), ``qform_code``/``sform_code``, ``zooms`` (pixdim 1..3),
    ``xyz_units`` (nibabel's name), ``shape`` (x, y, z; 1 for missing axes) and ``ndim`` (dim[0]).
    Different programs pick different transforms (ITK the qform when the sform is sheared or not
    "scanner", nibabel the sform), so a mask that must open like its image in all of them needs all of them.
    """
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        if not hasattr(header, "get_qform") or not hasattr(header, "get_sform"):
            return None
        _, qcode = header.get_qform(coded=True)
        _, scode = header.get_sform(coded=True)
        dim = [int(v) for v in header["dim"]]
        shape = [dim[i] if i <= dim[0] else 1 for i in (1, 2, 3)]
        return {
            "qform": np.asarray(header.get_qform(), dtype=np.float64).tolist(),
            "qform_code": int(qcode),
            "sform": np.asarray(header.get_sform(), dtype=np.float64).tolist(),
            "sform_code": int(scode),
            "zooms": [float(z) for z in (list(header["pixdim"][1:4]))],
            "xyz_units": str(header.get_xyzt_units()[0]),
            "shape": shape,
            "ndim": dim[0],
        }
    except Exception as exc:  # any header nibabel cannot parse: the writer then uses the volume's geometry
        log.debug("no NIfTI transforms for %s: %s", path, exc)
        return None


def affine_ras_to_itk(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """4x4 RAS voxel->world affine -> ITK (spacing xyz, origin xyz, direction 9 row-major) in LPS."""
    affine = np.asarray(affine, dtype=np.float64)
    lps = _RAS_TO_LPS @ affine[:3, :]
    columns = lps[:, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(affine)):
        raise ValueError(f"degenerate affine {affine.tolist()}")
    direction = columns / spacing
    return tuple(spacing.tolist()), tuple(lps[:, 3].tolist()), tuple(direction.ravel().tolist())


def read_nibabel_image(path: Path, modality: str | None = None) -> Volume:
    """Read any nibabel-supported single 3D image (MGH/MGZ, NIfTI) into a :class:`Volume`.

    ``modality=None`` applies :func:`guess_modality`. 4D images with more than one frame are refused.
    """
    import nibabel as nib  # lazy: only needed for these formats

    with reading(path, HEADER_UNREADABLE):  # nibabel raises many types (ImageFileError, EOFError, ValueError ...)
        img = nib.load(str(path))
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise InvalidImageError(
            f"it is a {len(shape)}D image ({'x'.join(map(str, shape))}), e.g. a time series",
            path=path,
            action="Export a single 3D volume (one frame) and open that.",
        )
    check_size(shape[:3] if len(shape) >= 3 else shape, path)
    with reading(path, DATA_UNREADABLE):
        data = np.asanyarray(img.dataobj)
        spacing, origin, direction = affine_ras_to_itk(img.affine)
    data = data.reshape(shape[:3] if len(shape) >= 3 else (*shape, *([1] * (3 - len(shape)))))
    array = finalize_array(np.ascontiguousarray(data.transpose(2, 1, 0)), path)
    return Volume(
        array=array,
        spacing=spacing,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        modality=guess_modality(array) if modality is None else modality,
        source_path=path,
    )
