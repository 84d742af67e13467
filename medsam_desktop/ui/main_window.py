"""The main window: composes the three linked views, labels and statistics docks, menus, status bar and the
inference worker; owns the session (opening an image replaces it). Its parts live beside it: segmentation
(``segmentation_controller``), file dialogs and menus (``file_actions``), crash recovery, the actions table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QByteArray, QEvent, QEventLoop, QObject, QSettings, Qt, QTimer
from PyQt6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeyEvent
from PyQt6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QDockWidget,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QTextEdit,
    QWidget,
)

from ..core.document.annotation import AnnotationSession, LabelLockedError, OverlapRule
from ..core.inference.reformat import brush_mm
from ..io import DicomSeriesInfo, Volume
from . import dialogs
from .actions import build_actions, build_menus, shortcut_rows
from .crash_recovery import CrashRecovery
from .file_actions import FileActions
from .labels_panel import LabelsPanel
from .loader import ImageLoader, Reader
from .segmentation_controller import SegmentationController
from .settings_dialog import AppSettings, SettingsDialog, qsettings
from .slice_view import SliceView, Tool, auto_window
from .statistics_panel import StatisticsPanel
from .view_grid import ViewGrid
from .worker import BackendFactory, ClickFactory, SegmentationWorker, default_backend_factory, default_click_factory

log = logging.getLogger(__name__)

GEOMETRY_KEY, STATE_KEY = "window/geometry", "window/state"

#: keys a text field being edited keeps for itself, although the window has shortcuts on them (Enter segments,
#: Up/Down/PageUp/PageDown change the slice, Esc cancels a propagation): Enter commits a label's new name
_EDITOR_KEYS = frozenset(
    {Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp, Qt.Key.Key_PageDown,
     Qt.Key.Key_Escape}
)  # fmt: skip
_TEXT_FIELDS = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit)


class _TextFieldKeys(QObject):
    """Application event filter: while a text field has the focus, :data:`_EDITOR_KEYS` go to it, not to the
    window's shortcuts (Qt asks the focused widget first with a ShortcutOverride event; accepting it keeps the
    key). Everywhere else the shortcuts win, so slice keys act on the view whichever widget has the focus."""

    def eventFilter(self, obj: QObject | None, ev: QEvent | None) -> bool:  # noqa: N802 - Qt override
        if ev is not None and ev.type() == QEvent.Type.ShortcutOverride and isinstance(obj, _TEXT_FIELDS):
            assert isinstance(ev, QKeyEvent)
            mods = ev.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
            if ev.key() in _EDITOR_KEYS and mods == Qt.KeyboardModifier.NoModifier:
                ev.accept()
                return True
        return False


def _install_text_field_keys() -> None:
    """Install one :class:`_TextFieldKeys` on the application (once: it lives as long as the application, so no
    window leaves a filter behind when it is deleted)."""
    app = QApplication.instance()
    if app is not None and app.findChild(_TextFieldKeys) is None:
        app.installEventFilter(_TextFieldKeys(app))


class MainWindow(QMainWindow):
    """``backend_factory`` overrides the model (tests use fake encoders) and ``click_factory`` its click path;
    ``store`` overrides QSettings; ``reader`` overrides how images are read (tests use slow fakes)."""

    def __init__(
        self,
        backend_factory: BackendFactory | None = None,
        store: QSettings | None = None,
        prefetch: int = 2,
        reader: Reader | None = None,
        parent: QWidget | None = None,
        click_factory: ClickFactory | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store or qsettings()
        self.settings = AppSettings.load(self.store)
        self._custom_factory = backend_factory
        self._custom_clicks = click_factory
        self.session: AnnotationSession | None = None
        self.model_error_shown = False
        self.closing = False
        self._after_open: dict[int, Callable[[], None]] = {}
        self._open_done: Callable[[bool], None] | None = None
        self._busy_cursor = False
        self._edits = self._edits_at_request = 0  # history changes, to know whether to ask again on load
        self.loader = ImageLoader(reader, self)
        self.recovery = CrashRecovery(self)
        self.autosaver = self.recovery.autosaver
        self._window_timer = QTimer(self)  # the model follows the displayed CT window, once dragging pauses
        self._window_timer.setSingleShot(True)
        self._window_timer.setInterval(400)
        self._window_timer.timeout.connect(self._apply_model_window)

        self.worker = SegmentationWorker(
            self._factory(), self.settings.cache_mb * 2**20, prefetch=prefetch, parent=self,
            click_factory=self._click_factory(),
        )  # fmt: skip
        self.grid = ViewGrid(self)  # axial, coronal and sagittal, linked by the crosshair
        self.views = self.grid.views
        self.segmentation = SegmentationController(self)
        self.file_actions = FileActions(self)
        self.setCentralWidget(self.grid)
        self.labels_panel = LabelsPanel(self)
        dock = QDockWidget("Labels", self)
        dock.setObjectName("labels_dock")
        dock.setWidget(self.labels_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.statistics_panel = StatisticsPanel(self)
        stats_dock = QDockWidget("Statistics", self)
        stats_dock.setObjectName("statistics_dock")
        stats_dock.setWidget(self.statistics_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, stats_dock)
        self._build_status_bar()
        build_actions(self)
        build_menus(self, dock, stats_dock)
        self._connect()
        self.setAcceptDrops(True)
        self.resize(1200, 800)
        self._restore_geometry()
        _install_text_field_keys()
        self._update_title()
        self.update_actions()

    @property
    def view(self) -> SliceView:
        """The active view: under the pointer, or the one last clicked, scrolled or chosen (keys 1/2/3)."""
        return self.grid.active_view

    @property
    def box_view(self) -> SliceView | None:
        """The view holding the last box drawn (Enter, Propagate and clicks work on it), or None."""
        return self.grid.box_view

    @property
    def slice_slider(self) -> QSlider:
        """The active view's slice slider."""
        return self.grid.panes[self.grid.active].slider

    def status(self, text: str, timeout_ms: int = 0) -> None:
        """One line in the status bar (``timeout_ms`` 0: until the next message)."""
        bar = self.statusBar()
        if bar is not None:
            bar.showMessage(text, timeout_ms)

    # --- construction ----------------------------------------------------------------------------
    def _factory(self) -> BackendFactory:
        s = self.settings
        return self._custom_factory or default_backend_factory(s.model, s.threads, s.runtime, s.precision)

    def _click_factory(self) -> ClickFactory | None:
        """The click path of the configured model (None with a test's custom model and no custom clicks)."""
        if self._custom_clicks is not None or self._custom_factory is not None:
            return self._custom_clicks
        s = self.settings
        return default_click_factory(s.model, s.threads, s.runtime)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        assert bar is not None
        self.cursor_label = QLabel("")
        self.model_label = QLabel("model: not loaded")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(200)
        self.progress.setMinimumWidth(120)
        self.progress.hide()
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 0)  # busy indicator while an image is read
        self.load_progress.setMaximumWidth(120)
        self.load_progress.setFormat("Opening…")
        self.load_progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        bar.addWidget(self.cursor_label, 1)
        bar.addPermanentWidget(self.load_progress)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        bar.addPermanentWidget(self.model_label)

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(keys, action) for every action with a keyboard shortcut (the F1 list)."""
        return shortcut_rows(self)

    def show_shortcuts(self) -> None:
        dialogs.show_shortcuts(self, self.shortcut_rows())

    def cancel_propagation(self) -> None:
        self.worker.cancel()

    def reset_zoom(self) -> None:
        self.grid.reset_zoom()

    def toggle_maximise(self) -> None:
        """M: the active view alone, or the three views again."""
        self.grid.toggle_maximise()

    def set_link_zoom(self, link: bool) -> None:
        self.grid.set_link_zoom(link)

    def set_show_crosshair(self, show: bool) -> None:
        self.grid.set_show_crosshair(show)

    def next_slice(self) -> None:
        """Up / PageUp, whichever widget has the focus (except a text field being edited)."""
        self.view.step(1)

    def previous_slice(self) -> None:
        """Down / PageDown, as :meth:`next_slice`."""
        self.view.step(-1)

    def brush_smaller(self) -> None:
        self.set_brush_radius(self.view.brush_radius - 1)

    def brush_larger(self) -> None:
        self.set_brush_radius(self.view.brush_radius + 1)

    def _connect(self) -> None:
        self.segmentation.connect_worker()
        self.grid.slice_changed.connect(self._on_slice_changed)
        self.grid.window_changed.connect(lambda *_: self._window_timer.start())
        self.grid.active_changed.connect(self._on_active_view)
        for view in self.views.values():
            view.cursor_info.connect(self.cursor_label.setText)
            view.box_refused.connect(lambda text: self.status(text, 5000))
        self.worker.model_loaded.connect(lambda name: self.model_label.setText(f"model: {name}"))
        self.worker.model_failed.connect(lambda _reason: self.model_label.setText("model: unavailable"))
        self.worker.model_warning.connect(self._on_model_warning)
        self.cancel_button.clicked.connect(self.worker.cancel)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_load_failed)
        self.loader.choose_series.connect(self._on_choose_series)
        self.loader.busy_changed.connect(self._on_load_busy)

    # --- opening ---------------------------------------------------------------------------------
    def open_path(self, path: str | Path, then: Callable[[], None] | None = None) -> bool:
        """Start reading an image file or DICOM folder in the background (asks about unsaved labels first).

        False when the user cancelled. The current image stays until the new one is read; ``then`` runs after
        it is shown. A newer request supersedes this one.
        """
        if not self.maybe_discard():
            return False
        self._edits_at_request = self._edits
        req = self.loader.load(path)
        self._after_open = {req: then} if then is not None else {}
        self.status(f"Opening {Path(path).name}…")
        return True

    def open_path_and_wait(self, path: str | Path, timeout_ms: int = 60000) -> bool:
        """:meth:`open_path`, then run the event loop until it is shown or failed (scripts and tests)."""
        result: list[bool] = []
        loop = QEventLoop()

        def done(ok: bool) -> None:
            result.append(ok)
            loop.quit()

        self._open_done = done
        try:
            if not self.open_path(path):
                return False
            QTimer.singleShot(timeout_ms, loop.quit)
            if not result:
                loop.exec()
        finally:
            self._open_done = None
        return bool(result and result[0])

    def _finish_open(self, ok: bool) -> None:
        if self._open_done is not None:
            self._open_done(ok)

    def _on_loaded(self, req: int, path: Path, volume: Volume) -> None:
        self.segmentation.settle()  # one started while the image was read: keep its slices, then ask
        edited = self._edits != self._edits_at_request  # labels were edited while the image was being read
        if self.session is not None and self.session.dirty and edited and not self.maybe_discard():
            self._finish_open(False)
            return
        self.set_volume(volume)
        self.file_actions.add_recent(str(path))
        then = self._after_open.pop(req, None)
        if then is not None:
            then()
        self._finish_open(True)

    def _on_load_failed(self, _req: int, _path: Path, message: str) -> None:
        self.status("")
        dialogs.show_error(self, "Cannot open", message)
        self._finish_open(False)

    def _on_choose_series(self, req: int, path: Path, series: list[DicomSeriesInfo]) -> None:
        chosen = self.file_actions.ask_series(series)
        if chosen is None:
            self.status("")
            self._finish_open(False)
            return
        then = self._after_open.pop(req, None)
        new = self.loader.load(path, chosen.uid)
        if then is not None:
            self._after_open[new] = then

    def _on_load_busy(self, busy: bool) -> None:
        self.load_progress.setVisible(busy)
        if busy and not self._busy_cursor:
            QApplication.setOverrideCursor(Qt.CursorShape.BusyCursor)  # the app stays usable meanwhile
            self._busy_cursor = True
        elif not busy and self._busy_cursor:
            QApplication.restoreOverrideCursor()
            self._busy_cursor = False

    def set_volume(self, volume: Volume) -> None:
        self.segmentation.reset()  # a result for the previous image must not land on this one
        session = AnnotationSession(volume)
        session.overlap = OverlapRule(self.settings.overlap)
        previous = self.session
        if previous is not None:
            previous.dirty_changed.disconnect(self._on_dirty)
            previous.history_changed.disconnect(self._on_history)
        self.session = session
        session.dirty_changed.connect(self._on_dirty)
        session.history_changed.connect(self._on_history)
        self.recovery.attach(session, previous)
        self.worker.set_volume(volume)
        self.grid.set_session(session)
        self.labels_panel.set_session(session)
        self.statistics_panel.set_session(session)
        self._update_title()
        self.update_actions()
        name = volume.source_path.name if volume.source_path else "image"
        d, h, w = volume.shape_zyx
        text = f"Opened {name}: {w}x{h}x{d} {volume.modality}. Drag a box around a structure to segment it."
        self.status(text, 8000)
        self._window_timer.stop()
        self.worker.set_ct_window(self.view.level, self.view.width)
        if self.model_label.text() == "model: not loaded":
            self.model_label.setText("model: loading…")  # loaded in the background by the first encode
        self.worker.encode(self.views["axial"].current)  # the axial view's slice, wherever the pointer is

    def _apply_model_window(self) -> None:
        """Send the displayed window to the model (CT only) and re-encode the shown slice with it."""
        self._window_timer.stop()
        if self.session is None or self.session.volume.modality != "CT":
            return
        self.worker.set_ct_window(self.view.level, self.view.width)
        if not self.segmentation.propagating:
            self.worker.encode(self.view.current, self.view.orientation)
            self.segmentation.drop_pending("the window changed (draw the box again)")

    def flush_model_window(self) -> None:
        """Before a box is segmented: a window change still waiting for the timer applies now."""
        if self._window_timer.isActive():
            self._window_timer.stop()
            self.worker.set_ct_window(self.view.level, self.view.width)

    def maybe_discard(self) -> bool:
        """True when there is no unsaved work, or the user saved or discarded it.

        A running propagation is cancelled first and the slices it finished are kept (one undo step), so they
        count as unsaved work and are asked about like any other edit.
        """
        self.segmentation.settle()
        if self.session is None or not self.session.dirty:
            return True
        answer = dialogs.ask_save_changes(self)
        if answer == "save":
            return self.file_actions.save_dialog()
        return answer == "discard"

    # --- segmentation ----------------------------------------------------------------------------
    def _on_slice_changed(self, orientation: str, index: int) -> None:
        """The active view's slice is encoded ahead of a box; slices the crosshair moved elsewhere are not."""
        if self.session is not None and orientation == self.grid.active:
            self.worker.encode(index, orientation)
            self.segmentation.drop_pending("the slice changed")

    def segment_last_box(self) -> None:
        """Run the model on the box shown on the current slice (e.g. a sample's suggested box)."""
        self.segmentation.segment_last_box()

    def propagate_dialog(self) -> None:
        self.segmentation.propagate_dialog()

    def propagate(self, below: int, above: int, stop_when_empty: bool = False) -> int | None:
        """Propagate the last box from its slice ``below`` slices down and ``above`` up (one undo step);
        ``stop_when_empty``: each direction also ends where the mask disappears."""
        return self.segmentation.propagate(below, above, stop_when_empty)

    # --- editing ---------------------------------------------------------------------------------
    def undo(self) -> None:
        if self.session is not None and not self.segmentation.propagating:
            self.grid.end_drags()  # a stroke in progress is recorded first: undo takes it back, painting stops
            self.session.undo()

    def redo(self) -> None:
        if self.session is not None and not self.segmentation.propagating:
            self.grid.end_drags()
            self.session.redo()

    def new_label(self) -> None:
        if self.session is not None:
            self.session.add_label()

    def _shown_slice(self) -> str:
        """'slice 5' (axial) or 'coronal slice 17': the slice the view shows, for status messages."""
        where = "slice" if self.view.orientation == "axial" else f"{self.view.orientation} slice"
        return f"{where} {self.view.current}"

    def fill_holes(self) -> None:
        """Fill the active label's holes on the shown slice of the shown view (one undo step)."""
        if self.session is not None and self.session.active_label and not self.segmentation.propagating:
            try:
                done = self.session.fill_holes(self.view.current, plane=self.view.plane)
            except LabelLockedError as exc:
                self.status(str(exc), 5000)
                return
            text = f"Fill holes: {self._shown_slice()}" if done else f"No holes to fill on {self._shown_slice()}"
            self.status(text, 3000)

    def clear_slice(self) -> None:
        """Clear slice: remove the active label (every label when none) from the shown slice (one undo step)."""
        if self.session is not None and not self.segmentation.propagating:
            try:
                done = self.session.clear_slice(self.view.current, self.session.active_label or None, self.view.plane)
            except LabelLockedError as exc:
                self.status(str(exc), 5000)
                return
            text = f"Clear slice: {self._shown_slice()}" if done else f"Nothing to clear on {self._shown_slice()}"
            self.status(text, 3000)

    def clear_label(self) -> None:
        if self.session is not None and self.session.active_label:
            try:
                self.session.clear_label(self.session.active_label)
            except LabelLockedError as exc:
                self.status(str(exc), 5000)

    def set_tool(self, tool: Tool) -> None:
        self.grid.set_tool(tool)
        self.tool_actions[tool].setChecked(True)

    def set_brush_radius(self, radius: float) -> None:
        """Brush radius in brush pixels (round in mm on every view, see core.reformat.brush_mm)."""
        self.grid.set_brush_radius(min(max(radius, 1.0), 100.0))
        text = f"Brush radius {self.view.brush_radius:g} px"
        if self.session is not None:
            text += f" ({brush_mm(self.view.brush_radius, self.session.volume.spacing):.3g} mm)"
        self.status(text, 2000)

    def set_orientation(self, orientation: str) -> None:
        """Keys 1/2/3: the axial, coronal or sagittal view becomes active (shown alone when one is maximised)."""
        self.grid.activate(orientation)
        self._on_active_view(self.grid.active)

    def _on_active_view(self, orientation: str) -> None:
        self.orientation_actions[orientation].setChecked(True)
        self.update_actions()

    def auto_window(self) -> None:
        if self.session is not None:
            vol = self.session.volume
            self.view.set_window(*auto_window(vol.array, "MR" if vol.modality == "CT" else vol.modality))

    def settings_dialog(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.result_settings())

    def apply_settings(self, new: AppSettings) -> None:
        old, self.settings = self.settings, new
        new.save(self.store)
        self.worker.cache.set_max_bytes(new.cache_mb * 2**20)
        if self.session is not None:
            self.session.overlap = OverlapRule(new.overlap)
        rebuild = (old.model, old.runtime, old.precision) != (new.model, new.runtime, new.precision) or (
            old.threads != new.threads and _runtime_that_runs(new) != "torch"  # others fix threads when compiled
        )
        if rebuild and self._custom_factory is None:  # new backend on the worker thread; old embeddings dropped
            self.model_error_shown = False
            self.model_label.setText("model: not loaded")
            self.model_label.setToolTip("")
            self.worker.set_backend_factory(self._factory(), self._click_factory())
        elif old.threads != new.threads:
            self.worker.set_threads(new.threads)  # live: the model and its cached embeddings stay

    # --- state display ---------------------------------------------------------------------------
    def _on_model_warning(self, reason: str) -> None:
        """The model loaded, but not as configured (e.g. OpenVINO missing: torch): one status-bar line."""
        self.model_label.setText(f"{self.model_label.text()} — {reason}")
        self.model_label.setToolTip(reason)
        self.status(reason, 15000)

    def _on_history(self) -> None:
        self.segmentation.sync_clicks()  # an undo/redo of a click shows the clicks of the state it restored
        self._edits += 1
        self.update_actions()
        self.recovery.schedule()

    # --- crash safety (ui/crash_recovery.py) ------------------------------------------------------
    def check_autosave(self) -> bool:
        """Offer to restore labels left by a session that crashed; True when a restore was started."""
        return self.recovery.offer_restore()

    def _on_dirty(self, _dirty: bool) -> None:
        self._update_title()
        self.recovery.schedule()

    def _update_title(self) -> None:
        name = ""
        if self.session is not None:
            src = self.session.volume.source_path
            name = (src.name if src else "image") + "[*] — "
        self.setWindowTitle(f"{name}MedSAM Desktop")
        self.setWindowModified(bool(self.session and self.session.dirty))

    def update_actions(self) -> None:
        has = self.session is not None
        busy = self.segmentation.propagating
        depth = max(view.depth for view in self.views.values())
        for act in (self.act_save, self.act_open_mask, self.act_new_label, self.act_fill, self.act_clear_slice,
                    self.act_clear_label):  # fmt: skip
            act.setEnabled(has and not busy)
        self.act_undo.setEnabled(has and not busy and self.session.history.can_undo)  # type: ignore[union-attr]
        self.act_redo.setEnabled(has and not busy and self.session.history.can_redo)  # type: ignore[union-attr]
        self.act_propagate.setEnabled(has and not busy and depth > 1)
        self.act_cancel.setEnabled(busy)

    # --- drag and drop, closing ------------------------------------------------------------------
    def dragEnterEvent(self, ev: QDragEnterEvent | None) -> None:  # noqa: N802 - Qt override
        assert ev is not None
        mime = ev.mimeData()
        if mime is not None and mime.hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev: QDropEvent | None) -> None:  # noqa: N802
        assert ev is not None
        mime = ev.mimeData()
        urls = [u.toLocalFile() for u in mime.urls()] if mime is not None else []
        urls = [u for u in urls if u]
        if urls:
            ev.acceptProposedAction()
            dropped = Path(urls[0])
            self.file_actions.remember_dir(dropped if dropped.is_dir() else dropped.parent)
            QTimer.singleShot(0, lambda: self.open_path(urls[0]))

    def closeEvent(self, ev: QCloseEvent | None) -> None:  # noqa: N802
        assert ev is not None
        if not self.maybe_discard():
            ev.ignore()
            return
        self.closing = True
        self._save_geometry()
        self.loader.cancel()
        self.worker.shutdown()
        self.loader.wait()
        self.recovery.close()
        ev.accept()

    # --- window geometry -------------------------------------------------------------------------
    def _save_geometry(self) -> None:
        self.store.setValue(GEOMETRY_KEY, self.saveGeometry())
        self.store.setValue(STATE_KEY, self.saveState())

    def _restore_geometry(self) -> None:
        """Size, position (and docks, toolbar) as the window last closed; the defaults the first time."""
        geometry, state = self.store.value(GEOMETRY_KEY), self.store.value(STATE_KEY)
        if isinstance(geometry, QByteArray | bytes) and geometry:
            self.restoreGeometry(QByteArray(geometry))
        if isinstance(state, QByteArray | bytes) and state:
            self.restoreState(QByteArray(state))


def _runtime_that_runs(settings: AppSettings) -> str:
    """The runtime the settings load (``default`` resolved for their model; ``torch`` when no model is found)."""
    from ..core.backends import DEFAULT, default_configuration
    from ..model_files import ModelNotAvailableError, default_model_name

    if settings.runtime != DEFAULT:
        return settings.runtime
    try:
        model = default_model_name() if settings.model == "auto" else settings.model
    except ModelNotAvailableError:
        return "torch"
    return default_configuration(model)[0]
