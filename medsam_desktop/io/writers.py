"""Saving segmentation results (NIfTI label maps, PNG masks) and re-opening them onto their image.

All writes are atomic (:func:`~medsam_desktop.atomic.atomic_write`): a crash never leaves a
half-written file and never destroys a previous version.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from ..atomic import atomic_write
from .errors import GeometryMismatchError, InvalidImageError, MedSAMIOError, OutputWriteError
from .formats import NIFTI_SUFFIXES
from .label_values import MAX_LABEL, label_dtype
from .readers import detect_format, read_image
from .readers_nibabel import NIFTI_FORMS_KEY
from .volume import Volume, geometry_differences

log = logging.getLogger(__name__)

__all__ = ["read_labels", "write_labels_nifti", "write_mask_png"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _label_dtype(labels: np.ndarray, path: Path) -> np.dtype:
    """uint8 when every label fits in 0..255, else uint16; refuse negatives and > 65535."""
    if labels.dtype.kind not in "biu":
        raise OutputWriteError(
            f"labels must be integers, got {labels.dtype}",
            path=path,
            action="Convert the mask to integer labels before saving (programming error).",
        )
    if labels.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > MAX_LABEL:
        raise OutputWriteError(f"label values must be between 0 and {MAX_LABEL} (found {lo}..{hi})", path=path)
    return label_dtype(hi)


def _refuse_read_only(path: Path) -> None:
    """A file the user made read-only is not replaced (an atomic rename would silently do so on POSIX)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and not mode & stat.S_IWUSR:
        raise OutputWriteError(
            "the existing file is read-only",
            path=path,
            action="Choose another file name, or make the file writable first.",
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _is_orthonormal(direction: tuple[float, ...], atol: float = 1e-4) -> bool:
    """Whether a 3x3 row-major direction matrix is orthonormal (what ITK can store without coercing it)."""
    d = np.reshape(np.asarray(direction, dtype=np.float64), (3, 3))
    return bool(np.allclose(d.T @ d, np.eye(3), atol=atol))


def _write_nifti_affine(labels: np.ndarray, reference: Volume, path: Path) -> None:
    """Write (D, H, W) ``labels`` with nibabel on ``reference``'s exact, possibly sheared, voxel -> world affine.

    The affine goes into the sform (scanner code) and the qform is left unset, as in an image that ITK refuses
    and :func:`~medsam_desktop.io.readers_nibabel.read_nibabel_image` reads: the mask re-opens on the same grid.
    """
    import nibabel as nib  # lazy: only needed for sheared images

    lps = np.reshape(np.asarray(reference.direction, dtype=np.float64), (3, 3)) * np.asarray(reference.spacing)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ lps
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(reference.origin, dtype=np.float64)
    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), affine)
    image.set_sform(affine, code="scanner")
    image.set_qform(None, code="unknown")
    image.header.set_xyzt_units("mm")
    try:
        nib.save(image, str(path))
    except Exception as exc:  # nibabel raises many types; the caller reports an OutputWriteError
        raise OSError(str(exc)) from exc


class _GeometryCheckFailed(Exception):
    """The label map just written does not re-open on the reference grid (internal check)."""


def _source_forms(reference: Volume) -> dict | None:
    """The NIfTI transforms :func:`read_image` recorded for ``reference``, if they fit its grid."""
    raw = reference.extra.get(NIFTI_FORMS_KEY)
    if not raw:
        return None
    try:
        forms = json.loads(raw)
        d, h, w = reference.shape_zyx
        if [int(v) for v in forms["shape"]] != [w, h, d]:
            return None
        return forms
    except (ValueError, KeyError, TypeError):
        return None


