"""One 2D view of the volume (axial, coronal or sagittal) with the label overlay and the drawing tools.

Mouse: left-drag draws a box (box tool), paints (brush/eraser), pans (pan tool) or moves the crosshair
(crosshair tool), on every view; right-drag changes window/level; middle-drag pans; wheel changes slice
(Ctrl+wheel zooms); double-click asks for the view to be maximised (``ui/view_grid.py`` links three views).
Keys: PageUp/PageDown, Up/Down.

Boxes are emitted in IMAGE PIXEL coordinates of the displayed slice, i.e. the PLANE FRAME of
:class:`~medsam_desktop.core.inference.reformat.Plane` for the current orientation: ``[x0, y0, x1, y1]``, x = column,
y = row as shown (coronal/sagittal: rows are z, reversed when the plane is flipped), inclusive. Brush
strokes are sent to :meth:`AnnotationSession.stroke_to` in the same frame, with the plane shown.
"""

from __future__ import annotations

import logging
from enum import Enum

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import (
    QColor,
    QEnterEvent,
    QFocusEvent,
    QKeyEvent,
    QMouseEvent,
    QPen,
    QResizeEvent,
    QTransform,
    QWheelEvent,
)
from PyQt6.QtWidgets import QGraphicsEllipseItem, QGraphicsRectItem, QLabel, QWidget

from ..core.document.anatomy import edge_letters
from ..core.document.annotation import AnnotationSession, LabelLockedError
from ..core.document.preview import PropagationPreview
from ..core.inference.intensity import CT_WINDOWS, percentile_range
from ..core.inference.reformat import ORIENTATIONS, Plane

log = logging.getLogger(__name__)

__all__ = ["EMPTY_HINT", "ORIENTATIONS", "SliceView", "Tool", "auto_window"]


class Tool(str, Enum):
    BOX = "box"
    BRUSH = "brush"
    ERASER = "eraser"
    PAN = "pan"
    CROSSHAIR = "crosshair"


def auto_window(array: np.ndarray, modality: str) -> tuple[float, float]:
    """Initial (level, width): CT soft tissue, otherwise the 0.5-99.5 % range (uint8 and RGB: full range)."""
    if array.dtype == np.uint8 or array.ndim == 4:
        return 127.5, 255.0
    if modality == "CT":
        return CT_WINDOWS["soft tissue"]
    lo, hi = percentile_range(array)
    return (lo + hi) / 2, max(hi - lo, 1e-3)


#: a press and release this close (widget pixels, Manhattan) is a click, not a drag
CLICK_SLOP = 3
EMPTY_HINT = (
    "Open a CT, MR or other image:\n\nFile › Open… (Ctrl+O), or drop a file or DICOM folder here,\n"
    "or try File › Open sample.\n\nThen drag a box around a structure to segment it."
)


