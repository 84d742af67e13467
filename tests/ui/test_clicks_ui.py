"""Correcting a box's mask with clicks in the window (fake model and click path, offscreen): left click adds,
right click or Shift+click removes, each click one undo step with its point shown, a new box starts over,
Propagate starts from the corrected slice."""

from __future__ import annotations

import numpy as np
from fakes import SquareClickBackend
from PyQt6.QtCore import Qt
from window_helpers import open_synthetic, pt, status, wait_view_mapped

from medsam_desktop.ui.slice_view import Tool


def _draw_box(qtbot, window, a: tuple[float, float], b: tuple[float, float]) -> None:
    view, vp = window.view, window.view.viewport()
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, *a))
        qtbot.mouseMove(vp, pos=pt(view, *b))
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, *b))


def _click(qtbot, window, x: float, y: float, button=Qt.MouseButton.LeftButton, shift: bool = False) -> None:
    view, vp = window.view, window.view.viewport()
    mod = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    with qtbot.waitSignal(window.worker.refined, timeout=5000):
        qtbot.mouseClick(vp, button, modifier=mod, pos=pt(view, x + 0.5, y + 0.5))


def _window_with_box(qtbot, make_window, tmp_path, clicks: SquareClickBackend):
    """A window on the synthetic CT with the box [10, 10, 40, 40] segmented on its shown slice."""
    window = make_window(clicks=clicks)
    session = open_synthetic(window, tmp_path)
    window.set_tool(Tool.BOX)
    wait_view_mapped(qtbot, window.view)
    _draw_box(qtbot, window, (10.5, 10.5), (40.5, 40.5))
    return window, session, window.view, window.view.current


def test_clicks_correct_show_and_undo_one_by_one(qtbot, make_window, tmp_path, excepthook) -> None:
    clicks = SquareClickBackend()
    window, session, view, z = _window_with_box(qtbot, make_window, tmp_path, clicks)
    box_only = session.labels[z].copy()
    assert box_only[25, 25] and not box_only[25, 50]
    _click(qtbot, window, 50, 25)  # outside the mask: adds
    assert session.labels[z][25, 50] and view.shown_points == [(50.0, 25.0, True)]
    _click(qtbot, window, 20, 20, Qt.MouseButton.RightButton)  # inside: removes
    assert not session.labels[z][20, 20] and session.labels[z][25, 50]
    _click(qtbot, window, 30, 30, shift=True)
    assert not session.labels[z][30, 30]
    assert [p[2] for p in view.shown_points] == [True, False, False]
    assert "Click 3" in status(window) and clicks.calls == 3
    window.undo()
    assert session.labels[z][30, 30] and not session.labels[z][20, 20] and len(view.shown_points) == 2
    window.undo()
    window.undo()
    assert np.array_equal(session.labels[z], box_only) and view.shown_points == []
    window.redo()
    assert session.labels[z][25, 50] and view.shown_points == [(50.0, 25.0, True)]
    _click(qtbot, window, 35, 12)  # a click after an undo replaces the undone ones
    assert len(view.shown_points) == 2 and session.labels[z][12, 35]
    assert excepthook == []


def test_a_new_box_starts_over_and_a_click_without_a_box_says_what_to_do(qtbot, make_window, tmp_path) -> None:
    window = make_window(clicks=SquareClickBackend())
    open_synthetic(window, tmp_path)
    window.set_tool(Tool.BOX)
    view, vp = window.view, window.view.viewport()
    wait_view_mapped(qtbot, view)
    qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 20.5))  # no box yet: nothing to correct
    assert view.shown_points == []
    _draw_box(qtbot, window, (10.5, 10.5), (30.5, 30.5))
    _click(qtbot, window, 40, 20)
    assert len(view.shown_points) == 1
    _draw_box(qtbot, window, (45.5, 5.5), (70.5, 30.5))
    assert view.shown_points == []
    window.segmentation._clicks = None  # as after an unrelated edit
    view.point_clicked.emit(view.current, 50.0, 10.0, True)
    assert "draw a box first" in status(window)


def test_propagate_starts_from_the_corrected_slice(qtbot, make_window, tmp_path) -> None:
    window, session, _, z = _window_with_box(qtbot, make_window, tmp_path, SquareClickBackend())
    _click(qtbot, window, 50, 25)
    corrected = session.labels[z].copy()
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        window.segmentation.propagate(1, 1)
    assert np.array_equal(session.labels[z], corrected)
    assert session.labels[z + 1][25, 48]  # the neighbour was prompted by the corrected mask's box
