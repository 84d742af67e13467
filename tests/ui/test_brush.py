"""Brush strokes interrupted mid-drag through the window: by a view change, a slice change, an image opened in
the background, or undo."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt
from window_helpers import maximise, open_synthetic, pt, synthetic_nifti, wait_view_mapped

from medsam_desktop.ui.slice_view import Tool


def test_a_stroke_does_not_go_on_in_another_view(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    window.set_tool(Tool.BRUSH)
    view = maximise(window, qtbot)
    vp = view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 20.5))
    dab = session.labels.copy()
    assert dab[4].any() and dab.any(axis=(1, 2)).sum() == 1
    window.set_orientation("coronal")  # key 2 while the mouse is down: the coronal view replaces this one
    assert window.view is not view and not view.isVisible()
    qtbot.mouseMove(vp, pos=pt(view, 60.5, 2.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, 60.5, 2.5))
    assert np.array_equal(session.labels, dab)  # never painted at coronal coordinates on the axial slice
    window.undo()  # the dab was recorded as its own step
    assert not session.labels.any()
    assert excepthook == []


def test_a_slice_change_during_a_stroke_paints_the_slice_shown(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    session.ensure_active_label()
    start = session.labels.copy()
    window.set_tool(Tool.BRUSH)
    window.set_brush_radius(2)
    view = maximise(window, qtbot)
    vp = view.viewport()
    wait_view_mapped(qtbot, view)
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 20.5))
    view.step(1)  # wheel while painting
    qtbot.mouseMove(vp, pos=pt(view, 40.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, 40.5, 20.5))
    labels = session.labels
    assert labels[4, 20, 20] and not labels[4, 20, 30:].any()  # slice 4: the first dab only
    assert labels[5, 20, 39:42].all() and not labels[5, 20, :30].any()  # slice 5: where the mouse went on it
    window.undo()
    window.undo()
    assert np.array_equal(session.labels, start)
    assert excepthook == []


def test_an_image_opened_during_a_stroke_is_not_painted(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    open_synthetic(window, tmp_path)
    window.set_tool(Tool.BRUSH)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 20.5))
    other = tmp_path / "other"
    other.mkdir()
    assert window.open_path_and_wait(synthetic_nifti(other))  # the background read ends mid-stroke
    qtbot.mouseMove(vp, pos=pt(view, 30.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, 30.5, 20.5))
    assert excepthook == []
    assert not window.session.labels.any() and len(window.session.history) == 0


def test_undo_during_a_stroke_ends_it_and_leaves_no_orphan_voxels(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    window.set_tool(Tool.BRUSH)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 20.5))  # creates "Label 1" + a dab
    window.undo()  # Ctrl+Z with the mouse down: the dab
    window.undo()  # and "Label 1"
    qtbot.mouseMove(vp, pos=pt(view, 30.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, 30.5, 20.5))
    assert len(session.table) == 0 and not session.labels.any()  # no voxels of a label that does not exist
    assert excepthook == []


def test_the_brush_outline_goes_with_the_brush(qtbot, make_window, tmp_path, excepthook) -> None:
    """Back to the Box tool (menu, toolbar or key B), the brush outline under the cursor disappears at once."""
    window = make_window()
    open_synthetic(window, tmp_path)
    view, vp = window.view, window.view.viewport()
    wait_view_mapped(qtbot, view)
    for x, tool in ((30.5, Tool.BRUSH), (32.5, Tool.ERASER)):  # a move to where the mouse is would be no move
        window.set_tool(tool)
        qtbot.mouseMove(vp, pos=pt(view, x, 20.5))
        qtbot.waitUntil(view.brush_item.isVisible, timeout=5000)
        qtbot.keyClick(vp, Qt.Key.Key_B)  # the Box tool's shortcut
        assert window.view.tool is Tool.BOX and window.tool_actions[Tool.BOX].isChecked()
        assert not view.brush_item.isVisible()
    window.set_tool(Tool.BRUSH)
    qtbot.mouseMove(vp, pos=pt(view, 34.5, 20.5))
    qtbot.waitUntil(view.brush_item.isVisible, timeout=5000)
    window.set_tool(Tool.PAN)
    assert not view.brush_item.isVisible()
    assert excepthook == []