class SliceView(pg.GraphicsView):
    """Shows ``session.volume`` and ``session.labels`` for one orientation (fixed at construction).

    Every tool works on every orientation: boxes, brush and eraser act on the plane shown. The crosshair marks
    the linked position (a voxel) that the other views' slices pass through.
    """

    slice_changed = pyqtSignal(int)  # index along the current orientation
    box_drawn = pyqtSignal(int, object)  # index along the current orientation, [x0, y0, x1, y1] plane pixels
    cursor_info = pyqtSignal(str)
    box_refused = pyqtSignal(str)  # a drag that missed the image: why nothing was segmented (one line)
    point_clicked = pyqtSignal(int, float, float, bool)  # index, column, row (plane pixels), positive
    window_changed = pyqtSignal(float, float)  # level, width
    activated = pyqtSignal()  # the pointer entered, or a button, wheel or focus came: keys act on this view now
    crosshair_moved = pyqtSignal(object)  # (z, y, x) voxel chosen with the crosshair tool
    box_changed = pyqtSignal()  # :attr:`last_box` was set (a box drawn here, or None)
    maximise_requested = pyqtSignal()  # a double-click that is not a click point or a dab

    def __init__(self, parent: QWidget | None = None, orientation: str = "axial") -> None:
        if orientation not in ORIENTATIONS:
            raise ValueError(orientation)
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
        self.points_item = pg.ScatterPlotItem(size=11, pxMode=True)
        self.points_item.setZValue(22)
        self.vb.addItem(self.points_item, ignoreBounds=True)
        self._points: tuple[int, str, list[tuple[float, float, bool]]] | None = None  # index, orientation, points
        cross_pen = pg.mkPen(80, 190, 255, 170, width=1, style=Qt.PenStyle.DashLine)
        self.crosshair_items = (pg.InfiniteLine(angle=90, pen=cross_pen), pg.InfiniteLine(angle=0, pen=cross_pen))
        for line in self.crosshair_items:
            line.setZValue(15)
            line.hide()
            self.vb.addItem(line, ignoreBounds=True)
        self.crosshair_voxel: tuple[int, int, int] | None = None  # the linked position, (z, y, x)
        self.show_crosshair = True
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.hint = QLabel(EMPTY_HINT, self)  # what to do first, while no image is open
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setStyleSheet("color: #c8c8c8; font-size: 16px;")
        self.hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        # orientation letters at the four edges and "Axial 12 / 40" in the top-left corner (ITK-SNAP, Slicer)
        self.edge_labels = {edge: self._overlay_label() for edge in ("left", "right", "top", "bottom")}
        self.slice_label = self._overlay_label()

        self.session: AnnotationSession | None = None
        self.orientation = orientation
        self._index = 0  # the slice shown, along this view's orientation
        self._tool = Tool.BOX
        self.brush_radius = 5.0  # in brush pixels (core.reformat.brush_mm): the same mm on every view
        self.level, self.width = 0.0, 1.0
        self.preview_source = PropagationPreview()  # a propagation's slices (ui/view_grid.py shares one)
        self._last_box: tuple[int, np.ndarray] | None = None  # (index, box) in last_box_orientation's frame
        self.last_box_orientation = "axial"
        self.cursor_voxel: tuple[int, int, int] | None = None  # (z, y, x) last pointed at (linked position)
        self._drag: str | None = None
        self._drag_start = QPointF()
        self._drag_window = (0.0, 1.0)
        self._last_point: np.ndarray | None = None

    def _overlay_label(self) -> QLabel:
        label = QLabel("", self)
        label.setStyleSheet("color: #f0e68c; font-size: 13px; font-weight: bold;")
        label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        label.hide()
        return label

    def _update_overlay_labels(self) -> None:
        """The edge letters from the direction matrix and the slice number, for what is shown now."""
        if self.session is None:
            for label in (*self.edge_labels.values(), self.slice_label):
                label.hide()
            return
        letters = edge_letters(self.session.volume.direction, self.orientation, self.plane.flip)
        for edge, letter in zip(("left", "right", "top", "bottom"), letters):
            label = self.edge_labels[edge]
            label.setText(letter)
            label.adjustSize()
            label.setVisible(bool(letter) and self.depth > 0 and not self.session.volume.is_2d)
        self.slice_label.setText(f"{self.orientation.capitalize()} {self.current + 1} / {self.depth}")
        self.slice_label.adjustSize()
        self.slice_label.setVisible(self.depth > 1)
        self._place_overlay_labels()

    def _place_overlay_labels(self) -> None:
        r = self.rect()  # (self.width is the display window's width, not the widget's)
        w, h, m = r.width(), r.height(), 6
        edges = self.edge_labels
        edges["left"].move(m, (h - edges["left"].height()) // 2)
        edges["right"].move(w - edges["right"].width() - m, (h - edges["right"].height()) // 2)
        edges["top"].move((w - edges["top"].width()) // 2, m)
        edges["bottom"].move((w - edges["bottom"].width()) // 2, h - edges["bottom"].height() - m)
        self.slice_label.move(m, m)

    # --- document --------------------------------------------------------------------------------
    def set_session(self, session: AnnotationSession | None) -> None:
        self.end_drag()  # a stroke or box begun on the previous image never continues on this one
        if self.session is not None:
            self.session.labels_changed.disconnect(self._on_labels_changed)
            self.session.table_changed.disconnect(self.refresh_overlay)
        self.session = session
        self.preview_source.clear()
        self.last_box = None
        self._points = None
        self.points_item.setData([])
        self.cursor_voxel = None
        self.crosshair_voxel = None
        self.hint.setVisible(session is None)
        if session is None:
            self.image.clear()
            self.overlay.clear()
            self._update_crosshair()
            self._update_overlay_labels()
            return
        session.labels_changed.connect(self._on_labels_changed)
        session.table_changed.connect(self.refresh_overlay)
        self._index = self.plane.depth(session.shape) // 2
        self.set_window(*auto_window(session.volume.array, session.volume.modality))
        self.refresh(reset_range=True)

    @property
    def tool(self) -> Tool:
        return self._tool

    @tool.setter
    def tool(self, tool: Tool) -> None:
        """Switch tools; the brush outline shows only while the brush or eraser is the tool."""
        if Tool(tool) is not self._tool:
            self.end_drag()  # a stroke or box begun with the previous tool ends here
        self._tool = Tool(tool)
        if self._tool not in (Tool.BRUSH, Tool.ERASER):
            self.brush_item.hide()

    @property
    def last_box(self) -> tuple[int, np.ndarray] | None:
        """The last box ``(index, [x0, y0, x1, y1])``, in the plane frame of :attr:`last_box_orientation`."""
        return self._last_box

    @last_box.setter
    def last_box(self, value: tuple[int, np.ndarray] | None) -> None:
        """Setting a box records the orientation shown now as its orientation."""
        self._last_box = value
        self.last_box_orientation = self.orientation
        self._update_box_item()
        self.box_changed.emit()

    @property
    def plane(self) -> Plane:
        """How the current orientation slices the volume (the frame of displayed pixels, boxes and masks)."""
        if self.session is None:
            return Plane(self.orientation)
        return Plane.of(self.session.volume, self.orientation)

    @property
    def depth(self) -> int:
        """Number of slices along the current orientation."""
        if self.session is None:
            return 0
        return self.plane.depth(self.session.shape)

    @property
    def current(self) -> int:
        """The slice shown, along this view's orientation."""
        return self._index

    @property
    def axial_z(self) -> int:
        """The axial slice (z) through the linked position; the slice shown when there is none (the axial view)."""
        return self.current if self.crosshair_voxel is None else self.crosshair_voxel[0]

    def _flip_rows(self) -> bool:
        """Coronal/sagittal: show superior up (rows are slices; flip when the slice axis points superior)."""
        return self.plane.flip

    def _take(self, array: np.ndarray, index: int) -> np.ndarray:
        return self.plane.take(array, index)

    def _pixel_spacing(self) -> tuple[float, float]:
        """(column, row) spacing in mm of the displayed plane."""
        assert self.session is not None
        return self.plane.pixel_spacing(self.session.volume.spacing)

    # --- navigation ------------------------------------------------------------------------------
    def set_slice(self, index: int) -> None:
        if self.session is None:
            return
        index = int(np.clip(index, 0, self.depth - 1))
        if index == self.current:
            return
        self._index = index
        if self.cursor_voxel is not None:  # the cursor stays over the same pixel, now on this slice
            vox = list(self.cursor_voxel)
            vox[self.plane.axis] = index
            self.cursor_voxel = (vox[0], vox[1], vox[2])
        self._restart_stroke()
        self.refresh()
        if self.cursor_voxel is not None:
            self._describe_voxel(self.cursor_voxel)  # the status line follows the wheel, not only the mouse
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

    def mm_per_pixel(self) -> float:
        """Zoom: millimetres of the scene per widget pixel across (the view keeps the aspect locked)."""
        (x0, x1), _ = self.vb.viewRange()
        return (x1 - x0) / max(self.vb.width(), 1.0)

    def set_mm_per_pixel(self, scale: float) -> None:
        """Zoom to ``scale`` mm per widget pixel around the centre shown now (the linked zoom)."""
        (x0, x1), (y0, y1) = self.vb.viewRange()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        hw, hh = scale * self.vb.width() / 2, scale * self.vb.height() / 2
        self.vb.setRange(xRange=(cx - hw, cx + hw), yRange=(cy - hh, cy + hh), padding=0)

    # --- crosshair (the linked position) ---------------------------------------------------------
    def set_crosshair(self, voxel: tuple[int, int, int] | None) -> None:
        """Mark ``voxel`` (z, y, x): a vertical and a horizontal line through its pixel on this plane."""
        self.crosshair_voxel = None if voxel is None else (int(voxel[0]), int(voxel[1]), int(voxel[2]))
        self._update_crosshair()

    def _update_crosshair(self) -> None:
        vox = self.crosshair_voxel
        shown = self.show_crosshair and vox is not None and self.session is not None and self.depth > 0
        if shown and self.session is not None and not self.session.volume.is_2d:
            assert vox is not None
            _, row, col = self.plane.pixel(vox, self.session.shape)
            sx, sy = self._pixel_spacing()
            self.crosshair_items[0].setValue((col + 0.5) * sx)
            self.crosshair_items[1].setValue((row + 0.5) * sy)
        else:
            shown = False
        for line in self.crosshair_items:
            line.setVisible(shown)

    def _move_crosshair(self, pos: QPointF) -> None:
        vox = self._voxel(self.widget_to_pixel(pos))
        if vox is not None:
            self.crosshair_moved.emit(vox)

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
        self._update_points_item()
        self._update_crosshair()
        self._update_overlay_labels()
        if reset_range:
            self.reset_zoom()

    def refresh_overlay(self) -> None:
        if self.session is None:
            return
        labels = self._take(self.session.labels, self.current)
        lut = self.session.table.lut(int(labels.max()) + 1 if labels.size else 1)
        rgba = lut[labels]
        preview = self.preview_source
        held = preview.take(self.plane, self.current)
        if held is not None and preview.label in self.session.table:
            lb = self.session.table.get(preview.label)
            rgba[held & (labels == 0)] = (*lb.color, 160)
        self.overlay.setImage(rgba, autoLevels=False, levels=(0, 255))

    def _on_labels_changed(self, z0: int, z1: int) -> None:
        if self.orientation != "axial" or z0 <= self.current <= z1:
            self.refresh_overlay()

    @property
    def preview_orientation(self) -> str:
        """The orientation the propagation shown in :attr:`preview_source` walks along."""
        return self.preview_source.plane.orientation

    def preview_touched(self, plane: Plane, z: int) -> None:
        """Slice ``z`` of ``plane`` changed in the preview: redraw when it crosses the slice shown."""
        if self.session is not None and self.preview_source.touches(plane, z, self.plane, self.current):
            self.refresh_overlay()

    def _update_box_item(self) -> None:
        box = self.last_box
        if box is None or self.orientation != self.last_box_orientation or box[0] != self.current:
            self.box_item.hide()
            return
        x0, y0, x1, y1 = box[1]
        self._show_box(QRectF(QPointF(x0, y0), QPointF(x1 + 1, y1 + 1)))

    def _show_box(self, rect_px: QRectF) -> None:
        sx, sy = self._pixel_spacing()
        r = rect_px.normalized()
        self.box_item.setRect(QRectF(r.x() * sx, r.y() * sy, r.width() * sx, r.height() * sy))
        self.box_item.show()

    def set_points(self, index: int | None, points: list[tuple[float, float, bool]] | None = None) -> None:
        """Show click points ``(column, row, positive)`` (plane pixels of the shown orientation) on slice
        ``index``: green positive, red negative; None or no points hides them."""
        self._points = None if index is None or not points else (index, self.orientation, list(points))
        self._update_points_item()

    @property
    def shown_points(self) -> list[tuple[float, float, bool]]:
        return [] if self._points is None else list(self._points[2])

    def _update_points_item(self) -> None:
        p = self._points
        if p is None or p[0] != self.current or p[1] != self.orientation:
            self.points_item.setData([])
            return
        sx, sy = self._pixel_spacing()
        self.points_item.setData(
            x=[(x + 0.5) * sx for x, _, _ in p[2]], y=[(y + 0.5) * sy for _, y, _ in p[2]],
            brush=[pg.mkBrush(40, 220, 60) if pos else pg.mkBrush(235, 50, 50) for _, _, pos in p[2]],
            pen=pg.mkPen(255, 255, 255, width=1), symbol=["+" if pos else "x" for _, _, pos in p[2]],
        )  # fmt: skip

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
        rows, cols = self.plane.size(self.session.shape)
        if not (0 <= row < rows and 0 <= col < cols):
            return None
        return self.plane.voxel(self.current, row, col, self.session.shape)

    def _emit_cursor(self, px: QPointF) -> None:
        vox = self._voxel(px)
        if vox is None or self.session is None:
            self.cursor_info.emit("")
            return
        self.cursor_voxel = vox
        self._describe_voxel(vox)

    def _describe_voxel(self, vox: tuple[int, int, int]) -> None:
        """The status line of the voxel under the cursor: position, value (HU for CT) and label."""
        assert self.session is not None
        z, y, x = vox
        value = self.session.volume.array[z, y, x]
        unit = " HU" if self.session.volume.modality == "CT" else ""
        v = "/".join(str(int(c)) for c in value) if np.ndim(value) else f"{float(value):.6g}{unit}"
        label = int(self.session.labels[z, y, x])
        name = self.session.table.get(label).name if label in self.session.table else ""
        self.cursor_info.emit(f"x {x}  y {y}  z {z}  value {v}" + (f"  label {label} {name}" if label else ""))

    # --- mouse / keys ----------------------------------------------------------------------------
    def end_drag(self) -> None:
        """Finish whatever the mouse is doing: a stroke in progress is recorded (one undo step), a box dropped."""
        drag, self._drag = self._drag, None
        self._last_point = None
        if drag in (Tool.BRUSH.value, Tool.ERASER.value) and self.session is not None:
            self.session.end_stroke()
        if drag == Tool.BOX.value:
            self.box_item.hide()

    def _restart_stroke(self) -> None:
        """The slice changed under a brush stroke: record it so far and go on painting the slice now shown."""
        if self._drag not in (Tool.BRUSH.value, Tool.ERASER.value) or self.session is None:
            return
        erase = self._drag == Tool.ERASER.value
        self.end_drag()
        try:
            self.session.begin_stroke(self.current, erase=erase, plane=self.plane)
        except LabelLockedError as exc:
            self.box_refused.emit(str(exc))
            return
        except (KeyError, IndexError):
            return
        self._drag = Tool.ERASER.value if erase else Tool.BRUSH.value

    def _can_edit(self) -> bool:
        """Whether the tools can draw: on every view, as soon as an image is open."""
        return self.session is not None

    def mousePressEvent(self, ev: QMouseEvent | None) -> None:  # noqa: N802 - Qt override
        assert ev is not None
        self.activated.emit()
        pos = ev.position()
        button = ev.button()
        if button == Qt.MouseButton.RightButton and self.session is not None:
            self._drag, self._drag_start, self._drag_window = "window", pos, (self.level, self.width)
        elif button == Qt.MouseButton.LeftButton and self._can_edit() and self.tool is Tool.CROSSHAIR:
            self._drag, self._drag_start = Tool.CROSSHAIR.value, pos
            self._move_crosshair(pos)
        elif button == Qt.MouseButton.LeftButton and self._can_edit() and self.tool is not Tool.PAN:
            self._drag, self._drag_start = self.tool.value, pos
            if self.tool in (Tool.BRUSH, Tool.ERASER):
                assert self.session is not None
                try:
                    self.session.begin_stroke(self.current, erase=self.tool is Tool.ERASER, plane=self.plane)
                except LabelLockedError as exc:  # one status line (the same signal as a refused box)
                    self._drag = None
                    self.box_refused.emit(str(exc))
                    return
                except (KeyError, IndexError):
                    self._drag = None
                    return
                self._paint_at(pos, first=True)
        else:
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
        elif self._drag == Tool.CROSSHAIR.value:
            self._move_crosshair(pos)
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
        still = (ev.position() - self._drag_start).manhattanLength() <= CLICK_SLOP
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if drag == "window" and still:  # a right click, not a drag: a negative point on the box's slice
            self.set_window(*self._drag_window)
            self._emit_point(ev.position(), positive=False)
        elif drag == Tool.BOX.value and still and self._box_here():
            self._update_box_item()  # the click's own zero-size drag rectangle is not the box
            self._emit_point(ev.position(), positive=not shift)
        elif drag == Tool.BOX.value:
            a, b = self.widget_to_pixel(self._drag_start), self.widget_to_pixel(ev.position())
            self._finish_box(a, b)
        elif drag in (Tool.BRUSH.value, Tool.ERASER.value) and self.session is not None:
            self._paint_at(ev.position())
            self.session.end_stroke()
        ev.accept()

    def mouseDoubleClickEvent(self, ev: QMouseEvent | None) -> None:  # noqa: N802
        """A double-click maximises the view (and back), unless it is two clicks of a tool that draws: two click
        points beside a box on this slice, or two brush or eraser dabs."""
        assert ev is not None
        draws = self.tool in (Tool.BRUSH, Tool.ERASER) or (self.tool is Tool.BOX and self._box_here())
        if ev.button() != Qt.MouseButton.LeftButton or draws:
            self.mousePressEvent(ev)  # the second press of the pair, as a press
            return
        self.maximise_requested.emit()
        ev.accept()

    def enterEvent(self, ev: QEnterEvent | None) -> None:  # noqa: N802
        super().enterEvent(ev)
        self.activated.emit()  # slice keys act on the view under the pointer (Slicer, ITK-SNAP)

    def focusInEvent(self, ev: QFocusEvent | None) -> None:  # noqa: N802
        super().focusInEvent(ev)
        self.activated.emit()

    def _box_here(self) -> bool:
        """Whether the last box was drawn on the slice shown (clicks correct its mask)."""
        box = self.last_box
        return box is not None and self.orientation == self.last_box_orientation and box[0] == self.current

    def _emit_point(self, pos: QPointF, positive: bool) -> None:
        """A click at widget ``pos``: :attr:`point_clicked` when it is on the image, beside a box of this slice."""
        if self.session is None or not self._box_here():
            return
        px = self.widget_to_pixel(pos)
        rows, cols = self.plane.size(self.session.shape)
        col, row = int(np.floor(px.x())), int(np.floor(px.y()))
        if 0 <= row < rows and 0 <= col < cols:
            self.point_clicked.emit(self.current, float(col), float(row), positive)

    @staticmethod
    def _snap(p: QPointF, add: int = 0) -> QPointF:
        return QPointF(np.floor(p.x()) + add, np.floor(p.y()) + add)

    def _finish_box(self, a: QPointF, b: QPointF) -> None:
        """Emit the box between plane pixels ``a`` and ``b`` (clipped to the displayed slice).

        A box one pixel wide or high (a drag along a thin structure) is a valid prompt; a click on one pixel draws
        nothing; a drag entirely off the slice draws nothing and says so (:attr:`box_refused`).
        """
        assert self.session is not None
        h, w = self.plane.size(self.session.shape)
        x0, x1 = sorted((int(np.floor(a.x())), int(np.floor(b.x()))))
        y0, y1 = sorted((int(np.floor(a.y())), int(np.floor(b.y()))))
        if x1 == x0 and y1 == y0:  # a click, inside the image or not
            self.box_item.hide()
            return
        x0, x1 = max(x0, 0), min(x1, w - 1)
        y0, y1 = max(y0, 0), min(y1, h - 1)
        if x1 < x0 or y1 < y0:
            self.box_item.hide()
            self.box_refused.emit("Box ignored: it lies entirely outside the image. Draw it over the structure.")
            return
        if x1 == x0 and y1 == y0:  # only a corner pixel of the image: as a click
            self.box_item.hide()
            return
        box = np.array([x0, y0, x1, y1], dtype=np.float64)
        self.last_box = (self.current, box)  # (drawn by the setter)
        self.box_drawn.emit(self.current, box)

    def _paint_at(self, pos: QPointF, first: bool = False) -> None:
        """Paint a dab at ``pos`` and along the segment from the previous point (no gaps on fast moves)."""
        assert self.session is not None
        px = self.widget_to_pixel(pos)
        point = np.array([px.x() - 0.5, px.y() - 0.5])  # plane frame, pixel centres at integers
        last = point if first or self._last_point is None else self._last_point
        self.session.stroke_to(np.stack([last, point]), self.brush_radius, connect=True)
        self._last_point = point

    def _update_brush_cursor(self, px: QPointF) -> None:
        if self.tool not in (Tool.BRUSH, Tool.ERASER) or not self._can_edit():
            self.brush_item.hide()
            return
        assert self.session is not None
        sx, sy = self._pixel_spacing()
        rc, rr = self.plane.brush_radii(self.brush_radius, self.session.volume.spacing)  # round in mm
        self.brush_item.setRect(QRectF((px.x() - rc) * sx, (px.y() - rr) * sy, 2 * rc * sx, 2 * rr * sy))
        self.brush_item.show()

    def resizeEvent(self, ev: QResizeEvent | None) -> None:  # noqa: N802
        super().resizeEvent(ev)
        hint = getattr(self, "hint", None)  # pyqtgraph resizes during construction
        if hint is not None:
            hint.setGeometry(self.rect())
        if getattr(self, "slice_label", None) is not None:
            self._place_overlay_labels()

    def wheelEvent(self, ev: QWheelEvent | None) -> None:  # noqa: N802
        assert ev is not None
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev)
            return
        self.activated.emit()
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