def _write_nifti_forms(labels: np.ndarray, forms: dict, path: Path) -> None:
    """Write (D, H, W) ``labels`` with nibabel, with the qform, sform, codes, pixdim and units of ``forms``."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), None)
    header = image.header
    header.set_zooms([float(z) for z in forms["zooms"]])
    qform = np.asarray(forms["qform"], dtype=np.float64)
    sform = np.asarray(forms["sform"], dtype=np.float64)
    if int(forms["qform_code"]) > 0:
        image.set_qform(qform, code=int(forms["qform_code"]))
    else:
        image.set_qform(qform, code=0)  # keep the stored quaternion, unused by readers
        header.set_zooms([float(z) for z in forms["zooms"]])
    image.set_sform(sform, code=int(forms["sform_code"]))
    units = forms.get("xyz_units") or "unknown"
    header.set_xyzt_units(units if units in ("unknown", "meter", "mm", "micron") else "unknown")
    try:
        nib.save(image, str(path))
    except Exception as exc:  # nibabel raises many types; the caller reports an OutputWriteError
        raise OSError(str(exc)) from exc


def _saved_differences(path: Path, labels: np.ndarray, reference: Volume) -> list[str]:
    """What differs between the label map at ``path`` as :func:`read_image` re-opens it and ``reference``."""
    try:
        saved = read_image(path)
    except MedSAMIOError as exc:
        return [f"it cannot be re-opened ({exc.problem})"]
    problems = geometry_differences(saved.geometry, reference.geometry, rtol=1e-5)
    if not problems and not np.array_equal(saved.array, labels):
        problems.append("the voxel values differ")
    return problems


def write_labels_nifti(labels: np.ndarray, reference: Volume, path: str | os.PathLike[str]) -> Path:
    """Save a (D, H, W) integer label map as ``.nii``/``.nii.gz`` on ``reference``'s exact geometry.

    Spacing, origin and direction are copied from ``reference`` (SimpleITK/LPS conventions; a sheared,
    non-orthonormal direction, as nibabel reads some tilted-gantry CT, is kept exactly in the sform);
    dtype is uint8 when max <= 255, else uint16. A (H, W) map is accepted for a one-slice image.
    A reference read from NIfTI gives the mask its header's own qform, sform, codes, pixdim and units, so
    that programs that pick a different transform than ITK (nibabel: the sform) overlay it on the image too.
    The written file is re-opened before it replaces ``path``: it must open on ``reference``'s grid.
    Raises :class:`GeometryMismatchError` if the shape differs, :class:`OutputWriteError` when the
    name is not NIfTI, the target is the reference image itself or a read-only file, or writing fails.
    """
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise OutputWriteError(
            "label maps are saved as NIfTI", path=path, action="Use a file name ending in .nii.gz or .nii."
        )
    if reference.source_path is not None and _same_file(path, reference.source_path):
        raise OutputWriteError(
            "this would overwrite the original image",
            path=path,
            action="Choose a different file name for the segmentation (e.g. add _seg).",
        )
    _refuse_read_only(path)
    labels = np.asarray(labels)
    if labels.ndim == 2 and reference.n_slices == 1:
        labels = labels[np.newaxis]
    if labels.shape != reference.shape_zyx:
        raise GeometryMismatchError(
            f"the mask is {'x'.join(map(str, labels.shape))} but the image is "
            f"{'x'.join(map(str, reference.shape_zyx))} (D x H x W)",
            path=path,
            verb="save",
            action="Segment the image that is currently open and save again.",
        )
    dtype = _label_dtype(labels, path)
    data = np.ascontiguousarray(labels.astype(dtype, copy=False))
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"  # ITK wants lower-case
    forms = _source_forms(reference)
    try:
        with atomic_write(path, suffix=suffix) as tmp:
            problems = ["no transforms to copy"]
            if forms is not None:  # a NIfTI image: the mask gets its very qform/sform, as every reader sees them
                _write_nifti_forms(data, forms, tmp)
                problems = _saved_differences(tmp, data, reference)
                if problems:
                    log.info("%s: the image's NIfTI transforms give %s; saving its geometry instead",
                             path.name, "; ".join(problems))  # fmt: skip
            if problems:
                if _is_orthonormal(reference.direction):
                    image = sitk.GetImageFromArray(data)
                    reference.geometry.apply_to(image)
                    sitk.WriteImage(image, str(tmp), useCompression=True)
                else:  # a sheared affine (read through nibabel): ITK would silently orthogonalise it
                    _write_nifti_affine(data, reference, tmp)
                problems = _saved_differences(tmp, data, reference)
            if problems:  # never replace a good file by a mask that opens on another grid
                raise _GeometryCheckFailed("; ".join(problems))
    except _GeometryCheckFailed as exc:
        raise OutputWriteError(
            f"the saved mask would not open on the image's geometry ({exc})",
            path=path,
            action="Nothing was written; please report this image so that it can be supported.",
        ) from exc
    except (OSError, RuntimeError) as exc:
        raise OutputWriteError(
            "the file could not be written (folder missing, read-only or disk full)",
            path=path,
            detail=str(exc),
        ) from exc
    log.info("saved labels %s (%s, max %d)", path, dtype, int(labels.max()) if labels.size else 0)
    return path


def read_labels(path: str | os.PathLike[str], reference: Volume) -> np.ndarray:
    """Re-open a saved label map onto ``reference``: returns (D, H, W) integer labels.

    Any format :func:`read_image` reads is accepted; values must be whole numbers >= 0. The size,
    spacing, origin and direction must match ``reference`` within 1e-4 (relative), otherwise
    :class:`GeometryMismatchError` says what differs. 2D picture masks (PNG/JPEG/BMP/TIFF) carry
    no geometry, so only their size is checked.
    """
    path = Path(path)
    mask = read_image(path)
    if mask.is_rgb:
        raise InvalidImageError(
            "it is a colour image, not a label map",
            path=path,
            action="Open a grey-level mask (NIfTI or PNG) saved for this image.",
        )
    problems = geometry_differences(mask.geometry, reference.geometry, rtol=1e-4)
    if detect_format(path) == "2d":  # PNG/JPEG/BMP/TIFF carry no geometry: only the size must match
        problems = [p for p in problems if p.startswith("size")]
    if problems:
        raise GeometryMismatchError(
            f"the mask does not fit the open image ({'; '.join(problems)})",
            path=path,
            action="Open the mask together with the image it was drawn on.",
        )
    labels = mask.array
    if labels.dtype.kind in "iuf" and labels.size and labels.min() < 0:  # e.g. the CT picked instead of its mask
        raise InvalidImageError(
            f"it holds negative values (down to {labels.min():g}): it looks like an image, not a label map",
            path=path,
            action="Open a label map (whole numbers 0, 1, 2 ...), e.g. the _seg file saved for this image.",
        )
    if labels.dtype.kind == "f":
        if not np.array_equal(labels, np.rint(labels)):
            raise InvalidImageError(
                "it holds fractional values, not integer labels",
                path=path,
                action="Open a label map (whole numbers 0, 1, 2 ...).",
            )
        top = float(labels.max()) if labels.size else 0.0
        labels = labels.astype(label_dtype(int(top)) if 0 <= top <= MAX_LABEL else np.uint32)  # refused later
    return labels


def write_mask_png(mask: np.ndarray, path: str | os.PathLike[str], *, binary: bool = False) -> Path:
    """Save a (H, W) or (1, H, W) mask as an 8-bit PNG, atomically.

    ``binary=False`` stores label values as-is (0..255, else :class:`OutputWriteError`);
    ``binary=True`` stores 0 for background and 255 for any label (viewable black/white).
    """
    path = Path(path)
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise OutputWriteError(
            f"a PNG mask must be one 2D slice, got shape {arr.shape}",
            path=path,
            action="Save 3D masks as NIfTI (.nii.gz).",
        )
    if path.suffix.lower() != ".png":
        raise OutputWriteError("masks are saved as PNG", path=path, action="Use a file name ending in .png.")
    if binary:
        out = np.where(arr > 0, 255, 0).astype(np.uint8)
    else:
        if _label_dtype(arr, path) != np.uint8:
            raise OutputWriteError(
                "the mask has label values above 255, which PNG cannot hold",
                path=path,
                action="Save it as NIfTI (.nii.gz) instead.",
            )
        out = arr.astype(np.uint8)
    _refuse_read_only(path)
    try:
        with atomic_write(path) as tmp:
            Image.fromarray(np.ascontiguousarray(out)).save(tmp, format="PNG")
    except OSError as exc:
        raise OutputWriteError(
            "the file could not be written (folder missing, read-only or disk full)",
            path=path,
            detail=str(exc),
        ) from exc
    return path
