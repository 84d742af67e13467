"""Three linked views (axial, coronal, sagittal) side by side, as 3D Slicer and ITK-SNAP show a volume.

Linked: one position (a voxel, the crosshair) that every view's slice passes through. Scrolling a view moves the
position along its axis (the other views' crosshair lines follow); the crosshair tool moves it within a view
(the other views change slice). Window/level is one for the volume. Zoom and pan are per view unless
:attr:`ViewGrid.link_zoom` is set (the same millimetres per screen pixel in every view). A propagation's
uncommitted slices (:class:`~medsam_desktop.core.document.preview.PropagationPreview`) show in every view.

The active view is the one under the pointer (or last clicked, scrolled or focused): the window's slice keys and
slice commands act on it. A 2D image shows one view. Each view can be maximised (double-click, M, its corner
button) and restored.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import QFrame, QHBoxLayout, QSlider, QSplitter, QToolButton, QVBoxLayout, QWidget

from ..core.document.annotation import AnnotationSession
from ..core.document.preview import PropagationPreview
from ..core.inference.reformat import ORIENTATIONS, Plane
from .slice_view import SliceView, Tool

log = logging.getLogger(__name__)

_ACTIVE_STYLE = "ViewPane { border: 2px solid #3a8ee6; }"
_IDLE_STYLE = "ViewPane { border: 2px solid #303030; }"


class ViewPane(QFrame):
    """One :class:`SliceView` with its slice slider and a maximise button under it."""

    def __init__(self, orientation: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = SliceView(self, orientation)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip(f"{orientation.capitalize()} slice (wheel, Up/Down or PageUp/PageDown)")
        self.slider.setEnabled(False)
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the slice keys stay the views'
        self.maximise_button = QToolButton()
        self.maximise_button.setText("⤢")
        self.maximise_button.setToolTip("Maximise this view, or show all three (M or double-click)")
        self.maximise_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(0)
        layout.addWidget(self.view, 1)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.slider, 1)
        row.addWidget(self.maximise_button)
        layout.addLayout(row)
        self.slider.valueChanged.connect(self.view.set_slice)
        self.view.slice_changed.connect(lambda _i: self.sync_slider())
        self.set_active(False)

    def sync_slider(self) -> None:
        """The slider shows the view's slice and range (without echoing a change back to the view)."""
        slider, view = self.slider, self.view
        blocked = slider.blockSignals(True)
        try:
            depth = view.depth
            slider.setEnabled(depth > 1)
            slider.setRange(0, max(depth - 1, 0))
            slider.setValue(view.current if depth else 0)
        finally:
            slider.blockSignals(blocked)

    def set_active(self, active: bool) -> None:
        self.setStyleSheet(_ACTIVE_STYLE if active else _IDLE_STYLE)


