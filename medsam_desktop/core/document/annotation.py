"""Qt-free document model of an annotation: image, label map, label table, undo history and events.

Views subscribe to the :class:`Signal` attributes of :class:`AnnotationSession`:

* ``labels_changed(z0, z1)`` - voxels of slices z0..z1 (inclusive) changed;
* ``table_changed()`` - a label was added, removed, renamed, recoloured or its display changed;
* ``active_changed(label_id)``, ``dirty_changed(dirty)``, ``history_changed()``.

Every voxel operation is one undo step stored as a compact diff (see :mod:`medsam_desktop.core.document.undo`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from enum import Enum
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from ...io import Volume
from ...io.formats import LABEL_SUFFIXES, strip_suffix
from ...io.label_values import label_dtype
from ..inference.reformat import Plane
from .undo import Region, Step, TableState, UndoStack, make_voxel_diff

log = logging.getLogger(__name__)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) bool with every background region that does not reach the border (4-connected, as
    ``scipy.ndimage.binary_fill_holes`` defines holes) set. Uses SimpleITK, so the app needs no scipy."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    filled = sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayViewFromImage(filled).astype(bool)


SIDECAR_FORMAT = "medsam-desktop-labels"
MAX_LABEL = 65535

#: Distinct default colours (RGB), cycled by label id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip


class Signal:
    """A minimal synchronous signal: ``connect(fn)``, ``disconnect(fn)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._slots: list[Callable[..., Any]] = []

    def connect(self, slot: Callable[..., Any]) -> None:
        if slot not in self._slots:
            self._slots.append(slot)

    def disconnect(self, slot: Callable[..., Any]) -> None:
        if slot in self._slots:
            self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self._slots):
            slot(*args)


class OverlapRule(str, Enum):
    """What a new mask does where another label already is."""

    OVERWRITE = "overwrite"  # the new label replaces other labels
    BACKGROUND = "background"  # only background voxels are filled; other labels are protected


@dataclass
class Label:
    id: int
    name: str
    color: tuple[int, int, int]
    visible: bool = True
    opacity: float = 0.5
    locked: bool = False  # box, brush, eraser, fill and propagation never change a locked label's voxels


class LabelLockedError(ValueError):
    """An edit would change the voxels of a locked label; the message is one line for the user."""


def default_color(label_id: int) -> tuple[int, int, int]:
    return PALETTE[(label_id - 1) % len(PALETTE)]


