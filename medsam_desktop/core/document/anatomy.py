"""Anatomical names of the two directions a view's slices step in (the propagation dialog) and the letters at a view's
edges (Qt-free).

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


def _named(direction: Sequence[float], index_axis: int, names: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """(name towards index 0, name towards the last index) of one SimpleITK index axis, from ``names`` per physical
    LPS axis (negative, positive); None for an oblique axis (cosine below :data:`MIN_COSINE`)."""
    column = [float(direction[i * 3 + index_axis]) for i in range(3)]
    k = max(range(3), key=lambda i: abs(column[i]))
    if abs(column[k]) < MIN_COSINE:
        return None
    negative, positive = names[k]
    return (negative, positive) if column[k] > 0 else (positive, negative)


def slice_directions(direction: Sequence[float], orientation: str) -> tuple[str, str] | None:
    """(towards slice 0, towards the last slice) of ``orientation``, e.g. ``("inferior", "superior")`` for an
    axial CT stored feet first; None for an oblique slice axis or a direction that is not 3 x 3."""
    if orientation not in _INDEX_AXIS or len(direction) != 9:
        return None
    return _named(direction, _INDEX_AXIS[orientation], _NAMES)


#: physical LPS axis -> (letter of the negative direction, letter of the positive direction)
_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
#: orientation -> the SimpleITK index axes of the displayed (columns, rows)
_PLANE_AXES = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}


def axis_letters(direction: Sequence[float], index_axis: int) -> tuple[str, str]:
    """(letter towards index 0, letter towards the last index) of one SimpleITK index axis, e.g. ``("R", "L")``
    for x of an LPS volume; ``("", "")`` for an axis that is oblique (cosine below :data:`MIN_COSINE`)."""
    return _named(direction, index_axis, _LETTERS) or ("", "")


def edge_letters(direction: Sequence[float], orientation: str, flip_rows: bool = False) -> tuple[str, str, str, str]:
    """The anatomical letters at the (left, right, top, bottom) edges of a displayed slice of ``orientation``
    (columns run left to right, rows top to bottom, reversed when ``flip_rows``, as ``Plane.flip``); an oblique
    axis gives empty letters. E.g. an LPS axial slice: ``("R", "L", "A", "P")`` (radiological convention)."""
    if orientation not in _PLANE_AXES or len(direction) != 9:
        return "", "", "", ""
    cols, rows = _PLANE_AXES[orientation]
    left, right = axis_letters(direction, cols)
    top, bottom = axis_letters(direction, rows)
    if flip_rows:
        top, bottom = bottom, top
    return left, right, top, bottom
