"""A propagation's results before they are committed, shown by every view while it runs.

Slices arrive in the PLANE FRAME of the plane the propagation walks along (see
:class:`~medsam_desktop.core.inference.reformat.Plane`); they are kept in one (z, y, x) boolean volume so any
view, of any orientation, reads its own slice of them as a numpy view (an axial view of a coronal propagation
shows the rows propagated so far). The volume is allocated on the first slice and freed by :meth:`clear`.
"""

from __future__ import annotations

import numpy as np

from ..inference.reformat import Plane


class PropagationPreview:
    """Uncommitted propagation slices of one label, in (z, y, x); one propagation at a time."""

    def __init__(self) -> None:
        self.mask: np.ndarray | None = None  # (D, H, W) bool, None while empty
        self.label = 0
        self.plane = Plane("axial")
        self.slices: set[int] = set()  # plane slices held

    def put(self, plane: Plane, index: int, mask: np.ndarray, label: int, shape_zyx: tuple[int, ...]) -> None:
        """Hold ``mask`` (rows, cols of ``plane``) as slice ``index``; slices of another plane are dropped."""
        shape = tuple(int(n) for n in shape_zyx[:3])
        if plane != self.plane or self.mask is None or self.mask.shape != shape:
            self.clear()
            self.plane = plane
            self.mask = np.zeros(shape, bool)
        plane.take(self.mask, index)[...] = np.asarray(mask, bool)
        self.slices.add(int(index))
        self.label = int(label)

    def remove(self, plane: Plane, index: int) -> None:
        """Forget slice ``index`` of ``plane`` (nothing when not held)."""
        if self.mask is not None and plane == self.plane and index in self.slices:
            plane.take(self.mask, index)[...] = False
            self.slices.discard(int(index))

    def clear(self) -> None:
        self.mask = None
        self.slices.clear()

    def take(self, plane: Plane, index: int) -> np.ndarray | None:
        """The held voxels on slice ``index`` of ``plane`` (rows, cols view), None when nothing is held."""
        if self.mask is None or not self.slices:
            return None
        return plane.take(self.mask, index)

    def touches(self, plane: Plane, index: int, shown: Plane, shown_index: int) -> bool:
        """Whether slice ``index`` of ``plane`` crosses slice ``shown_index`` of the ``shown`` plane."""
        return plane.axis != shown.axis or index == shown_index