class ViewGrid(QWidget):
    """The three linked :class:`SliceView` panes of one :class:`AnnotationSession`."""

    active_changed = pyqtSignal(str)  # orientation of the view keys act on now
    slice_changed = pyqtSignal(str, int)  # orientation, index: a view showed another slice
    window_changed = pyqtSignal(float, float)  # level, width (one for every view)
    layout_changed = pyqtSignal()  # maximised or restored

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panes = {o: ViewPane(o, self) for o in ORIENTATIONS}
        self.views = {o: pane.view for o, pane in self.panes.items()}
        self.preview = PropagationPreview()
        self.session: AnnotationSession | None = None
        self.position: tuple[int, int, int] | None = None  # the linked voxel (z, y, x)
        self.maximised: str | None = None
        self.link_zoom = False
        self._active = "axial"
        self._linking = False  # a linked change in progress: the views it sets do not link back
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setChildrenCollapsible(False)
        for pane in self.panes.values():
            self.splitter.addWidget(pane)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        for o, view in self.views.items():
            view.preview_source = self.preview
            view.activated.connect(partial(self.activate, o))
            view.slice_changed.connect(partial(self._on_slice, o))
            view.crosshair_moved.connect(self.set_position)
            view.window_changed.connect(partial(self._on_window, o))
            view.box_changed.connect(partial(self._on_box_changed, o))
            view.maximise_requested.connect(partial(self.toggle_maximise, o))
            view.vb.sigRangeChanged.connect(partial(self._on_range, o))
            self.panes[o].maximise_button.clicked.connect(partial(self.toggle_maximise, o))
        self.panes["axial"].set_active(True)
        self._apply_layout()

    # --- which view -------------------------------------------------------------------------------
    @property
    def active(self) -> str:
        return self._active

    @property
    def active_view(self) -> SliceView:
        return self.views[self._active]

    @property
    def box_view(self) -> SliceView | None:
        """The view holding the last box drawn (one box at a time across the views), or None."""
        return next((v for v in self.views.values() if v.last_box is not None), None)

    def shown(self) -> list[str]:
        """Orientations the layout shows: one for a 2D image or a maximised view, else all three."""
        if self.session is not None and self.session.volume.is_2d:
            return ["axial"]
        return [self.maximised] if self.maximised else list(ORIENTATIONS)

    def activate(self, orientation: str) -> None:
        """Make ``orientation`` the view keys act on (a maximised layout shows it instead)."""
        if orientation not in self.views or (orientation != "axial" and self._is_2d()):
            return
        if self.maximised and self.maximised != orientation:
            self.maximised = orientation
            self._apply_layout()
        if orientation == self._active:
            return
        self.panes[self._active].set_active(False)
        self._active = orientation
        self.panes[orientation].set_active(True)
        self.active_changed.emit(orientation)

    def toggle_maximise(self, orientation: str | None = None) -> None:
        """Maximise ``orientation`` (the active view when None), or show all three when one is maximised."""
        if self._is_2d():
            return
        if self.maximised is not None:
            self.maximised = None
        else:
            self.maximised = orientation or self._active
        self._apply_layout()
        self.activate(orientation or self._active)

    def _apply_layout(self) -> None:
        shown = self.shown()
        for o, pane in self.panes.items():
            if o not in shown:
                pane.view.end_drag()  # a stroke or box under way in a view going away ends (recorded) here
            pane.setVisible(o in shown)
            pane.maximise_button.setVisible(not self._is_2d())
        self.layout_changed.emit()

    def _is_2d(self) -> bool:
        return self.session is not None and self.session.volume.is_2d

    # --- document ----------------------------------------------------------------------------------
    def set_session(self, session: AnnotationSession | None) -> None:
        """Show ``session`` in every view, the crosshair at the centre voxel, the axial view active."""
        self.session = session
        self.preview.clear()
        is_2d = session is not None and session.volume.is_2d
        for o, view in self.views.items():
            view.set_session(None if is_2d and o != "axial" else session)  # a 2D image: the axial view only
            self.panes[o].sync_slider()
        if session is not None:
            d, h, w = session.shape
            self.set_position((d // 2, h // 2, w // 2))
        self._apply_layout()
        self.activate("axial")

    def set_position(self, voxel: tuple[int, int, int]) -> None:
        """Move the linked position to ``voxel`` (z, y, x): every view shows the slice through it."""
        if self.session is None:
            return
        self.position = (int(voxel[0]), int(voxel[1]), int(voxel[2]))
        for view in self.views.values():
            if view.session is None:
                continue
            index = view.plane.pixel(self.position, self.session.shape)[0]
            view.set_slice(index)  # -> _on_slice: the position keeps this index
            view.set_crosshair(self.position)

    def _on_slice(self, orientation: str, index: int) -> None:
        """A view showed another slice: the position moves along its axis; the other views' lines follow."""
        if self.position is not None and self.session is not None:
            vox = list(self.position)
            vox[Plane(orientation).axis] = index
            self.position = (vox[0], vox[1], vox[2])
            for view in self.views.values():
                view.set_crosshair(self.position)
        self.slice_changed.emit(orientation, index)

    def set_show_crosshair(self, show: bool) -> None:
        for view in self.views.values():
            view.show_crosshair = bool(show)
            view.set_crosshair(view.crosshair_voxel)

    # --- linked window/level and zoom ----------------------------------------------------------------
    def _on_window(self, orientation: str, level: float, width: float) -> None:
        if self._linking:
            return
        self._linking = True
        try:
            for o, view in self.views.items():
                if o != orientation and (view.level, view.width) != (level, width):
                    view.set_window(level, width)
        finally:
            self._linking = False
        self.window_changed.emit(level, width)

    def set_link_zoom(self, link: bool) -> None:
        """Link zoom across the views (from the active view's zoom now on), or let each view zoom alone."""
        self.link_zoom = bool(link)
        if self.link_zoom:
            self._on_range(self._active)

    def _on_range(self, orientation: str, *_args: object) -> None:
        if not self.link_zoom or self._linking or self.session is None:
            return
        scale = self.views[orientation].mm_per_pixel()
        if not np.isfinite(scale) or scale <= 0:
            return
        self._linking = True
        try:
            for o, view in self.views.items():
                if o != orientation and view.session is not None:
                    view.set_mm_per_pixel(scale)
        finally:
            self._linking = False

    def reset_zoom(self) -> None:
        for o in self.shown():
            self.views[o].reset_zoom()

    # --- boxes, drawing, previews ------------------------------------------------------------------
    def _on_box_changed(self, orientation: str) -> None:
        """One box at a time: a box drawn in one view removes the box another view showed."""
        if self.views[orientation].last_box is None:
            return
        for o, view in self.views.items():
            if o != orientation and view.last_box is not None:
                view.last_box = None  # (its box item hides)

    def end_drags(self) -> None:
        """Finish a stroke or box in progress in any view (before undo, redo or another image)."""
        for view in self.views.values():
            view.end_drag()

    def set_tool(self, tool: Tool) -> None:
        for view in self.views.values():
            view.tool = tool

    def set_brush_radius(self, radius: float) -> None:
        for view in self.views.values():
            view.brush_radius = float(radius)

    def set_preview(self, index: int, mask: np.ndarray | None, label: int, orientation: str) -> None:
        """A propagation result for slice ``index`` of ``orientation`` (plane frame), shown in every view."""
        if self.session is None:
            return
        plane = Plane.of(self.session.volume, orientation)
        if mask is None:
            self.preview.remove(plane, index)
        else:
            self.preview.put(plane, index, mask, label, self.session.shape)
        for view in self.views.values():
            view.preview_touched(plane, index)

    def clear_preview(self) -> None:
        self.preview.clear()
        for view in self.views.values():
            view.refresh_overlay()
