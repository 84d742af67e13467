"""What the view shows about where it is: orientation letters from the direction matrix, the slice number, a
slider that follows and drives the slice, and a status line that follows the wheel (it was stale until the
mouse moved)."""

from __future__ import annotations

from window_helpers import open_synthetic, pt, status, wait_view_mapped

from medsam_desktop.core.document.anatomy import edge_letters

LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_edge_letters_follow_the_direction_matrix() -> None:
    assert edge_letters(LPS, "axial") == ("R", "L", "A", "P")
    assert edge_letters(LPS, "coronal", flip_rows=True) == ("R", "L", "S", "I")
    assert edge_letters(LPS, "sagittal", flip_rows=True) == ("A", "P", "S", "I")
    flipped_x = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert edge_letters(flipped_x, "axial")[:2] == ("L", "R")
    oblique = (0.7071, 0.7071, 0.0, -0.7071, 0.7071, 0.0, 0.0, 0.0, 1.0)
    assert edge_letters(oblique, "axial") == ("", "", "", "")


def test_letters_slice_number_and_slider(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    open_synthetic(window, tmp_path)
    view, slider = window.view, window.slice_slider
    assert [view.edge_labels[e].text() for e in ("left", "right", "top", "bottom")] == ["R", "L", "A", "P"]
    assert view.slice_label.text() == f"Axial {view.current + 1} / 9"
    assert slider.isEnabled() and slider.maximum() == 8 and slider.value() == view.current
    view.step(2)
    assert slider.value() == view.current and view.slice_label.text() == f"Axial {view.current + 1} / 9"
    with qtbot.waitSignal(view.slice_changed, timeout=2000):
        slider.setValue(1)
    assert view.current == 1 and view.slice_label.text() == "Axial 2 / 9"
    coronal, coronal_slider = window.views["coronal"], window.grid.panes["coronal"].slider
    assert coronal_slider.maximum() == 59 and coronal.slice_label.text().startswith("Coronal")
    assert coronal.edge_labels["top"].text() in ("S", "I")
    window.set_orientation("coronal")  # the window's slider is the active view's
    assert window.slice_slider is coronal_slider and window.view is coronal


def test_the_status_line_follows_the_wheel(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    open_synthetic(window, tmp_path)
    view = window.view
    wait_view_mapped(qtbot, view)
    qtbot.mouseMove(view.viewport(), pos=pt(view, 20.5, 30.5))
    z = view.current
    assert f"z {z} " in window.cursor_label.text()
    view.step(1)  # as the wheel does
    assert f"z {z + 1} " in window.cursor_label.text() and status(window) is not None
