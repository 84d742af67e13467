"""Anatomical names of the two directions a view's slices step in (Qt-free; used by the propagation dialog).

The volume's direction matrix (SimpleITK, row-major, physical LPS: +x left, +y posterior, +z superior) tells
where each array axis points. Slices of the axial view step along the image's z axis, coronal along y, sagittal
along x. When that axis points mostly (cosine >= 0.8) along one body axis the two directions are named
("inferior" / "superior"); an oblique axis gets no names (callers then speak of slice numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

#: orientation -> SimpleITK index axis (x = 0, y = 1, z = 2) its slices step along
_INDEX_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
#: physical LPS axis -> (name of the negative direction, name of the positive direction)
_NAMES = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))
#: a slice axis at most ~37 degrees off a body axis is named after it
MIN_COSINE = 0.8


def slice_directions(direction: Sequence[float], orientation: str) -> tuple[str, str] | None:
    """(towards slice 0, towards the last slice) of ``orientation``, e.g. ``("inferior", "superior")`` for an
    axial CT stored feet first; None for an oblique slice axis or a direction that is not 3 x 3."""
    if orientation not in _INDEX_AXIS or len(direction) != 9:
        return None
    j = _INDEX_AXIS[orientation]
    column = [float(direction[i * 3 + j]) for i in range(3)]
    k = max(range(3), key=lambda i: abs(column[i]))
    if abs(column[k]) < MIN_COSINE:
        return None
    negative, positive = _NAMES[k]
    return (negative, positive) if column[k] > 0 else (positive, negative)
