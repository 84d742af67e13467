"""Reformatted planes of a (D, H, W) volume: axial, coronal and sagittal slices as the app shows them.

Array frame: ``array[z, y, x]`` (z = slice, y = row, x = column). A :class:`Plane` turns the volume into a
stack of 2D slices along one array axis, in the frame the user sees (the PLANE FRAME):

* axial (axis 0): slice ``z`` is ``array[z]``: rows = y, columns = x;
* coronal (axis 1): slice ``y`` is ``array[:, y, :]``: rows = z, columns = x;
* sagittal (axis 2): slice ``x`` is ``array[:, :, x]``: rows = z, columns = y;

and for coronal/sagittal the rows are reversed when ``flip`` is set (superior shown up, see :meth:`Plane.of`).
Every plane is a numpy view (no copy, no resampling): pixels of a reformatted slice keep the voxel spacing,
so they are usually anisotropic (e.g. 0.7 mm columns x 2.5 mm rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...io import Volume

ORIENTATIONS = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class Plane:
    """Slices along one array axis in the plane frame; ``flip`` reverses the rows (coronal/sagittal only)."""

    orientation: str = "axial"
    flip: bool = False

    def __post_init__(self) -> None:
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {self.orientation!r}")
        if self.flip and self.orientation == "axial":
            raise ValueError("axial planes are never flipped")

    @classmethod
    def of(cls, volume: Volume, orientation: str) -> Plane:
        """The plane as the app displays it: rows are slices, flipped when the slice axis points superior."""
        return cls(orientation, orientation != "axial" and volume.direction[8] > 0)

    @property
    def axis(self) -> int:
        """The array axis the slices are taken along (0 = z, 1 = y, 2 = x)."""
        return ORIENTATIONS.index(self.orientation)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        """Array axes in stack order (index, rows, columns, then any channel axes)."""
        return ((0, 1, 2), (1, 0, 2), (2, 0, 1))[self.axis] + tuple(range(3, ndim))

    def stack(self, array: np.ndarray) -> np.ndarray:
        """(D, H, W[, C]) -> view (N, rows, cols[, C]) whose element ``i`` is plane slice ``i``."""
        out = np.asarray(array).transpose(self._axes(np.ndim(array)))
        return out[:, ::-1] if self.flip else out

    def take(self, array: np.ndarray, index: int) -> np.ndarray:
        """Plane slice ``index`` of ``array`` (D, H, W[, C]) -> (rows, cols[, C]) view."""
        return self.stack(array)[index]

    def depth(self, shape_zyx: tuple[int, ...]) -> int:
        """Number of plane slices of a volume of shape (D, H, W)."""
        return int(shape_zyx[self.axis])

    def size(self, shape_zyx: tuple[int, ...]) -> tuple[int, int]:
        """(rows, cols) of one plane slice of a volume of shape (D, H, W)."""
        d, h, w = (int(n) for n in shape_zyx[:3])
        return ((h, w), (d, w), (d, h))[self.axis]

    def to_zyx(self, block: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`stack`: (K, rows, cols) plane slices -> view in (z, y, x) axis order.

        The result is the part of the volume starting at plane slice ``i0`` along :attr:`axis` (see
        :meth:`origin`), covering the whole extent of the two other axes.
        """
        block = np.asarray(block)
        if self.flip:
            block = block[:, ::-1]
        inverse = np.argsort(self._axes(3))
        return block.transpose(tuple(int(a) for a in inverse))

    def origin(self, i0: int) -> tuple[int, int, int]:
        """(z, y, x) offset of a :meth:`to_zyx` block that starts at plane slice ``i0``."""
        out = [0, 0, 0]
        out[self.axis] = int(i0)
        return out[0], out[1], out[2]

    def voxel(self, index: int, row: int, col: int, shape_zyx: tuple[int, ...]) -> tuple[int, int, int]:
        """(z, y, x) array index of pixel (row, col) of plane slice ``index`` (no bounds check)."""
        d = int(shape_zyx[0])
        if self.flip:
            row = d - 1 - row
        return ((index, row, col), (row, index, col), (row, col, index))[self.axis]

    def pixel(self, voxel: tuple[int, int, int], shape_zyx: tuple[int, ...]) -> tuple[int, int, int]:
        """Inverse of :meth:`voxel`: (z, y, x) -> (index, row, col) of the plane slice through it."""
        z, y, x = (int(v) for v in voxel)
        index, row, col = ((z, y, x), (y, z, x), (x, z, y))[self.axis]
        if self.flip:
            row = int(shape_zyx[0]) - 1 - row
        return index, row, col

    def pixel_spacing(self, spacing_xyz: tuple[float, float, float]) -> tuple[float, float]:
        """(column, row) spacing in mm of a plane slice, from the volume's (x, y, z) spacing."""
        sx, sy, sz = spacing_xyz
        return ((sx, sy), (sx, sz), (sy, sz))[self.axis]

    def region(self, i0: int, count: int, shape_zyx: tuple[int, ...]) -> tuple[slice, slice, slice]:
        """(z, y, x) array slices holding plane slices ``i0..i0+count-1`` of a volume of shape (D, H, W).

        ``array[plane.region(i, 1, shape)]`` is the voxel block of plane slice ``i`` (in (z, y, x) order);
        ``plane.stack()`` of that block gives the slice in the plane frame again.
        """
        out = [slice(0, int(n)) for n in shape_zyx[:3]]
        out[self.axis] = slice(int(i0), int(i0) + int(count))
        return out[0], out[1], out[2]

    def brush_radii(self, radius: float, spacing_xyz: tuple[float, float, float]) -> tuple[float, float]:
        """(column, row) radius in pixels of this plane of a brush of ``radius`` BRUSH PIXELS.

        The brush is round in millimetres (so round on screen, where pixels have their physical aspect):
        see :func:`brush_mm`. Each radius is at least half a pixel, so a dab always covers the pixel under
        its centre (e.g. coronal rows of thick slices).
        """
        mm = brush_mm(radius, spacing_xyz)
        sc, sr = (_positive(s) for s in self.pixel_spacing(spacing_xyz))
        return max(mm / sc, 0.5), max(mm / sr, 0.5)


def _positive(value: float) -> float:
    """A spacing usable as a divisor (1 mm when missing, zero or not finite)."""
    value = float(value)
    return value if np.isfinite(value) and value > 0 else 1.0


def brush_mm(radius: float, spacing_xyz: tuple[float, float, float]) -> float:
    """Physical radius in mm of a brush of ``radius`` BRUSH PIXELS.

    A brush pixel is the finer in-plane spacing of the axial image, min(x, y): on axial slices of square
    pixels the brush radius is exactly ``radius`` pixels, and on every view it covers the same millimetres.
    """
    return float(radius) * min(_positive(spacing_xyz[0]), _positive(spacing_xyz[1]))
