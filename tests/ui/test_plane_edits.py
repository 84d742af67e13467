"""Brush, eraser, fill holes and clear slice on the coronal and sagittal views, through the real window."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import QPoint, QPointF, Qt
from window_helpers import hover

from medsam_desktop.core.document.annotation import OverlapRule
from medsam_desktop.io import Volume
from medsam_desktop.ui.slice_view import Tool

D, H, W = 12, 40, 48
# x, y, z mm. A brush pixel is min(x, y) = 0.8 mm: radius 1 -> 0.8 columns on coronal, 0.32 -> 0.5 rows
SPACING = (1.0, 0.8, 2.5)
UP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # coronal/sagittal rows flipped: z = 11 - row


def open_volume(window, orientation: str, index: int) -> None:
    arr = np.random.default_rng(0).integers(-1000, 1000, size=(D, H, W)).astype(np.int16)
    window.set_volume(Volume(arr, spacing=SPACING, direction=UP, modality="CT"))
    window.set_orientation(orientation)
    window.view.set_slice(index)
    assert window.view.current == index


def widget_pos(view, col: int, row: int) -> QPoint:
    """Widget position over the centre of plane pixel (col, row); checked to land within 0.1 px of it."""
    p = view.pixel_to_widget(col + 0.5, row + 0.5)
    pos = QPoint(round(p.x()), round(p.y()))
    back = view.widget_to_pixel(QPointF(pos))
    assert abs(back.x() - col - 0.5) < 0.1 and abs(back.y() - row - 0.5) < 0.1, "zoom in: too few screen pixels"
    return pos


def stroke(qtbot, view, cols: range, row: int) -> None:
    """A left-button stroke along plane row ``row`` over columns ``cols`` (press, a move per column, release)."""
    vp = view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=widget_pos(view, cols[0], row))
    for col in cols[1:]:
        qtbot.mouseMove(vp, pos=widget_pos(view, col, row))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=widget_pos(view, cols[-1], row))


def test_brush_stroke_on_the_coronal_view_paints_exactly_the_voxels_under_it(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window, "coronal", 17)
    view = window.view
    view.vb.scaleBy((0.5, 0.5))  # zoom in: several screen pixels per image pixel
    window.set_tool(Tool.BRUSH)
    window.set_brush_radius(1)
    stroke(qtbot, view, range(10, 31, 5), row=4)
    want = np.zeros((D, H, W), np.uint8)
    want[11 - 4, 17, 10:31] = window.session.active_label  # row 4 is z 7; radius 0.8 col x 0.5 row
    np.testing.assert_array_equal(window.session.labels, want)
    assert [s.description for s in window.session.history._steps] == ["Add label", "Brush"]
    # the brush outline is round on screen (in mm), not in pixels of this anisotropic plane
    window.set_brush_radius(6)
    hover(view, widget_pos(view, 20, 6))
    rect = view.brush_item.rect()
    assert view.brush_item.isVisible() and rect.width() == pytest.approx(rect.height())
    assert rect.width() == pytest.approx(2 * 6 * 0.8)  # scene units are mm
    window.undo()
    assert not window.session.labels.any()
    window.redo()
    np.testing.assert_array_equal(window.session.labels, want)
    assert "axial" not in window.statusBar().currentMessage()


def test_eraser_on_the_sagittal_view_removes_only_the_active_label_with_background_rule(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window, "sagittal", 30)
    view = window.view
    view.vb.scaleBy((0.5, 0.5))
    session = window.session
    session.add_label()  # label 1
    session.add_label()  # label 2, active
    before = np.zeros((D, H, W), np.uint8)
    before[:, 5:25, 30] = 2
    before[:, 12:16, 30] = 1
    before[:, 5:25, 31] = 2  # the next sagittal plane must stay untouched
    session.replace_labels(before)
    session.overlap = OverlapRule.BACKGROUND
    window.set_tool(Tool.ERASER)
    window.set_brush_radius(1.5)  # 1.2 mm: 1.5 columns (y 0.8 mm) x 0.5 row
    stroke(qtbot, view, range(8, 21, 4), row=2)
    want = before.copy()
    want[9, 7:22, 30] = 0  # row 2 is z 9; y 8..20 +- 1 column, only label 2 (active) erased
    want[9, 12:16, 30] = 1
    np.testing.assert_array_equal(session.labels, want)
    window.undo()
    np.testing.assert_array_equal(session.labels, before)


def rings(session) -> np.ndarray:
    """Label 1 rings in the sagittal planes x = 30 and 31 (hole z 4..6, y 10..14)."""
    session.add_label()
    labels = np.zeros((D, H, W), np.uint8)
    labels[3:8, 9:16, 30:32] = 1
    labels[4:7, 10:15, 30:32] = 0
    session.replace_labels(labels)
    return labels


def test_fill_holes_and_clear_slice_on_the_sagittal_view_act_on_that_plane(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window, "sagittal", 30)
    session = window.session
    before = rings(session)
    window.act_fill.trigger()
    want = before.copy()
    want[4:7, 10:15, 30] = 1  # only the shown sagittal plane x = 30; x = 31 keeps its hole
    np.testing.assert_array_equal(session.labels, want)
    assert session.history.undo_text() == "Fill holes"
    assert "sagittal slice 30" in window.statusBar().currentMessage()
    window.act_clear_slice.trigger()
    cleared = want.copy()
    cleared[:, :, 30] = 0
    np.testing.assert_array_equal(session.labels, cleared)
    assert session.history.undo_text() == "Clear slice"
    assert window.act_clear_slice.text().replace("&", "") == "Clear slice"
    assert "Clear slice: sagittal slice 30" in window.statusBar().currentMessage()
    window.undo()
    np.testing.assert_array_equal(session.labels, want)
    window.undo()
    np.testing.assert_array_equal(session.labels, before)
    # the same actions on the coronal view act on coronal slice y = 12 (through both rings' holes)
    window.set_orientation("coronal")
    window.view.set_slice(12)
    window.act_fill.trigger()
    np.testing.assert_array_equal(session.labels, before)  # no hole in a coronal plane
    window.act_clear_slice.trigger()
    want = before.copy()
    want[:, 12, :] = 0
    np.testing.assert_array_equal(session.labels, want)
