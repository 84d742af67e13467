"""Undo/redo of label edits as compact diffs (no Qt).

A :class:`Step` stores only the bounding box of the voxels an edit changed (the crop before and after), plus
optional label-table snapshots, so a brush stroke on a 512x512x300 volume costs kilobytes, not the volume.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Region = tuple[slice, slice, slice]
TableState = list[dict[str, Any]]

_ids = itertools.count(1)


@dataclass
class Step:
    """One undoable edit: ``labels[region]`` goes ``before`` -> ``after``; the table ``table_before`` -> after."""

    description: str
    region: Region | None = None
    before: np.ndarray | None = None
    after: np.ndarray | None = None
    table_before: TableState | None = None
    table_after: TableState | None = None
    serial: int = field(default_factory=lambda: next(_ids))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.before, self.after) if a is not None)

    @property
    def z_range(self) -> tuple[int, int] | None:
        """Inclusive slice range touched by the voxel part, or None for a table-only step."""
        if self.region is None:
            return None
        return int(self.region[0].start), int(self.region[0].stop) - 1


def changed_bbox(before: np.ndarray, after: np.ndarray) -> Region | None:
    """Tight bounding box (as slices) of the voxels that differ between two equal-shape 3D crops."""
    diff = before != after
    if not diff.any():
        return None
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(diff.any(axis=other))
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return out[0], out[1], out[2]


def make_voxel_diff(
    region: Region, before: np.ndarray, after: np.ndarray
) -> tuple[Region, np.ndarray, np.ndarray] | None:
    """Shrink a (region, before crop, after crop) triple to the changed bbox; None when nothing changed."""
    inner = changed_bbox(before, after)
    if inner is None:
        return None
    absolute = tuple(slice((r.start or 0) + i.start, (r.start or 0) + i.stop) for r, i in zip(region, inner))
    return absolute, before[inner].copy(), after[inner].copy()  # type: ignore[return-value]


class UndoStack:
    """Linear history bounded by ``max_steps`` and by ``max_bytes`` of stored diffs (oldest dropped first)."""

    def __init__(self, max_steps: int = 100, max_bytes: int = 512 * 2**20) -> None:
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self._steps: list[Step] = []
        self._index = 0  # steps[:index] are done, steps[index:] can be redone
        self._base_serial = 0  # serial of the state before the oldest kept step

    def __len__(self) -> int:
        return len(self._steps)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._steps)

    @property
    def can_undo(self) -> bool:
        return self._index > 0

    @property
    def can_redo(self) -> bool:
        return self._index < len(self._steps)

    @property
    def current_serial(self) -> int:
        """Serial of the last done step (0 when at the start): identifies a document state for 'dirty'."""
        return self._steps[self._index - 1].serial if self._index else self._base_serial

    def undo_text(self) -> str:
        return self._steps[self._index - 1].description if self.can_undo else ""

    def redo_text(self) -> str:
        return self._steps[self._index].description if self.can_redo else ""

    def push(self, step: Step) -> None:
        del self._steps[self._index :]
        self._steps.append(step)
        total = self.nbytes
        while len(self._steps) > 1 and (len(self._steps) > self.max_steps or total > self.max_bytes):
            dropped = self._steps.pop(0)
            total -= dropped.nbytes
            self._base_serial = dropped.serial
        self._index = len(self._steps)

    def pop_undo(self) -> Step | None:
        if not self.can_undo:
            return None
        self._index -= 1
        return self._steps[self._index]

    def pop_redo(self) -> Step | None:
        if not self.can_redo:
            return None
        self._index += 1
        return self._steps[self._index - 1]

    def clear(self) -> None:
        self._base_serial = self.current_serial
        self._steps.clear()
        self._index = 0
