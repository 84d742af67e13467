"""Box -> mask, clicks and propagation in the window: which request belongs to which label and plane, what happens
to a result that arrives too late, the propagation's progress, preview and cancel, and its settling before the
image changes or the app closes. The inference itself runs in the worker (``ui/worker.py``).

Clicks (after a box, on its slice): a left click adds a positive point, a right click or Shift+click a negative
one; each click's mask replaces the box's (or the previous click's) on that slice as one undo step, so Ctrl+Z
takes clicks back one by one and the points shown follow the undo history. A new box starts over; Propagate
starts from the corrected slice."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from PyQt6.QtCore import QEventLoop, QObject, QTimer

from ..core.document.anatomy import slice_directions
from ..core.document.annotation import LabelLockedError
from ..core.inference.clicks import ClickPoint
from ..core.inference.reformat import Plane
from . import dialogs

if TYPE_CHECKING:
    from .main_window import MainWindow
    from .slice_view import SliceView

log = logging.getLogger(__name__)


@dataclass
class ClickState:
    """The latest box and its clicks: ``base`` is its slice's label values before the box (plane frame);
    ``serials[k]`` the history serial after the box (k = 0) or after click k, ``masks[k]`` the mask then;
    ``shown`` how many clicks the current history state holds (an undo lowers it, a redo raises it)."""

    label: int
    plane: Plane
    z: int
    box: np.ndarray
    base: np.ndarray
    points: list[ClickPoint] = field(default_factory=list)
    serials: list[int] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    shown: int = 0


class SegmentationController(QObject):
    """The window's segment / click / propagate state machine (one propagation at a time)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window
        self._segment_labels: dict[int, tuple[int, Plane, ClickState]] = {}  # request id -> (label, plane, clicks)
        self._propagation: tuple[int, int, Plane] | None = None  # (request id, label, plane it walks along)
        self._clicks: ClickState | None = None  # the box that clicks correct now
        self._click_requests: dict[int, ClickState] = {}
        self._applying = False  # our own edit is being committed: the history change is not an undo

    @property
    def propagating(self) -> bool:
        return self._propagation is not None

    def reset(self) -> None:
        """A new image: results of the previous one must not land on it."""
        if self._propagation is not None:
            self._window.worker.cancel()
            self._propagation = None
            self._end_propagation_ui()
        self._segment_labels = {}
        self._drop_clicks()

    def connect_worker(self) -> None:
        w = self._window
        for view in w.views.values():  # every view draws boxes and clicks; each result goes back to its plane
            view.box_drawn.connect(partial(self._on_box, view))
            view.point_clicked.connect(partial(self._on_point, view))
        w.worker.mask_ready.connect(self._on_mask_ready)
        w.worker.refined.connect(self._on_refined)
        w.worker.failed.connect(self._on_failed)
        w.worker.progress.connect(self._on_progress)
        w.worker.slice_done.connect(self._on_propagated_slice)
        w.worker.propagation_finished.connect(self._on_propagation_finished)

    def drop_pending(self, why: str) -> None:
        """A newer request (an encode) supersedes a box still being segmented: its result will never come."""
        w = self._window
        if self._segment_labels:
            self._segment_labels = {}
            w.status(f"Segmentation discarded: {why}", 3000)

    def _on_box(self, view: SliceView, z: int, box: np.ndarray) -> None:
        """Segment ``box`` (plane pixels of ``view``'s orientation) on its slice ``z`` of that orientation."""
        w = self._window
        if w.session is None:
            return
        label = w.session.ensure_active_label()
        if w.session.table.get(label).locked:
            w.status(f"{w.session.table.get(label).name} is locked: unlock it or choose another label to segment", 5000)
            return
        w.flush_model_window()
        plane = view.plane
        self._drop_clicks()  # a new box starts over
        state = ClickState(label, plane, z, np.asarray(box, np.float64).copy(), w.session.plane_slice(plane, z))
        req = w.worker.segment(z, box, plane.orientation)
        self._segment_labels = {req: (label, plane, state)}
        w.status("Segmenting…")

    def segment_last_box(self) -> None:
        """Run the model on the box shown on the current slice (e.g. a sample's suggested box)."""
        view = self._window.box_view
        box = None if view is None else view.last_box
        if view is not None and box is not None and box[0] == view.current:
            self._on_box(view, *box)

    def _on_mask_ready(self, req_id: int, z: int, mask: np.ndarray) -> None:
        w = self._window
        request = self._segment_labels.pop(req_id, None)
        if w.closing or w.session is None or request is None:
            return
        if request[0] not in w.session.table:
            w.status("Result discarded: its label was deleted", 3000)
            return
        label, plane, state = request
        if w.views[plane.orientation].current != z:
            w.status("Result discarded: the slice changed", 3000)
            return
        try:
            self._applying = True
            w.session.apply_plane_mask(plane, z, mask, label)  # on the voxels under the box (one undo step)
        except LabelLockedError as exc:  # locked while the model was running
            w.status(f"Result discarded: {exc}", 5000)
            return
        finally:
            self._applying = False
        state.serials, state.masks = [w.session.history.current_serial], [np.asarray(mask, bool)]
        self._clicks = state
        where = "slice" if plane.orientation == "axial" else f"{plane.orientation} slice"
        w.status(f"Segmented {where} {z}. Click to correct: left adds, right or Shift+click removes", 4000)

    # --- clicks ----------------------------------------------------------------------------------
    def _drop_clicks(self) -> None:
        self._clicks = None
        self._click_requests = {}
        for view in self._window.views.values():
            view.set_points(None)

    def _show_clicks(self, state: ClickState, count: int | None = None) -> None:
        """The first ``count`` clicks of ``state`` (the shown ones by default) on the view of its plane."""
        points = state.points[: state.shown if count is None else count]
        self._window.views[state.plane.orientation].set_points(state.z, [(p.x, p.y, p.positive) for p in points])

    def _on_point(self, view: SliceView, z: int, x: float, y: float, positive: bool) -> None:
        """A click on the shown slice: correct the latest box's mask there with all its clicks so far."""
        w = self._window
        state = self._clicks
        if w.session is None or self.propagating:
            return
        if (
            state is None
            or state.z != z
            or state.plane.orientation != view.orientation
            or state.label not in (w.session.table)
        ):
            w.status("Clicks correct the mask of a box on this slice: draw a box first", 5000)
            return
        if w.session.table.get(state.label).locked:
            w.status(f"{w.session.table.get(state.label).name} is locked: unlock it to correct its mask", 5000)
            return
        if self._click_requests:
            return  # one click at a time: the next waits for this mask (a decoder call, tens of ms)
        del state.points[state.shown :], state.serials[state.shown + 1 :], state.masks[state.shown + 1 :]
        state.points.append(ClickPoint(x, y, positive))
        self._show_clicks(state, len(state.points))
        req = w.worker.refine(z, state.box, list(state.points), state.plane.orientation)
        self._click_requests = {req: state}

    def _on_refined(self, req_id: int, z: int, mask: np.ndarray) -> None:
        w = self._window
        state = self._click_requests.pop(req_id, None)
        if w.closing or w.session is None or state is None or state is not self._clicks:
            return
        if state.label not in w.session.table:
            w.status("Click discarded: its label was deleted", 3000)
            self._drop_clicks()
            return
        try:
            self._applying = True
            w.session.repaint_plane_mask(state.plane, z, state.base, mask, state.label, "Click")
        except LabelLockedError as exc:
            state.points.pop()
            self._show_clicks(state)
            w.status(f"Click discarded: {exc}", 5000)
            return
        finally:
            self._applying = False
        state.serials.append(w.session.history.current_serial)
        state.masks.append(np.asarray(mask, bool))
        state.shown = len(state.points)
        self._show_clicks(state)
        n = state.shown
        w.status(f"Click {n}: mask corrected (Ctrl+Z takes it back)", 3000)

    def sync_clicks(self) -> None:
        """After a history change: undo/redo of a box or click shows the clicks of the state it restored; any
        other edit ends clicking on that box (its base no longer describes the slice)."""
        state = self._clicks
        w = self._window
        if self._applying or state is None or w.session is None:
            return
        serial = w.session.history.current_serial
        if serial in state.serials:
            state.shown = state.serials.index(serial)
            self._show_clicks(state)
        elif not self._click_requests:
            self._drop_clicks()

    def click_start_mask(self, z: int, plane: Plane) -> np.ndarray | None:
        """The corrected mask of slice ``z`` when the latest box there has clicks (Propagate starts from it)."""
        state = self._clicks
        if state is None or state.shown == 0 or state.z != z or state.plane.orientation != plane.orientation:
            return None
        return state.masks[state.shown]

    def _on_failed(self, req_id: int, message: str) -> None:
        w = self._window
        state = self._click_requests.pop(req_id, None)
        if state is not None and state.points:
            state.points.pop()  # the click that failed is not shown
            self._show_clicks(state)
        if self._propagation is not None and self._propagation[0] == req_id:
            self._propagation = None
            w.grid.clear_preview()
        self._end_propagation_ui()
        w.status(message, 8000)
        if message.startswith("No segmentation model"):
            w.model_label.setText("model: unavailable")
            if not w.model_error_shown:
                w.model_error_shown = True
                dialogs.show_error(w, "Model not available", message + " Viewing and editing still work.")

    def propagate_dialog(self) -> None:
        w = self._window
        if w.session is None or self._propagation is not None:
            return
        view = w.box_view
        if view is None or view.last_box is None:
            dialogs.show_error(w, "Propagate", "Draw a box on a slice first, then propagate it.")
            return
        depth = view.plane.depth(w.session.shape)
        if depth < 2:
            msg = "Nothing to propagate: the view the box was drawn on has a single slice"
            w.status(msg, 5000)
            return
        z = view.last_box[0]
        directions = slice_directions(w.session.volume.direction, view.orientation)
        answer = dialogs.ask_propagation_range(w, z, depth, directions)
        if answer is not None:
            below, above, until_empty = answer
            self.propagate(below, above, stop_when_empty=until_empty)

    def propagate(self, below: int, above: int, stop_when_empty: bool = False) -> int | None:
        """Propagate the last box from its slice ``below`` slices down and ``above`` up (one undo step).

        Slices are those of the orientation the box was drawn on (coronal: along y, sagittal: along x).
        ``stop_when_empty``: each direction also ends where the mask disappears (the dialog's default).
        """
        w = self._window
        view = w.box_view
        if w.session is None or view is None or view.last_box is None or self._propagation is not None:
            return None
        z, box = view.last_box
        plane = view.plane
        label = w.session.ensure_active_label()
        if w.session.table.get(label).locked:
            w.status(
                f"{w.session.table.get(label).name} is locked: unlock it or choose another label to propagate", 5000
            )
            return None
        w.flush_model_window()
        start_mask = self.click_start_mask(z, plane)
        req = w.worker.propagate(z, box, below, above, plane.orientation, stop_when_empty, start_mask)
        self._propagation = (req, label, plane)
        w.progress.setRange(0, below + above + 1)
        w.progress.setValue(0)
        w.progress.show()
        w.cancel_button.show()
        w.update_actions()  # save, undo/redo and the edits wait for the propagation (Esc cancels it)
        return req

    def _on_progress(self, _req: int, done: int, total: int) -> None:
        w = self._window
        w.progress.setRange(0, total)
        w.progress.setValue(done)
        if self._propagation is not None and w.session is not None and self._propagation[1] in w.session.table:
            name = w.session.table.get(self._propagation[1]).name
            text = f"Propagating {name}: {done} of {total} slices (Esc cancels and keeps them)"
            w.status(text)

    def _on_propagated_slice(self, _req: int, z: int, mask: np.ndarray) -> None:
        w = self._window
        if self._propagation is not None:
            w.grid.set_preview(z, mask, self._propagation[1], self._propagation[2].orientation)

    def _on_propagation_finished(self, req: int, z0: int, mask: np.ndarray, cancelled: bool) -> None:
        w = self._window
        prop, self._propagation = self._propagation, None
        self._end_propagation_ui()
        w.grid.clear_preview()
        if w.closing or w.session is None or prop is None or prop[0] != req:
            return
        if prop[1] not in w.session.table:
            w.status("Propagation discarded: its label was deleted", 8000)
            return
        try:
            w.session.apply_stack_mask(prop[2], z0, mask, prop[1])  # one undo step, mapped back to (z, y, x)
        except LabelLockedError as exc:  # locked while it ran
            w.status(f"Propagation discarded: {exc}", 8000)
            return
        done = int(mask.any(axis=(1, 2)).sum())
        text = f"Propagation {'cancelled' if cancelled else 'done'}: {done} slices segmented (Ctrl+Z undoes)"
        w.status(text, 8000)

    def settle(self, timeout_ms: int = 30000) -> None:
        """Cancel a running propagation and wait until the slices it finished are committed (or it failed).

        The worker stops between slices, so this takes at most about one slice; user input is held meanwhile.
        """
        w = self._window
        if self._propagation is None:
            return
        w.worker.cancel()
        loop = QEventLoop()
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(loop.quit)
        w.worker.propagation_finished.connect(loop.quit)
        w.worker.failed.connect(loop.quit)
        timer.start(timeout_ms)
        try:
            while self._propagation is not None and timer.isActive():
                loop.exec(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
        finally:
            timer.stop()
            w.worker.propagation_finished.disconnect(loop.quit)
            w.worker.failed.disconnect(loop.quit)
        if self._propagation is not None:
            log.warning("the propagation did not stop within %d ms", timeout_ms)

    def _end_propagation_ui(self) -> None:
        w = self._window
        if self._propagation is None:
            w.progress.hide()
            w.cancel_button.hide()
            w.update_actions()
