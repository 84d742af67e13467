"""Box prompts through the window (fake backends, offscreen): a box superseded by a slice change, boxes outside
the image, boxes one pixel wide or high, a click, and a box in the 300th label."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import Qt
from window_helpers import BOX, maximise, open_synthetic, pt, status, wait_view_mapped

from medsam_desktop.ui.slice_view import Tool


def test_a_box_superseded_by_a_slice_change_says_so(qtbot, make_window, tmp_path, fake, excepthook) -> None:
    window = make_window(fake(delay=0.2))
    session = open_synthetic(window, tmp_path)
    window.view.box_drawn.emit(4, BOX.copy())
    assert status(window) == "Segmenting…"
    with qtbot.waitSignal(window.worker.encoded, timeout=10000):
        window.view.step(1)
    assert status(window).startswith("Segmentation discarded: the slice changed")
    assert not session.labels.any()
    assert excepthook == []


def test_boxes_outside_the_image_give_one_line_and_change_nothing(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    for box in ([100, 100, 200, 200], [-50, -50, -10, -10], [10, 60, 40, 60]):  # the last: one row below
        with qtbot.waitSignal(window.worker.failed, timeout=5000):
            window.view.box_drawn.emit(4, np.array(box, float))
        assert "\n" not in status(window) and "outside" in status(window)
    assert not session.labels.any()
    window.view.set_slice(8)  # the last slice, the whole image
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(8, np.array([0.0, 0.0, 79.0, 59.0]))
    assert session.labels[8].mean() > 0.95 and not session.labels[:8].any()
    assert excepthook == []


def test_a_box_dragged_entirely_outside_the_image_says_why(qtbot, make_window, tmp_path, excepthook) -> None:
    """A box drawn with the mouse beside the image (left or right of it) is ignored with one status-bar line."""
    window = make_window()
    session = open_synthetic(window, tmp_path)
    window.set_tool(Tool.BOX)
    view = maximise(window, qtbot)  # room beside the image
    vp = view.viewport()
    wait_view_mapped(qtbot, view)
    drawn: list[np.ndarray] = []
    view.box_drawn.connect(lambda z, box: drawn.append(np.array(box)))
    drags = (((-6.5, 5.5), (-1.5, 30.5)), ((81.5, 40.5), (86.5, 10.5)))  # left of it (x < 0), right (x >= 80)
    # on the view, beside the image, once the maximised view's pixel mapping is current (pyqtgraph maps lazily)
    qtbot.waitUntil(lambda: all(vp.rect().contains(pt(view, *p)) for drag in drags for p in drag), timeout=5000)
    for a, b in drags:
        pa, pb = pt(view, *a), pt(view, *b)
        window.status("")
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pa)
        qtbot.mouseMove(vp, pos=pb)
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pb)
        assert "outside the image" in status(window) and "\n" not in status(window)
        assert not view.box_item.isVisible()
    assert drawn == [] and not session.labels.any()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, -3.5, 5.5))  # a click beside it is no box
    window.status("")
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, -3.5, 5.5))
    assert status(window) == "" and drawn == []
    assert excepthook == []


def test_zero_width_or_height_boxes_are_segmented(qtbot, make_window, tmp_path, excepthook) -> None:
    """A box one pixel wide or high (inclusive corners) is a valid prompt, drawn or emitted; a click draws none."""
    window = make_window()
    open_synthetic(window, tmp_path)
    for box in ([10, 10, 10, 40], [79, 59, 79, 59], [5, 59, 60, 59]):
        with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
            window.view.box_drawn.emit(4, np.array(box, float))
        assert status(window).startswith("Segmented"), status(window)
    drawn: list[np.ndarray] = []
    window.view.box_drawn.connect(lambda z, box: drawn.append(np.array(box)))
    window.set_tool(Tool.BOX)
    view, vp = window.view, window.view.viewport()
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 10.5))
        qtbot.mouseMove(vp, pos=pt(view, 20.5, 25.5))
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, 20.5, 40.5))
    assert len(drawn) == 1 and drawn[0].tolist() == [20, 10, 20, 40]
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(view, 30.5, 30.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(view, 30.5, 30.5))
    assert len(drawn) == 1  # a click is not a box
    assert excepthook == []


def test_many_labels_segment_and_undo_exactly(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    for _ in range(300):
        window.new_label()
    assert session.active_label == 300 and session.labels.dtype == np.uint16
    before = session.labels.copy()
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(4, BOX.copy())
    assert set(np.unique(session.labels)) == {0, 300}
    qtbot.waitUntil(lambda: window.labels_panel.list.count() == 300, timeout=5000)
    window.undo()
    assert np.array_equal(session.labels, before)
    assert excepthook == []
