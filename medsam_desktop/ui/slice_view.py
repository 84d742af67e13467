"""One 2D view of the volume (axial, coronal or sagittal) with the label overlay and the drawing tools.

Mouse: left-drag draws a box (box tool) or paints (brush/eraser), or pans (pan tool); right-drag changes
window/level; middle-drag pans; wheel changes slice (Ctrl+wheel zooms). Keys: PageUp/PageDown, Up/Down.
Boxes are emitted in IMAGE PIXEL coordinates of the current axial slice: ``[x0, y0, x1, y1]``, x = column,
y = row, inclusive.
"""

from __future__ import annotations

import logging
from enum import Enum

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QKeyEvent, QMouseEvent, QPen, QResizeEvent, QTransform, QWheelEvent
from PyQt6.QtWidgets import QGraphicsEllipseItem, QGraphicsRectItem, QLabel, QWidget

from ..core.annotation import AnnotationSession
from ..core.intensity import CT_WINDOWS, percentile_range

log = logging.getLogger(__name__)

ORIENTATIONS = ("axial", "coronal", "sagittal")


class Tool(str, Enum):
    BOX = "box"
    BRUSH = "brush"
    ERASER = "eraser"
    PAN = "pan"


def auto_window(array: np.ndarray, modality: str) -> tuple[float, float]:
    """Initial (level, width): CT soft tissue, otherwise the 0.5-99.5 % range (uint8 and RGB: full range)."""
    if array.dtype == np.uint8 or array.ndim == 4:
        return 127.5, 255.0
    if modality == "CT":
        return CT_WINDOWS["soft tissue"]
    lo, hi = percentile_range(array)
    return (lo + hi) / 2, max(hi - lo, 1e-3)


EMPTY_HINT = (
    "Open a CT, MR or other image:\n\nFile › Open… (Ctrl+O), or drop a file or DICOM folder here,\n"
    "or try File › Open sample.\n\nThen drag a box around a structure to segment it."
)