class LabelTable:
    """Ordered labels by id (1..65535); 0 is background and never listed."""

    def __init__(self, labels: list[Label] | None = None) -> None:
        self._labels: dict[int, Label] = {lb.id: lb for lb in labels or []}

    def __iter__(self) -> Iterator[Label]:
        return iter(sorted(self._labels.values(), key=lambda lb: lb.id))

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._labels

    def get(self, label_id: int) -> Label:
        return self._labels[label_id]

    def ids(self) -> list[int]:
        return sorted(self._labels)

    def next_id(self) -> int:
        free = next((i for i in range(1, MAX_LABEL + 1) if i not in self._labels), None)
        if free is None:
            raise ValueError("all 65535 label ids are in use")
        return free

    def add(
        self, name: str | None = None, color: tuple[int, int, int] | None = None, label_id: int | None = None
    ) -> Label:
        lid = self.next_id() if label_id is None else int(label_id)
        if not 1 <= lid <= MAX_LABEL:
            raise ValueError(f"label id must be 1..{MAX_LABEL}, got {lid}")
        if lid in self._labels:
            raise ValueError(f"label {lid} exists already")
        label = Label(lid, name or f"Label {lid}", tuple(color or default_color(lid)))  # type: ignore[arg-type]
        self._labels[lid] = label
        return label

    def remove(self, label_id: int) -> None:
        del self._labels[label_id]

    def lut(self, size: int | None = None) -> np.ndarray:
        """RGBA lookup table (size, 4) uint8: row i colours label i (transparent when hidden/absent/0)."""
        n = max([size or 0, *(i + 1 for i in self._labels)])
        lut = np.zeros((max(n, 1), 4), np.uint8)
        for lb in self._labels.values():
            if lb.visible and lb.id < n:
                lut[lb.id, :3] = lb.color
                lut[lb.id, 3] = round(255 * min(max(lb.opacity, 0.0), 1.0))
        return lut

    def state(self) -> TableState:
        return [asdict(lb) for lb in self]

    @classmethod
    def from_state(cls, state: TableState) -> LabelTable:
        return cls(
            [
                Label(
                    int(d["id"]),
                    str(d["name"]),
                    tuple(int(c) for c in d["color"]),  # type: ignore[arg-type]
                    bool(d.get("visible", True)),
                    float(d.get("opacity", 0.5)),
                    bool(d.get("locked", False)),
                )
                for d in state
            ]
        )

    def to_json(self) -> str:
        return json.dumps({"format": SIDECAR_FORMAT, "version": 1, "labels": self.state()}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> LabelTable:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            raise ValueError("not a MedSAM Desktop label sidecar")
        return cls.from_state(data["labels"])


def sidecar_path(labels_path: str | Path) -> Path:
    """``case_seg.nii.gz`` / ``case_seg.png`` -> ``case_seg.json`` (names and colours of the labels)."""
    path = Path(labels_path)
    return path.with_name(strip_suffix(path.name, LABEL_SUFFIXES) + ".json")


class AnnotationSession:
    """The labels drawn on one image, with undo/redo. Label map (D, H, W) uint8 (uint16 above 255)."""

    def __init__(self, volume: Volume, max_undo: int = 100, max_undo_bytes: int = 512 * 2**20) -> None:
        self.volume = volume
        self._labels = np.zeros(volume.shape_zyx, np.uint8)
        self.table = LabelTable()
        self.overlap = OverlapRule.OVERWRITE
        self.history = UndoStack(max_undo, max_undo_bytes)
        self._active = 0
        self._saved_serial = self.history.current_serial
        self._dirty = False
        self._stroke: _Stroke | None = None
        self.labels_changed = Signal()
        self.table_changed = Signal()
        self.active_changed = Signal()
        self.dirty_changed = Signal()
        self.history_changed = Signal()

    # --- state -----------------------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """The label map (D, H, W); treat as read-only, edit through the methods."""
        return self._labels

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._labels.shape  # type: ignore[return-value]

    @property
    def active_label(self) -> int:
        return self._active

    def set_active_label(self, label_id: int) -> None:
        if label_id != 0 and label_id not in self.table:
            raise KeyError(f"no label {label_id}")
        if label_id != self._active:
            self._active = label_id
            self.active_changed.emit(label_id)

    def ensure_active_label(self) -> int:
        """The active label, creating 'Label 1' when the table is empty."""
        if self._active == 0:
            if not len(self.table):
                self.add_label()
            self.set_active_label(self.table.ids()[0])
        return self._active

    @property
    def dirty(self) -> bool:
        return self._dirty

    def mark_saved(self) -> None:
        self._saved_serial = self.history.current_serial
        self._update_dirty()

    def _update_dirty(self) -> None:
        dirty = self.history.current_serial != self._saved_serial
        if dirty != self._dirty:
            self._dirty = dirty
            self.dirty_changed.emit(dirty)

    # --- core edit machinery ---------------------------------------------------------------------
    def _ensure_dtype(self, value: int) -> None:
        needed = label_dtype(value)
        if needed.itemsize > self._labels.dtype.itemsize:  # widen only (uint8 -> uint16)
            self._labels = self._labels.astype(needed)

    def _commit(self, step: Step) -> None:
        self.history.push(step)
        self._update_dirty()
        self.history_changed.emit()

    def _edit(
        self,
        region: Region,
        fn: Callable[[np.ndarray], None],
        description: str,
        table_fn: Callable[[], None] | None = None,
    ) -> bool:
        """Run ``fn(labels[region])`` in place and ``table_fn()``; record one step. True if anything changed."""
        self._flush_stroke()
        table_before = self.table.state() if table_fn else None
        before = self._labels[region].copy()
        fn(self._labels[region])
        diff = make_voxel_diff(region, before, self._labels[region])
        if table_fn:
            table_fn()
        table_after = self.table.state() if table_fn else None
        if diff is None and table_before == table_after:
            return False
        step = Step(description, table_before=table_before, table_after=table_after)
        if diff is not None:
            step.region, step.before, step.after = diff
        self._commit(step)
        if diff is not None:
            z0, z1 = step.z_range  # type: ignore[misc]
            self.labels_changed.emit(z0, z1)
        if table_fn:
            self.table_changed.emit()
        return True

    def locked_ids(self) -> list[int]:
        """The labels whose voxels no edit changes."""
        return [lb.id for lb in self.table if lb.locked]

    def _unlocked(self, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``mask`` without the voxels of locked labels in ``target``."""
        locked = self.locked_ids()
        return mask & ~np.isin(target, locked) if locked else mask

    def _check_unlocked(self, value: int) -> None:
        if value in self.table and self.table.get(value).locked:
            raise LabelLockedError(f"{self.table.get(value).name} is locked: unlock it to change its voxels")

    def _paint(self, target: np.ndarray, mask: np.ndarray, value: int) -> None:
        """Write ``value`` into ``target`` where ``mask``, obeying the overlap rule; voxels of locked labels are
        never overwritten."""
        if self.overlap is OverlapRule.BACKGROUND:
            mask = mask & ((target == 0) | (target == value))
        target[self._unlocked(target, mask)] = value

    def _label_value(self, label: int | None) -> int:
        """The label an edit paints (default: the active one); LabelLockedError when it is locked."""
        value = self.ensure_active_label() if label is None else int(label)
        if value not in self.table:
            raise KeyError(f"no label {value}")
        self._check_unlocked(value)
        self._ensure_dtype(value)
        return value

    # --- voxel operations ------------------------------------------------------------------------
    def apply_mask(self, z: int, mask: np.ndarray, label: int | None = None, description: str = "Segment") -> bool:
        """Paint a (H, W) bool mask on slice ``z`` with ``label`` (default: the active label)."""
        value = self._label_value(label)
        mask = np.asarray(mask, bool)
        if mask.shape != self.shape[1:]:
            raise ValueError(f"mask shape {mask.shape} does not match the slice {self.shape[1:]}")
        region = _bbox_region(mask[None], z)
        if region is None:
            return False
        local = mask[region[1], region[2]][None]
        return self._edit(region, lambda view: self._paint(view, local, value), description)

    def apply_volume_mask(
        self, mask: np.ndarray, label: int | None = None, z0: int = 0, description: str = "Propagate"
    ) -> bool:
        """Paint a (K, H, W) bool mask starting at slice ``z0`` (e.g. a propagation result) as ONE undo step."""
        value = self._label_value(label)
        mask = np.asarray(mask, bool)
        if mask.ndim != 3 or mask.shape[1:] != self.shape[1:] or z0 < 0 or z0 + mask.shape[0] > self.shape[0]:
            raise ValueError(f"mask shape {mask.shape} at slice {z0} does not fit the volume {self.shape}")
        region = _bbox_region(mask, z0)
        if region is None:
            return False
        local = mask[region[0].start - z0 : region[0].stop - z0, region[1], region[2]]
        return self._edit(region, lambda view: self._paint(view, local, value), description)

    def apply_plane_mask(
        self, plane: Plane, index: int, mask: np.ndarray, label: int | None = None, description: str = "Segment"
    ) -> bool:
        """Paint a (rows, cols) bool mask in the PLANE FRAME of ``plane`` slice ``index`` (one undo step).

        E.g. a coronal mask (D, W) lands on ``labels[:, index, :]`` (rows reversed when ``plane.flip``).
        """
        return self.apply_stack_mask(plane, index, np.asarray(mask, bool)[None], label, description)

    def apply_stack_mask(
        self, plane: Plane, i0: int, mask: np.ndarray, label: int | None = None, description: str = "Propagate"
    ) -> bool:
        """Paint (K, rows, cols) plane-frame masks of ``plane`` slices i0..i0+K-1 as ONE undo step."""
        value = self._label_value(label)
        mask = np.asarray(mask, bool)
        depth = plane.depth(self.shape)
        if mask.ndim != 3 or mask.shape[1:] != plane.size(self.shape) or i0 < 0 or i0 + mask.shape[0] > depth:
            raise ValueError(
                f"{plane.orientation} mask shape {mask.shape} at slice {i0} does not fit the volume {self.shape}"
            )
        block = plane.to_zyx(mask)  # (z, y, x) order, starting at plane.origin(i0)
        region = _bbox_region(block, *plane.origin(i0))
        if region is None:
            return False
        z, y, x = plane.origin(i0)
        local = block[region[0].start - z : region[0].stop - z, region[1].start - y : region[1].stop - y,
                      region[2].start - x : region[2].stop - x]  # fmt: skip
        return self._edit(region, lambda view: self._paint(view, local, value), description)

    def plane_slice(self, plane: Plane, index: int) -> np.ndarray:
        """A copy of plane slice ``index``'s label values (rows, cols) in the plane frame of ``plane``."""
        return plane.take(self._labels, index).copy()

    def repaint_plane_mask(
        self, plane: Plane, index: int, base: np.ndarray, mask: np.ndarray, label: int | None = None,
        description: str = "Click",
    ) -> bool:  # fmt: skip
        """Set plane slice ``index`` to ``base`` (its label values as they were, e.g. before a box) painted with
        ``mask`` (one undo step): a click's mask replaces the box's or the previous click's instead of adding to
        it. Locked labels keep their voxels; the slice's voxels outside ``base != current`` and ``mask`` are not
        touched."""
        value = self._label_value(label)
        mask = np.asarray(mask, bool)
        base = np.asarray(base)
        size = plane.size(self.shape)
        if mask.shape != size or base.shape != size or not 0 <= index < plane.depth(self.shape):
            raise ValueError(f"{plane.orientation} slice {index}: mask {mask.shape} / base {base.shape} != {size}")

        def repaint(view: np.ndarray) -> None:
            sl = plane.stack(view)[0]  # plane-frame view into the label map
            target = base.astype(sl.dtype)
            self._paint(target, mask, value)
            keep = self._unlocked(sl, np.ones(sl.shape, bool))  # locked voxels stay as they are
            sl[keep] = target[keep]

        return self._edit(plane.region(index, 1, self.shape), repaint, description)

    def fill_holes(self, index: int | None = None, label: int | None = None, plane: Plane | None = None) -> bool:
        """Fill the holes of ``label`` slice by slice in ``plane`` (default axial), as one undo step.

        ``index`` is the slice along ``plane.axis`` (axial z, coronal y, sagittal x); None fills every slice.
        Holes are 2D (4-connected background not reaching the slice border) in that plane.
        """
        value = self._label_value(label)
        plane = plane or Plane()
        depth = plane.depth(self.shape)
        if index is not None and not 0 <= index < depth:
            return False
        stack = plane.stack(self._labels)
        present = [k for k in (range(depth) if index is None else (index,)) if (stack[k] == value).any()]
        if not present:
            return False
        region = plane.region(present[0], present[-1] - present[0] + 1, self.shape)

        def fill(view: np.ndarray) -> None:
            for sl in plane.stack(view):  # plane-frame views into the label map
                m = sl == value
                if m.any():
                    self._paint(sl, fill_holes(m) & ~m, value)

        return self._edit(region, fill, "Fill holes")

    def clear_slice(self, index: int, label: int | None = None, plane: Plane | None = None) -> bool:
        """Remove ``label`` (every label when None) from slice ``index`` of ``plane`` (default axial)."""
        plane = plane or Plane()
        if not 0 <= index < plane.depth(self.shape):
            return False

        if label is not None:
            self._check_unlocked(label)

        def clear(view: np.ndarray) -> None:
            hit = view != 0 if label is None else view == label
            view[self._unlocked(view, hit)] = 0  # "every label" keeps the locked ones

        return self._edit(plane.region(index, 1, self.shape), clear, "Clear slice")

    def clear_label(self, label: int) -> bool:
        """Remove every voxel of ``label`` (the label stays in the table); LabelLockedError when locked."""
        self._check_unlocked(label)
        region = _bbox_region(self._labels == label, 0)
        if region is None:
            return False
        return self._edit(region, lambda v: v.__setitem__(v == label, 0), "Clear label")

    def replace_labels(
        self, labels: np.ndarray, table: LabelTable | None = None, description: str = "Open mask"
    ) -> bool:
        """Replace the whole label map (e.g. a mask opened from disk) as one undo step; adds missing labels."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise ValueError(f"labels shape {labels.shape} does not match the image {self.shape}")
        top = int(labels.max()) if labels.size else 0
        self._ensure_dtype(top)
        present = [int(v) for v in np.unique(labels) if v != 0]

        def merge_table() -> None:
            for v in present:
                if v not in self.table:
                    src = table.get(v) if table is not None and v in table else None
                    self.table.add(src.name if src else None, src.color if src else None, label_id=v)
            if table is not None:
                for lb in table:
                    if lb.id in self.table:
                        mine = self.table.get(lb.id)
                        mine.name, mine.color = lb.name, lb.color

        region: Region = (slice(0, self.shape[0]), slice(None), slice(None))
        changed = self._edit(region, lambda v: v.__setitem__(Ellipsis, labels), description, table_fn=merge_table)
        if self._active not in self.table:
            self._active = 0
        if self._active == 0 and len(self.table):
            self.set_active_label(self.table.ids()[0])
        return changed

    def restore_state(
        self, labels: np.ndarray, table: LabelTable, active: int = 0, description: str = "Restore autosave"
    ) -> bool:
        """Replace the label map and the whole label table (names, colours, display) as one undo step."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise ValueError(f"labels shape {labels.shape} does not match the image {self.shape}")
        self._ensure_dtype(max([int(labels.max()) if labels.size else 0, *table.ids()]))

        def swap_table() -> None:
            for lid in self.table.ids():
                self.table.remove(lid)
            for lb in table:
                self.table.add(lb.name, lb.color, label_id=lb.id)
                mine = self.table.get(lb.id)
                mine.visible, mine.opacity = lb.visible, lb.opacity

        region: Region = (slice(0, self.shape[0]), slice(None), slice(None))
        changed = self._edit(region, lambda v: v.__setitem__(Ellipsis, labels), description, table_fn=swap_table)
        self._active = -1
        self.set_active_label(active if active in self.table else (self.table.ids() or [0])[0])
        return changed

    # --- strokes (one undo step per stroke) ------------------------------------------------------
    def begin_stroke(
        self, index: int, erase: bool = False, label: int | None = None, plane: Plane | None = None
    ) -> None:
        """Start a brush/eraser stroke on slice ``index`` of ``plane`` (default axial: ``index`` = z).

        :meth:`stroke_to` paints (live), :meth:`end_stroke` records the whole stroke as one undo step.
        """
        plane = plane or Plane()
        if not 0 <= index < plane.depth(self.shape):
            raise IndexError(f"{plane.orientation} slice {index} is outside the volume {self.shape}")
        value = 0 if erase else self._label_value(label)
        self._stroke = _Stroke(plane, int(index), erase, value, plane.take(self._labels, index).copy())

    def stroke_to(self, points: np.ndarray, radius: float, connect: bool = False) -> None:
        """Paint brush dabs at ``points`` (N, 2) ``(col, row)`` in the PLANE FRAME of the stroke's slice (live).

        ``radius`` is in brush pixels (:func:`~medsam_desktop.core.inference.reformat.brush_mm`): every dab is round
        in mm, i.e. an ellipse of :meth:`Plane.brush_radii` pixels on anisotropic coronal/sagittal slices.
        With ``connect`` the points are a polyline and dabs are also put along every segment, at most half a
        radius apart (no gaps when the mouse moves fast). Pixel ``(col, row)`` has its centre at ``(col, row)``.
        """
        stroke = self._stroke
        if stroke is None:
            raise RuntimeError("stroke_to() without begin_stroke()")
        plane, index = stroke.plane, stroke.index
        if stroke.before is None:  # another edit was recorded meanwhile: the rest of the stroke is a new step
            stroke.before = plane.take(self._labels, index).copy()
        rows, cols = plane.size(self.shape)
        rc, rr = plane.brush_radii(radius, self.volume.spacing)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if connect and len(pts) > 1:
            pts = _densify(pts, rc, rr)
        if not len(pts):
            return
        c0, r0 = max(int(np.floor(pts[:, 0].min() - rc)), 0), max(int(np.floor(pts[:, 1].min() - rr)), 0)
        c1 = min(int(np.ceil(pts[:, 0].max() + rc)) + 1, cols)
        r1 = min(int(np.ceil(pts[:, 1].max() + rr)) + 1, rows)
        if c0 >= c1 or r0 >= r1:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1]
        disc = np.zeros(yy.shape, bool)
        for px, py in pts:
            disc |= ((xx - px) / rc) ** 2 + ((yy - py) / rr) ** 2 <= 1.0
        view = plane.take(self._labels, index)[r0:r1, c0:c1]  # a view: writes land on the label map
        if stroke.erase:
            if self.overlap is OverlapRule.BACKGROUND and self._active:
                disc &= view == self._active
            view[self._unlocked(view, disc)] = 0
        else:
            self._paint(view, disc, stroke.value)
        za, zb = (plane.voxel(index, r, c0, self.shape)[0] for r in (r0, r1 - 1))
        self.labels_changed.emit(min(za, zb), max(za, zb))

    def end_stroke(self) -> bool:
        """Record the stroke as one undo step; returns True if it changed anything."""
        stroke = self._stroke
        if stroke is None:
            return False
        self._stroke = None
        return self._commit_stroke(stroke)

    def _flush_stroke(self) -> None:
        """Another edit (a model result, undo ...) arrives while the mouse is down: record the stroke so far as
        its own step, so that the two never share one; the stroke goes on as a new step at its next dab."""
        stroke = self._stroke
        if stroke is not None and stroke.before is not None:
            self._commit_stroke(stroke)
            stroke.before = None

    def _commit_stroke(self, stroke: _Stroke) -> bool:
        if stroke.before is None:
            return False
        region = stroke.plane.region(stroke.index, 1, self.shape)
        diff = make_voxel_diff(region, stroke.plane.to_zyx(stroke.before[None]), self._labels[region])
        if diff is None:
            return False
        r, b, a = diff
        self._commit(Step("Erase" if stroke.erase else "Brush", r, b, a))
        return True

    # --- label table -----------------------------------------------------------------------------
    def add_label(self, name: str | None = None, color: tuple[int, int, int] | None = None) -> Label:
        created: list[Label] = []
        self._edit(_EMPTY, lambda v: None, "Add label", table_fn=lambda: created.append(self.table.add(name, color)))
        self._ensure_dtype(created[0].id)
        self.set_active_label(created[0].id)
        return created[0]

    def rename_label(self, label_id: int, name: str) -> None:
        name = name.strip() or self.table.get(label_id).name
        self._edit(
            _EMPTY, lambda v: None, "Rename label", table_fn=lambda: setattr(self.table.get(label_id), "name", name)
        )

    def recolor_label(self, label_id: int, color: tuple[int, int, int]) -> None:
        rgb = tuple(int(c) for c in color[:3])
        self._edit(
            _EMPTY, lambda v: None, "Recolour label", table_fn=lambda: setattr(self.table.get(label_id), "color", rgb)
        )

    def delete_label(self, label_id: int) -> None:
        """Remove the label and its voxels (one undo step restores both); LabelLockedError when locked."""
        self._check_unlocked(label_id)
        region = _bbox_region(self._labels == label_id, 0) or _EMPTY
        self._edit(region, lambda v: v.__setitem__(v == label_id, 0), "Delete label",
                   table_fn=lambda: self.table.remove(label_id))  # fmt: skip
        if self._active == label_id:
            ids = self.table.ids()
            self._active = -1
            self.set_active_label(ids[0] if ids else 0)

    def set_label_locked(self, label_id: int, locked: bool) -> None:
        """Lock or unlock a label (saved in the sidecar; like visibility, not an undoable edit)."""
        self.table.get(label_id).locked = bool(locked)
        self.table_changed.emit()

    def set_label_display(self, label_id: int, visible: bool | None = None, opacity: float | None = None) -> None:
        """Visibility/opacity are view state: not undoable and not 'unsaved work'."""
        lb = self.table.get(label_id)
        if visible is not None:
            lb.visible = bool(visible)
        if opacity is not None:
            lb.opacity = float(min(max(opacity, 0.0), 1.0))
        self.table_changed.emit()

    # --- undo / redo -----------------------------------------------------------------------------
    def undo(self) -> bool:
        self._flush_stroke()
        step = self.history.pop_undo()
        if step is None:
            return False
        self._apply_step(step, step.before, step.table_before)
        return True

    def redo(self) -> bool:
        self._flush_stroke()
        step = self.history.pop_redo()
        if step is None:
            return False
        self._apply_step(step, step.after, step.table_after)
        return True

    def _apply_step(self, step: Step, voxels: np.ndarray | None, table: TableState | None) -> None:
        if step.region is not None and voxels is not None:
            self._ensure_dtype(int(voxels.max()) if voxels.size else 0)
            self._labels[step.region] = voxels
        if step.table_before is not None or step.table_after is not None:
            self.table = LabelTable.from_state(table or [])
            if self._active not in self.table:
                ids = self.table.ids()
                self._active = ids[-1] if ids else 0
                self.active_changed.emit(self._active)
            self.table_changed.emit()
        if step.z_range is not None:
            self.labels_changed.emit(*step.z_range)
        self._update_dirty()
        self.history_changed.emit()


_EMPTY: Region = (slice(0, 0), slice(0, 0), slice(0, 0))


@dataclass
class _Stroke:
    """A brush/eraser stroke in progress: slice ``index`` of ``plane``; ``before`` is that slice (plane frame)
    when the stroke's current undo step began (None: taken again at the next dab)."""

    plane: Plane
    index: int
    erase: bool
    value: int
    before: np.ndarray | None


def _densify(points: np.ndarray, rc: float, rr: float) -> np.ndarray:
    """Polyline (N, 2) ``(col, row)`` -> points along it at most half a brush radius apart (in radius units)."""
    out = [points[:1]]
    for a, b in pairwise(points):
        n = max(int(np.ceil(2.0 * np.hypot((b[0] - a[0]) / rc, (b[1] - a[1]) / rr))), 1)
        out.append(a + (b - a) * np.linspace(0.0, 1.0, n + 1)[1:, None])
    return np.concatenate(out)


def _bbox_region(mask: np.ndarray, z0: int, y0: int = 0, x0: int = 0) -> Region | None:
    """Bounding box of a 3D bool mask as array slices, offset by (z0, y0, x0); None when empty."""
    if not mask.any():
        return None
    out = []
    for axis, offset in zip(range(3), (z0, y0, x0)):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(int(idx[0]) + offset, int(idx[-1]) + 1 + offset))
    return out[0], out[1], out[2]
