"""SimpleITK-backed readers (NIfTI, NRRD, MetaImage, DICOM pixels) and sitk.Image -> Volume conversion."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ._checks import check_size, finalize_array, guess_modality
from .errors import DATA_UNREADABLE, HEADER_UNREADABLE, InvalidImageError, reading
from .volume import IDENTITY_DIRECTION, Volume

log = logging.getLogger(__name__)


# ITK's warnings ("WARNING: In /tmp/SimpleITK-build/ITK/...", e.g. "Analyze file ... deprecated") go to stderr as
# multi-line blocks with build paths: noise to a user. Errors still raise and become one line (errors.reading).
sitk.ProcessObject.SetGlobalWarningDisplay(False)

#: the suffixes of the formats only SimpleITK reads here
SUFFIXES = {"nrrd": (".nrrd", ".nhdr"), "meta": (".mha", ".mhd")}


def _geometry_3d(image: sitk.Image) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Spacing, origin, direction of a 2D or 3D image, embedded in 3D (z spacing 1, identity z)."""
    dim = image.GetDimension()
    spacing, origin, direction = image.GetSpacing(), image.GetOrigin(), image.GetDirection()
    if dim == 3:
        return spacing, origin, direction
    if dim == 2:
        d = direction
        return (*spacing, 1.0), (*origin, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    raise ValueError(f"unexpected dimension {dim}")


def _reduce_dimension(image: sitk.Image, path: Path) -> sitk.Image:
    """Drop trailing singleton dimensions of 4D+ images; refuse real time series."""
    size = list(image.GetSize())
    if len(size) <= 3:
        return image
    if any(s != 1 for s in size[3:]):
        raise InvalidImageError(
            f"it is a {len(size)}D image ({'x'.join(map(str, size))}), e.g. a time series or "
            "multi-channel scan, which cannot be segmented directly",
            path=path,
            action="Export a single 3D volume (one time point or channel) and open that.",
        )
    image = sitk.Extract(image, [*size[:3]] + [0] * (len(size) - 3), [0] * len(size))
    return image


def _to_rgb_array(array: np.ndarray, n_comp: int, path: Path) -> np.ndarray:
    """(..., C) vector array -> (..., 3) RGB; C == 4 drops alpha, C == 1 squeezes; else refuse."""
    if n_comp == 1:
        return array[..., 0]
    if n_comp in (3, 4) and array.dtype in (np.uint8, np.uint16):
        return array[..., :3]
    raise InvalidImageError(
        f"each voxel has {n_comp} {array.dtype} components (not a grey or RGB colour image)",
        path=path,
        action="Export a grey-level or RGB image and open that instead.",
    )


def volume_from_sitk(
    image: sitk.Image,
    path: Path,
    *,
    modality: str | None = None,
    description: str = "",
    is_2d: bool | None = None,
    source_path: Path | None = None,
) -> Volume:
    """Convert a 2D/3D (or 4D with singleton t) SimpleITK image to a :class:`Volume`.

    ``modality=None`` applies :func:`guess_modality`. Arrays come out as (D, H, W[, 3]).
    """
    image = _reduce_dimension(image, path)
    dim = image.GetDimension()
    array = sitk.GetArrayFromImage(image)
    n_comp = image.GetNumberOfComponentsPerPixel()
    if n_comp > 1:
        array = _to_rgb_array(array, n_comp, path)
    if dim == 2:
        array = array[np.newaxis]
    if dim == 2 and is_2d is None:
        is_2d = True
    array = finalize_array(array, path)
    spacing, origin, direction = _geometry_3d(image)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(np.reshape(direction, (3, 3)))) < 1e-6:
        log.warning("%s: degenerate direction matrix %s; using identity", path.name, direction)
        direction = IDENTITY_DIRECTION
    return Volume(
        array=array,
        spacing=spacing,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        modality=guess_modality(array) if modality is None else modality,
        is_2d=is_2d,
        source_path=source_path if source_path is not None else path,
        description=description,
    )


def read_sitk_image(path: Path, image_io: str = "") -> Volume:
    """Read a NIfTI/NRRD/MetaImage (or other SimpleITK-supported) file; modality is guessed.

    Checks the header size before loading voxels; SimpleITK errors become :class:`CorruptFileError`.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if image_io:
        reader.SetImageIO(image_io)
    with reading(path, HEADER_UNREADABLE, (RuntimeError,)):
        reader.ReadImageInformation()
    check_size(reader.GetSize(), path)
    with reading(path, DATA_UNREADABLE, (RuntimeError,)):
        image = reader.Execute()
    return volume_from_sitk(image, path)