class SliceView(pg.GraphicsView):
    """Shows ``session.volume`` and ``session.labels`` for one orientation; edits act on the axial view."""

    slice_changed = pyqtSignal(int)  # index along the current orientation
    box_drawn = pyqtSignal(int, object)  # axial z, np.ndarray [x0, y0, x1, y1] pixels
    cursor_info = pyqtSignal(str)
    window_changed = pyqtSignal(float, float)  # level, width
    notice = pyqtSignal(str)  # a one-line hint for the status bar (e.g. drawing on a non-axial view)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="k")
        self.vb = pg.ViewBox(invertY=True, lockAspect=True, enableMenu=False)
        self.vb.setMouseEnabled(True, True)
        self.setCentralItem(self.vb)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(10)
        self.vb.addItem(self.image)
        self.vb.addItem(self.overlay)
        pen = QPen(QColor(255, 255, 0))
        pen.setCosmetic(True)
        pen.setWidth(2)
        self.box_item = QGraphicsRectItem()
        self.box_item.setPen(pen)
        self.box_item.setZValue(20)
        self.box_item.hide()
        self.vb.addItem(self.box_item, ignoreBounds=True)
        self.brush_item = QGraphicsEllipseItem()
        self.brush_item.setPen(pen)
        self.brush_item.setZValue(21)
        self.brush_item.hide()
        self.vb.addItem(self.brush_item, ignoreBounds=True)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.hint = QLabel(EMPTY_HINT, self)  # what to do first, while no image is open
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setStyleSheet("color: #c8c8c8; font-size: 16px;")
        self.hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)

        self.session: AnnotationSession | None = None
        self.orientation = "axial"
        self.index = {o: 0 for o in ORIENTATIONS}
        self.tool = Tool.BOX
        self.brush_radius = 5.0
        self.level, self.width = 0.0, 1.0
        self.preview: dict[int, np.ndarray] = {}  # axial z -> mask drawn during a propagation
        self.preview_label = 0
        self.last_box: tuple[int, np.ndarray] | None = None  # (axial z, box)
        self._drag: str | None = None
        self._drag_start = QPointF()
        self._drag_window = (0.0, 1.0)
        self._last_point: np.ndarray | None = None

    # --- document --------------------------------------------------------------------------------
    def set_session(self, session: AnnotationSession | None) -> None:
        if self.session is not None:
            self.session.labels_changed.disconnect(self._on_labels_changed)
            self.session.table_changed.disconnect(self.refresh_overlay)
        self.session = session
        self.preview.clear()
        self.last_box = None
        self.hint.setVisible(session is None)
        if session is None:
            self.image.clear()
            self.overlay.clear()
            return
        session.labels_changed.connect(self._on_labels_changed)
        session.table_changed.connect(self.refresh_overlay)
        d, h, w = session.shape
        self.index = {"axial": d // 2, "coronal": h // 2, "sagittal": w // 2}
        self.set_window(*auto_window(session.volume.array, session.volume.modality))
        self.refresh(reset_range=True)

    @property
    def depth(self) -> int:
        """Number of slices along the current orientation."""
        if self.session is None:
            return 0
        return self.session.shape[ORIENTATIONS.index(self.orientation)]

    @property
    def current(self) -> int:
        return self.index[self.orientation]

    @property
    def axial_z(self) -> int:
        return self.index["axial"]

    def _flip_rows(self) -> bool:
        """Coronal/sagittal: show superior up (rows are slices; flip when the slice axis points superior)."""
        return self.orientation != "axial" and self.session is not None and self.session.volume.direction[8] > 0

    def _take(self, array: np.ndarray, index: int) -> np.ndarray:
        if self.orientation == "axial":
            return array[index]
        plane = array[:, index] if self.orientation == "coronal" else array[:, :, index]
        return plane[::-1] if self._flip_rows() else plane

    def _pixel_spacing(self) -> tuple[float, float]:
        """(column, row) spacing in mm of the displayed plane."""
        assert self.session is not None
        sx, sy, sz = self.session.volume.spacing
        return {"axial": (sx, sy), "coronal": (sx, sz), "sagittal": (sy, sz)}[self.orientation]

    # --- navigation ------------------------------------------------------------------------------
    def set_orientation(self, orientation: str) -> None:
        if orientation not in ORIENTATIONS:
            raise ValueError(orientation)
        self.orientation = orientation
        self.box_item.hide()
        self.refresh(reset_range=True)
        self.slice_changed.emit(self.current)

    def set_slice(self, index: int) -> None:
        if self.session is None:
            return
        index = int(np.clip(index, 0, self.depth - 1))
        if index == self.current:
            return
        self.index[self.orientation] = index
        self.refresh()
        self.slice_changed.emit(index)

    def step(self, delta: int) -> None:
        self.set_slice(self.current + delta)

    def set_window(self, level: float, width: float) -> None:
        self.level, self.width = float(level), max(float(width), 1e-3)
        if self.session is not None and not self.session.volume.is_rgb:
            self.image.setLevels((self.level - self.width / 2, self.level + self.width / 2))
        self.window_changed.emit(self.level, self.width)

    def reset_zoom(self) -> None:
        self.vb.autoRange(padding=0.02)

    # --- rendering -------------------------------------------------------------------------------
    def refresh(self, reset_range: bool = False) -> None:
        if self.session is None:
            return
        vol = self.session.volume
        data = self._take(vol.array, self.current)
        sx, sy = self._pixel_spacing()
        transform = QTransform.fromScale(sx, sy)
        if vol.is_rgb:
            self.image.setImage(np.ascontiguousarray(data), autoLevels=False, levels=(0, 255))
        else:
            lo, hi = self.level - self.width / 2, self.level + self.width / 2
            self.image.setImage(data.astype(np.float32, copy=False), autoLevels=False, levels=(lo, hi))
        self.image.setTransform(transform)
        self.overlay.setTransform(transform)
        self.refresh_overlay()
        self._update_box_item()
        if reset_range:
            self.reset_zoom()

    def refresh_overlay(self) -> None:
        if self.session is None:
            return
        labels = self._take(self.session.labels, self.current)
        lut = self.session.table.lut(int(labels.max()) + 1 if labels.size else 1)
        rgba = lut[labels]
        if self.orientation == "axial" and self.current in self.preview and self.preview_label in self.session.table:
            lb = self.session.table.get(self.preview_label)
            m = self.preview[self.current] & (labels == 0)
            rgba[m] = (*lb.color, 160)
        self.overlay.setImage(rgba, autoLevels=False, levels=(0, 255))

    def _on_labels_changed(self, z0: int, z1: int) -> None:
        if self.orientation != "axial" or z0 <= self.current <= z1:
            self.refresh_overlay()

    def set_preview(self, z: int, mask: np.ndarray | None, label: int = 0) -> None:
        """Show a propagation result for axial slice ``z`` before it is committed (None removes it)."""
        if mask is None:
            self.preview.pop(z, None)
        else:
            self.preview[z] = mask
            self.preview_label = label
        if self.orientation == "axial" and z == self.current:
            self.refresh_overlay()

    def clear_preview(self) -> None:
        self.preview.clear()
        self.refresh_overlay()

    def _update_box_item(self) -> None:
        if self.last_box is None or self.orientation != "axial" or self.last_box[0] != self.current:
            self.box_item.hide()
            return
        x0, y0, x1, y1 = self.last_box[1]
        self._show_box(QRectF(QPointF(x0, y0), QPointF(x1 + 1, y1 + 1)))

    def _show_box(self, rect_px: QRectF) -> None:
        sx, sy = self._pixel_spacing()
        r = rect_px.normalized()
        self.box_item.setRect(QRectF(r.x() * sx, r.y() * sy, r.width() * sx, r.height() * sy))
        self.box_item.show()

    # --- coordinates -----------------------------------------------------------------------------
    def widget_to_pixel(self, pos: QPointF) -> QPointF:
        """Widget position -> (column, row) in pixels of the displayed slice (float)."""
        return self.image.mapFromScene(self.mapToScene(pos.toPoint()))

    def pixel_to_widget(self, x: float, y: float) -> QPointF:
        """(column, row) pixel position -> widget position (inverse of :meth:`widget_to_pixel`)."""
        return QPointF(self.mapFromScene(self.image.mapToScene(QPointF(x, y))))

    def _voxel(self, px: QPointF) -> tuple[int, int, int] | None:
        """(z, y, x) array index under a displayed pixel position, or None outside the image."""
        if self.session is None:
            return None
        col, row = int(np.floor(px.x())), int(np.floor(px.y()))
        d, h, w = self.session.shape
        if self._flip_rows():
            row = d - 1 - row
        i = self.current
        zyx = {"axial": (i, row, col), "coronal": (row, i, col), "sagittal": (row, col, i)}[self.orientation]
        if all(0 <= v < n for v, n in zip(zyx, (d, h, w))):
            return zyx
        return None

    def _emit_cursor(self, px: QPointF) -> None:
        vox = self._voxel(px)
        if vox is None or self.session is None:
            self.cursor_info.emit("")
            return
        z, y, x = vox
        value = self.session.volume.array[z, y, x]
        unit = " HU" if self.session.volume.modality == "CT" else ""
        v = "/".join(str(int(c)) for c in value) if np.ndim(value) else f"{float(value):.6g}{unit}"
        label = int(self.session.labels[z, y, x])
        name = self.session.table.get(label).name if label in self.session.table else ""
        self.cursor_info.emit(f"x {x}  y {y}  z {z}  value {v}" + (f"  label {label} {name}" if label else ""))

    # --- mouse / keys ----------------------------------------------------------------------------
    def _can_edit(self) -> bool:
        return self.session is not None and self.orientation == "axial"

    def mousePressEvent(self, ev: QMouseEvent | None) -> None:  # noqa: N802 - Qt override
        assert ev is not None
        pos = ev.position()
        button = ev.button()
        if button == Qt.MouseButton.RightButton and self.session is not None:
            self._drag, self._drag_start, self._drag_window = "window", pos, (self.level, self.width)
        elif button == Qt.MouseButton.LeftButton and self._can_edit() and self.tool is not Tool.PAN:
            self._drag, self._drag_start = self.tool.value, pos
            if self.tool in (Tool.BRUSH, Tool.ERASER):
                assert self.session is not None
                try:
                    self.session.begin_stroke(self.current, erase=self.tool is Tool.ERASER)
                except KeyError:
                    self._drag = None
                    return
                self._paint_at(pos, first=True)
        else:
            if button == Qt.MouseButton.LeftButton and self.session is not None and self.tool is not Tool.PAN:
                tool = self.tool.value
                self.notice.emit(f"The {tool} works on the axial view: press 1 to switch (left-drag pans here)")
            super().mousePressEvent(ev)
            return
        ev.accept()

    def mouseMoveEvent(self, ev: QMouseEvent | None) -> None:  # noqa: N802
        assert ev is not None
        pos = ev.position()
        px = self.widget_to_pixel(pos)
        self._emit_cursor(px)
        self._update_brush_cursor(px)
        if self._drag == "window":
            dx, dy = pos.x() - self._drag_start.x(), pos.y() - self._drag_start.y()
            level, width = self._drag_window
            scale = max(width, 1.0) / 256.0
            self.set_window(level - dy * scale, max(width + dx * scale * 2, 1e-3))
        elif self._drag == Tool.BOX.value:
            self._show_box(QRectF(self._snap(self.widget_to_pixel(self._drag_start)), self._snap(px, 1)))
        elif self._drag in (Tool.BRUSH.value, Tool.ERASER.value):
            self._paint_at(pos)
        else:
            super().mouseMoveEvent(ev)
            return
        ev.accept()

    def mouseReleaseEvent(self, ev: QMouseEvent | None) -> None:  # noqa: N802
        assert ev is not None
        drag, self._drag = self._drag, None
        if drag is None:
            super().mouseReleaseEvent(ev)
            return
        if drag == Tool.BOX.value:
            a, b = self.widget_to_pixel(self._drag_start), self.widget_to_pixel(ev.position())
            self._finish_box(a, b)
        elif drag in (Tool.BRUSH.value, Tool.ERASER.value) and self.session is not None:
            self._paint_at(ev.position())
            self.session.end_stroke()
        ev.accept()

    @staticmethod
    def _snap(p: QPointF, add: int = 0) -> QPointF:
        return QPointF(np.floor(p.x()) + add, np.floor(p.y()) + add)

    def _finish_box(self, a: QPointF, b: QPointF) -> None:
        assert self.session is not None
        _, h, w = self.session.shape
        x0, x1 = sorted((int(np.floor(a.x())), int(np.floor(b.x()))))
        y0, y1 = sorted((int(np.floor(a.y())), int(np.floor(b.y()))))
        x0, x1 = max(x0, 0), min(x1, w - 1)
        y0, y1 = max(y0, 0), min(y1, h - 1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            self.box_item.hide()
            return
        box = np.array([x0, y0, x1, y1], dtype=np.float64)
        self.last_box = (self.current, box)
        self._update_box_item()
        self.box_drawn.emit(self.current, box)

    def _paint_at(self, pos: QPointF, first: bool = False) -> None:
        """Paint a disc at ``pos`` and along the segment from the previous point (no gaps on fast moves)."""
        assert self.session is not None
        px = self.widget_to_pixel(pos)
        point = np.array([px.x() - 0.5, px.y() - 0.5])
        last = point if first or self._last_point is None else self._last_point
        n = max(int(np.ceil(np.hypot(*(point - last)) / max(self.brush_radius / 2, 0.5))), 1)
        self.session.stroke_to(last + (point - last) * np.linspace(0, 1, n + 1)[:, None], self.brush_radius)
        self._last_point = point

    def _update_brush_cursor(self, px: QPointF) -> None:
        if self.tool not in (Tool.BRUSH, Tool.ERASER) or not self._can_edit():
            self.brush_item.hide()
            return
        sx, sy = self._pixel_spacing()
        r = self.brush_radius
        self.brush_item.setRect(QRectF((px.x() - r) * sx, (px.y() - r) * sy, 2 * r * sx, 2 * r * sy))
        self.brush_item.show()

    def resizeEvent(self, ev: QResizeEvent | None) -> None:  # noqa: N802
        super().resizeEvent(ev)
        hint = getattr(self, "hint", None)  # pyqtgraph resizes during construction
        if hint is not None:
            hint.setGeometry(self.rect())

    def wheelEvent(self, ev: QWheelEvent | None) -> None:  # noqa: N802
        assert ev is not None
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev)
            return
        delta = ev.angleDelta().y()
        if delta:
            self.step(1 if delta > 0 else -1)
        ev.accept()

    def keyPressEvent(self, ev: QKeyEvent | None) -> None:  # noqa: N802
        assert ev is not None
        steps = {Qt.Key.Key_PageUp: 1, Qt.Key.Key_PageDown: -1, Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1}
        if ev.key() in steps:
            self.step(steps[ev.key()])  # type: ignore[index]
            ev.accept()
            return
        super().keyPressEvent(ev)
