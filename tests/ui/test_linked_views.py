"""Three linked views through the real window (fake backends, offscreen): the crosshair, slice keys on the view
under the pointer, maximise and back, one window/level, the optional zoom link, one box across the views, and
every view redrawn by an edit or a running propagation."""

from __future__ import annotations

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QCursor
from PyQt6.QtWidgets import QApplication
from window_helpers import BOX, drain_worker, open_synthetic, pt, synthetic_nifti

from medsam_desktop.io import Volume
from medsam_desktop.ui.slice_view import Tool

D, H, W = 12, 40, 48
SPACING = (0.8, 1.1, 2.5)  # x, y, z mm
UP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # coronal/sagittal rows flipped: row = 11 - z


def open_volume(window) -> None:
    arr = np.random.default_rng(0).integers(-1000, 1000, size=(D, H, W)).astype(np.int16)
    window.set_volume(Volume(arr, spacing=SPACING, direction=UP, modality="CT"))


def enter(qtbot, window, view) -> None:
    """The pointer moves onto ``view``: it becomes the active view."""
    QCursor.setPos(view.mapToGlobal(view.rect().center()))
    qtbot.waitUntil(lambda: window.view is view, timeout=5000)


def preview_rows(view) -> set[int]:
    """Rows of ``view``'s overlay drawn in the preview's translucent colour (a propagation not yet committed)."""
    return {int(r) for r in np.nonzero((view.overlay.image[..., 3] == 160).any(axis=1))[0]}


