"""Helpers shared by the window tests: a synthetic CT file, scripted pointer positions, and event-based waits that
prove queued work has ended (so a check that nothing happened cannot pass only because nothing had happened yet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PyQt6 import sip
from PyQt6.QtCore import QCoreApplication, QEvent, QObject, QPoint, QPointF, Qt, QThread, pyqtSignal, pyqtSlot
from PyQt6.QtGui import QMouseEvent
from PyQt6.QtWidgets import QApplication

BOX = np.array([10.0, 10.0, 40.0, 40.0])


def synthetic_nifti(tmp_path: Path, shape=(9, 60, 80), name: str = "case.nii.gz", spacing=(0.7, 1.3, 2.5)) -> Path:
    """A CT-like int16 volume with non-trivial spacing and origin."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1000, size=shape).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def open_synthetic(window, tmp_path: Path, **kw):
    """Open :func:`synthetic_nifti` (``kw`` passed on) in ``window``; returns its session."""
    assert window.open_path_and_wait(synthetic_nifti(tmp_path, **kw))
    return window.session


def status(window) -> str:
    return window.statusBar().currentMessage()


def pt(view, x: float, y: float) -> QPoint:
    """The viewport point of image pixel (``x``, ``y``) of the shown slice."""
    p = view.pixel_to_widget(x, y)
    return QPoint(round(p.x()), round(p.y()))


def hover(view, pos: QPoint | QPointF) -> None:
    """A plain pointer move over ``view`` at widget ``pos`` (offscreen Qt delivers no button-less QTest moves)."""
    p = QPointF(pos)
    event = QMouseEvent(
        QEvent.Type.MouseMove, p, QPointF(view.viewport().mapToGlobal(p)), Qt.MouseButton.NoButton,
        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
    )  # fmt: skip
    QApplication.sendEvent(view.viewport(), event)


def maximise(window, qtbot, orientation: str = "axial", timeout: int = 5000):
    """Show ``orientation``'s view alone (tests that need many screen pixels per image pixel); returns it once the
    layout has given it the grid's width (the layout is applied on a later event-loop turn)."""
    window.set_orientation(orientation)
    if window.grid.maximised != orientation:
        window.grid.toggle_maximise(orientation)
    view = window.view
    qtbot.waitUntil(lambda: view.viewport().width() >= 0.8 * window.grid.width(), timeout=timeout)
    return view


def near_box(mask: np.ndarray, box: np.ndarray = BOX, tol: int = 1) -> None:
    """``mask`` is the fake model's answer to ``box``: the box itself, within a pixel of resampling."""
    ys, xs = np.nonzero(mask)
    assert len(ys) and np.abs(np.array([xs.min(), ys.min(), xs.max(), ys.max()]) - box).max() <= tol


class _Probe(QObject):
    """Answers ``ping`` from the thread it was moved to, after everything queued there before the ping."""

    ping = pyqtSignal()
    pong = pyqtSignal()

    def __init__(self) -> None:
        super().__init__()
        self.ping.connect(self._answer)  # queued: by the time ping is emitted the probe lives in the other thread

    @pyqtSlot()
    def _answer(self) -> None:
        app = QCoreApplication.instance()
        assert app is not None
        self.moveToThread(app.thread())  # home again before answering, so the GUI thread may delete it
        self.pong.emit()


class _Answers(QObject):
    """Lives in the GUI thread: the probe's answer is queued here, behind what the other thread emitted before."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    @pyqtSlot()
    def answered(self) -> None:
        self.count += 1


def drain_thread(qtbot, thread: QThread, rounds: int = 2, timeout: int = 10000) -> None:
    """Wait until ``thread`` has run everything queued to it and whatever that emitted has been delivered here.

    A probe posted behind the queued requests answers only once they have returned; its answer is queued behind
    their results, so those have landed when it arrives. A second round also covers work a request queued for
    itself while it ran (the worker's prefetch schedules its next slice that way)."""
    answers = _Answers()
    for n in range(1, rounds + 1):
        probe = _Probe()
        probe.pong.connect(answers.answered)
        probe.moveToThread(thread)
        probe.ping.emit()
        qtbot.waitUntil(lambda n=n: answers.count == n, timeout=timeout)
        sip.transferto(probe, None)  # owned by Qt from here: deleted by the GUI event loop, never mid-answer
        probe.deleteLater()


def drain_worker(qtbot, worker, rounds: int = 2, timeout: int = 10000) -> None:
    """Every request posted to the segmentation ``worker`` has ended and its results (stale or not) were handled."""
    drain_thread(qtbot, worker.thread, rounds, timeout)


def wait_worker_stopped(qtbot, worker, timeout: int = 10000) -> None:
    """The worker's thread has ended (nothing more can come from it) and what it emitted before has been handled."""
    qtbot.waitUntil(worker.thread.isFinished, timeout=timeout)
    QCoreApplication.sendPostedEvents()


def wait_view_mapped(qtbot, view, timeout: int = 5000) -> None:
    """The view's pixel <-> widget mapping reflects the shown image (pyqtgraph updates it lazily, on the next
    event loop turn after a range change): the whole slice then lies inside the viewport."""
    assert view.session is not None
    rows, cols = view.plane.size(view.session.shape)
    qtbot.waitUntil(lambda: view.viewport().rect().contains(pt(view, 0, 0)) and view.viewport().rect().contains(
        pt(view, cols, rows)), timeout=timeout)  # fmt: skip
