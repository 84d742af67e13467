"""The :class:`Volume` container: voxel array + SimpleITK-style geometry, never separated.

Conventions (identical to SimpleITK):

* ``array`` axes are (z, y, x) = (D, H, W) of the source file, no reorientation; colour is a trailing
  channel axis (D, H, W, 3). 2D images have D == 1.
* ``spacing``/``origin`` are (x, y, z) in mm in the LPS patient frame; ``direction`` is the 3x3
  direction-cosine matrix, row-major, whose *columns* are the x, y, z index axes in LPS.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import GeometryMismatchError

__all__ = ["MODALITIES", "Geometry", "Volume", "geometry_differences"]

#: Allowed values of :attr:`Volume.modality`.
MODALITIES: frozenset[str] = frozenset({"CT", "MR", "PT", "NM", "US", "XR", "RGB", "unknown"})

IDENTITY_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _floats(values: object, n: int, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be {n} finite numbers, got {values!r}")
    return out


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a (D, H, W) grid; all tuples in SimpleITK (x, y, z) order."""

    size_xyz: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def to_sitk_image(self, pixel_id: int = sitk.sitkUInt8) -> sitk.Image:
        """A zero-filled SimpleITK image with this geometry (allocates one voxel per grid point)."""
        image = sitk.Image([int(s) for s in self.size_xyz], pixel_id)
        self.apply_to(image)
        return image

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Copy spacing, origin and direction onto a 3D ``image`` (in place) and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def geometry_differences(a: Geometry, b: Geometry, rtol: float = 1e-4) -> list[str]:
    """Human-readable list of what differs between two geometries (empty list = same grid).

    Spacing and origin are compared with ``rtol`` relative plus ``rtol`` mm absolute tolerance,
    direction cosines with ``rtol`` absolute tolerance.
    """
    out: list[str] = []
    if tuple(a.size_xyz) != tuple(b.size_xyz):
        out.append(f"size {_fmt_size(a.size_xyz)} vs {_fmt_size(b.size_xyz)}")
    if not np.allclose(a.spacing, b.spacing, rtol=rtol, atol=rtol):
        out.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm")
    if not np.allclose(a.origin, b.origin, rtol=rtol, atol=rtol):
        out.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)} mm")
    if not np.allclose(a.direction, b.direction, rtol=0.0, atol=rtol):
        out.append("orientation (direction cosines) differs")
    return out


def _fmt(values: tuple[float, ...]) -> str:
    return "x".join(f"{v:.4g}" for v in values)


def _fmt_size(size_xyz: tuple[int, ...]) -> str:
    return "x".join(str(int(v)) for v in size_xyz)


@dataclass(frozen=True, eq=False)
class Volume:
    """An image or volume with its geometry.

    ``array``: (D, H, W) grey or (D, H, W, 3) RGB, source dtype, SimpleITK (z, y, x) axis order.
    ``spacing``/``origin``: (x, y, z) mm; ``direction``: 9 floats, row-major 3x3 (SimpleITK order).
    ``modality``: one of :data:`MODALITIES` (a hint, never used to alter voxels).
    ``is_2d``: True for single-slice images (defaults to ``D == 1``).
    ``extra``: free-form string metadata (e.g. DICOM window centre/width, photometric).
    The dataclass is frozen; treat ``array`` as read-only and use :meth:`with_array` for new data.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    modality: str = "unknown"
    is_2d: bool | None = None
    source_path: Path | None = None
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        arr = self.array
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Volume.array must be a numpy array, got {type(arr).__name__}")
        if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[3] == 3)):
            raise ValueError(f"Volume.array must be (D, H, W) or (D, H, W, 3), got shape {arr.shape}")
        if arr.dtype == object:
            raise TypeError("Volume.array must not be an object array")
        spacing = _floats(self.spacing, 3, "spacing")
        if min(spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {spacing}")
        set_ = object.__setattr__
        set_(self, "spacing", spacing)
        set_(self, "origin", _floats(self.origin, 3, "origin"))
        set_(self, "direction", _floats(self.direction, 9, "direction"))
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {self.modality!r}")
        set_(self, "is_2d", bool(arr.shape[0] == 1) if self.is_2d is None else bool(self.is_2d))
        if self.source_path is not None and not isinstance(self.source_path, Path):
            set_(self, "source_path", Path(self.source_path))

    # --- shape helpers -------------------------------------------------------------------------
    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """(D, H, W) spatial shape (channels excluded)."""
        d, h, w = self.array.shape[:3]
        return int(d), int(h), int(w)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array-axis order (z, y, x) mm."""
        sx, sy, sz = self.spacing
        return sz, sy, sx

    @property
    def is_rgb(self) -> bool:
        return self.array.ndim == 4

    @property
    def n_slices(self) -> int:
        return int(self.array.shape[0])

    @property
    def geometry(self) -> Geometry:
        d, h, w = self.shape_zyx
        return Geometry((w, h, d), self.spacing, self.origin, self.direction)  # type: ignore[arg-type]

    def slice(self, z: int) -> np.ndarray:
        """Axial slice ``z`` as (H, W) or (H, W, 3) (a view, not a copy). Negative ``z`` counts back."""
        n = self.n_slices
        if not -n <= z < n:
            raise IndexError(f"slice {z} out of range for a volume with {n} slices")
        return self.array[z]

    # --- conversions ---------------------------------------------------------------------------
    def to_sitk_reference(self) -> sitk.Image:
        """A uint8 zero SimpleITK image with this volume's size and geometry (e.g. for Resample)."""
        return self.geometry.to_sitk_image(sitk.sitkUInt8)

    def to_sitk(self) -> sitk.Image:
        """The voxel data as a SimpleITK image (vector pixels for RGB) with this geometry."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=self.is_rgb)
        return self.geometry.apply_to(image)

    def with_array(self, new_array: np.ndarray) -> Volume:
        """Same geometry/metadata with another array of the same (D, H, W) (grey or RGB)."""
        new_array = np.asarray(new_array)
        if new_array.ndim < 3 or tuple(new_array.shape[:3]) != self.shape_zyx:
            raise GeometryMismatchError(
                f"the new array has shape {new_array.shape} but the image is "
                f"{'x'.join(map(str, self.shape_zyx))} (D x H x W)",
                action="Pass an array with the same number of slices, rows and columns.",
            )
        return dataclasses.replace(self, array=new_array, is_2d=self.is_2d, extra=dict(self.extra))

    def __repr__(self) -> str:  # arrays are big: summarise them
        return (
            f"Volume(shape={self.array.shape}, dtype={self.array.dtype}, spacing={_fmt(self.spacing)}, "
            f"modality={self.modality!r}, is_2d={self.is_2d}, source={self.source_path})"
        )