def test_a_volume_opens_in_three_views_with_the_crosshair_at_its_centre(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    views = window.views
    assert all(window.grid.panes[o].isVisible() for o in views)
    assert (views["axial"].current, views["coronal"].current, views["sagittal"].current) == (D // 2, H // 2, W // 2)
    assert window.grid.position == (D // 2, H // 2, W // 2)
    coronal = views["coronal"]
    vertical, horizontal = coronal.crosshair_items
    assert vertical.isVisible() and vertical.value() == pytest.approx((W // 2 + 0.5) * 0.8)
    assert horizontal.value() == pytest.approx((11 - D // 2 + 0.5) * 2.5)  # superior up
    window.act_show_crosshair.trigger()
    assert not any(line.isVisible() for v in views.values() for line in v.crosshair_items)
    window.act_show_crosshair.trigger()
    assert all(line.isVisible() for v in views.values() for line in v.crosshair_items)


def test_the_crosshair_tool_moves_the_other_views_and_scrolling_moves_the_crosshair(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    axial, coronal, sagittal = (window.views[o] for o in ("axial", "coronal", "sagittal"))
    window.set_tool(Tool.CROSSHAIR)
    qtbot.mousePress(axial.viewport(), Qt.MouseButton.LeftButton, pos=pt(axial, 30.5, 10.5))
    assert window.grid.position == (D // 2, 10, 30)
    assert coronal.current == 10 and sagittal.current == 30 and axial.current == D // 2
    qtbot.mouseMove(axial.viewport(), pos=pt(axial, 12.5, 33.5))  # dragging: the views follow
    qtbot.mouseRelease(axial.viewport(), Qt.MouseButton.LeftButton, pos=pt(axial, 12.5, 33.5))
    assert (coronal.current, sagittal.current) == (33, 12)
    assert sagittal.crosshair_items[0].value() == pytest.approx((33 + 0.5) * 1.1)  # sagittal columns are y
    axial.step(2)  # the wheel on the axial view: its slice moves the position; the other views keep theirs
    assert window.grid.position == (D // 2 + 2, 33, 12) and (coronal.current, sagittal.current) == (33, 12)
    assert coronal.crosshair_items[1].value() == pytest.approx((11 - (D // 2 + 2) + 0.5) * 2.5)
    assert coronal.axial_z == sagittal.axial_z == axial.current == D // 2 + 2  # z of the linked position
    assert window.session is not None and not window.session.labels.any()  # the crosshair never edits


def test_slice_keys_act_on_the_view_under_the_pointer_whatever_has_the_focus(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    axial, coronal = window.views["axial"], window.views["coronal"]
    enter(qtbot, window, coronal)
    assert window.view is coronal and window.orientation_actions["coronal"].isChecked()
    focused = window.labels_panel.list
    focused.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is focused, timeout=5000)
    before = (axial.current, coronal.current)
    qtbot.keyClick(focused, Qt.Key.Key_Up)
    assert (axial.current, coronal.current) == (before[0], before[1] + 1)
    assert window.grid.position is not None and window.grid.position[1] == before[1] + 1
    enter(qtbot, window, axial)
    qtbot.keyClick(focused, Qt.Key.Key_PageDown)
    assert (axial.current, coronal.current) == (before[0] - 1, before[1] + 1)


def test_double_click_or_m_maximises_a_view_and_back(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    panes, sagittal = window.grid.panes, window.views["sagittal"]
    qtbot.mouseDClick(sagittal.viewport(), Qt.MouseButton.LeftButton, pos=pt(sagittal, 5.5, 5.5))
    assert [o for o, p in panes.items() if p.isVisible()] == ["sagittal"] and window.view is sagittal
    window.set_orientation("axial")  # key 1 while maximised: the axial view alone
    assert [o for o, p in panes.items() if p.isVisible()] == ["axial"]
    window.act_maximise.trigger()  # M: the three views again
    assert all(p.isVisible() for p in panes.values()) and window.view is window.views["axial"]
    window.act_maximise.trigger()
    assert [o for o, p in panes.items() if p.isVisible()] == ["axial"]
    panes["axial"].maximise_button.click()
    assert all(p.isVisible() for p in panes.values())
    assert window.session is not None and not window.session.labels.any()


def test_a_double_click_beside_a_box_is_two_click_points_not_a_maximise(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    axial = window.views["axial"]
    axial.last_box = (axial.current, BOX.copy())
    points: list[tuple[float, float, bool]] = []
    axial.point_clicked.connect(lambda _z, x, y, positive: points.append((x, y, positive)))
    vp = axial.viewport()
    qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=pt(axial, 20.5, 20.5))
    qtbot.mouseDClick(vp, Qt.MouseButton.LeftButton, pos=pt(axial, 20.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(axial, 20.5, 20.5))
    assert len(points) == 2 and window.grid.maximised is None


def test_one_window_level_for_every_view_and_an_optional_zoom_link(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    axial, coronal, sagittal = (window.views[o] for o in ("axial", "coronal", "sagittal"))
    axial.set_window(40.0, 400.0)
    assert (coronal.level, coronal.width) == (sagittal.level, sagittal.width) == (40.0, 400.0)
    qtbot.waitUntil(lambda: axial.mm_per_pixel() > 0 and coronal.mm_per_pixel() > 0)
    coronal_zoom = coronal.mm_per_pixel()
    axial.vb.scaleBy((0.5, 0.5))  # zoom alone: the other views keep theirs
    assert coronal.mm_per_pixel() == pytest.approx(coronal_zoom)
    window.act_link_zoom.trigger()
    assert coronal.mm_per_pixel() == pytest.approx(axial.mm_per_pixel(), rel=1e-3)
    sagittal.vb.scaleBy((0.5, 0.5))
    for view in (axial, coronal):
        assert view.mm_per_pixel() == pytest.approx(sagittal.mm_per_pixel(), rel=1e-3)


def test_one_box_across_the_views_and_every_view_shows_its_mask(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    axial, coronal, sagittal = (window.views[o] for o in ("axial", "coronal", "sagittal"))
    coronal.last_box = (coronal.current, np.array([10.0, 2.0, 40.0, 9.0]))
    assert window.box_view is coronal
    axial.last_box = (axial.current, BOX.copy())  # a box in another view replaces it
    assert window.box_view is axial and coronal.last_box is None
    session = window.session
    assert session is not None
    coronal.box_drawn.emit(coronal.current, np.array([10.0, 2.0, 40.0, 9.0]))
    qtbot.waitUntil(lambda: session.labels.any(), timeout=5000)
    y = coronal.current
    zs = np.nonzero(session.labels.any(axis=(1, 2)))[0]
    assert set(session.labels.any(axis=(0, 2)).nonzero()[0]) == {y} and axial.current in zs
    assert axial.overlay.image[y, 20, 3] > 0  # the axial view shows the coronal mask's row at once
    assert sagittal.overlay.image[11 - axial.current, y, 3] > 0


def test_a_running_propagation_shows_in_every_view(qtbot, make_window, fake) -> None:
    window = make_window(fake(delay=0.15))
    open_volume(window)
    axial, coronal, sagittal = (window.views[o] for o in ("axial", "coronal", "sagittal"))
    coronal.last_box = (coronal.current, np.array([10.0, 2.0, 40.0, 9.0]))
    y0 = coronal.current
    with qtbot.waitSignal(window.worker.slice_done, timeout=10000):
        assert window.propagate(below=0, above=4) is not None
    assert preview_rows(axial) == {y0}  # the first slice, uncommitted, in the axial and sagittal views
    assert sagittal.overlay.image[11 - axial.current, y0, 3] == 160
    with qtbot.waitSignal(window.worker.slice_done, timeout=10000):
        pass
    assert preview_rows(axial) == {y0, y0 + 1}
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        pass
    assert preview_rows(axial) == set() and preview_rows(coronal) == set()
    session = window.session
    assert session is not None
    assert set(session.labels.any(axis=(0, 2)).nonzero()[0]) == set(range(y0, y0 + 5))
    drain_worker(qtbot, window.worker)


def test_a_brush_stroke_on_one_view_redraws_the_others(qtbot, make_window) -> None:
    window = make_window()
    open_volume(window)
    axial, sagittal = window.views["axial"], window.views["sagittal"]
    window.set_tool(Tool.BRUSH)
    x = sagittal.current
    assert not (axial.overlay.image[..., 3] > 0).any()
    vp = sagittal.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=pt(sagittal, 20.5, 11 - axial.current + 0.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=pt(sagittal, 20.5, 11 - axial.current + 0.5))
    painted = np.nonzero(axial.overlay.image[..., 3] > 0)
    assert len(painted[0]) and set(painted[1]) == {x}  # the dab's line across the axial slice, on column x


def test_a_2d_image_shows_one_view(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    open_synthetic(window, tmp_path, shape=(1, 60, 80))
    panes = window.grid.panes
    assert [o for o, p in panes.items() if p.isVisible()] == ["axial"]
    window.act_maximise.trigger()
    window.set_orientation("coronal")
    assert [o for o, p in panes.items() if p.isVisible()] == ["axial"] and window.view is window.views["axial"]
    assert not any(line.isVisible() for line in window.view.crosshair_items)
    assert window.open_path_and_wait(synthetic_nifti(tmp_path, name="volume.nii.gz"))  # a volume again: three
    assert all(p.isVisible() for p in panes.values())
