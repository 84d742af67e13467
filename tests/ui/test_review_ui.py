"""Review of the window under scripted user scenarios (fake backends, offscreen): propagation racing with
closing, opening, deleting labels and settings; strokes interrupted by slice, view or image changes; bad
settings; degenerate boxes, 2D images, many labels and masks of the wrong geometry."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk
from PyQt6.QtCore import QPoint, Qt

from medsam_desktop.io import read_labels
from medsam_desktop.ui import dialogs
from medsam_desktop.ui.settings_dialog import AppSettings
from medsam_desktop.ui.slice_view import Tool

BOX = np.array([10.0, 10.0, 40.0, 40.0])


def synthetic_nifti(tmp_path, shape=(9, 60, 80), name: str = "case.nii.gz", spacing=(0.7, 1.3, 2.5)):
    """A CT-like int16 volume with non-trivial spacing and origin."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1000, size=shape).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def excepthook(monkeypatch) -> list[BaseException]:
    """Exceptions escaping to Qt (slots, event handlers) are recorded here."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda _t, value, _tb: seen.append(value))
    return seen


def _open(window, tmp_path, **kw):
    assert window.open_path_and_wait(synthetic_nifti(tmp_path, **kw))
    return window.session


def _status(window) -> str:
    return window.statusBar().currentMessage()


def _pt(view, x: float, y: float) -> QPoint:
    p = view.pixel_to_widget(x, y)
    return QPoint(round(p.x()), round(p.y()))


def _near_box(mask: np.ndarray, box: np.ndarray = BOX, tol: int = 1) -> None:
    """``mask`` is the fake model's answer to ``box``: the box itself, within a pixel of resampling."""
    ys, xs = np.nonzero(mask)
    assert len(ys) and np.abs(np.array([xs.min(), ys.min(), xs.max(), ys.max()]) - box).max() <= tol


def _start_propagation(qtbot, window, below: int = 4, above: int = 4, z: int = 4) -> int:
    """Start propagating ``BOX`` from slice ``z``; returns once the first slice is done."""
    window.view.last_box = (z, BOX.copy())
    with qtbot.waitSignal(window.worker.slice_done, timeout=10000):
        req = window.propagate(below=below, above=above)
    assert req is not None
    return req


# --- propagation racing with other actions -----------------------------------------------------------------
def test_closing_during_a_propagation_asks_and_keeps_the_finished_slices(
    qtbot, make_window, tmp_path, fake, excepthook, monkeypatch
) -> None:
    window = make_window(fake(delay=0.1))
    session = _open(window, tmp_path)
    session.ensure_active_label()
    session.mark_saved()  # nothing unsaved but the propagation itself
    steps = len(session.history)
    asked: list[str] = []
    answer = "cancel"
    monkeypatch.setattr(dialogs, "ask_save_changes", lambda parent: asked.append(answer) or answer)
    _start_propagation(qtbot, window)
    assert not window.close()  # the propagated slices are unsaved work: asked, and "cancel" keeps the window
    assert asked == ["cancel"] and window.isVisible() and window._propagation is None
    done = session.labels.any(axis=(1, 2))
    assert done[4] and 0 < done.sum() < 9 and len(session.history) == steps + 1  # kept, as one undo step
    assert window.act_propagate.isEnabled() and not window.progress.isVisible()
    kept = session.labels.copy()
    answer = "discard"
    _start_propagation(qtbot, window, below=0, above=0, z=0)
    qtbot.waitUntil(lambda: window._propagation is None, timeout=5000)
    kept = session.labels.copy()
    _start_propagation(qtbot, window, below=8, above=0, z=8)
    assert window.close() and asked == ["cancel", "discard"]
    after_close = session.labels.copy()
    qtbot.wait(300)  # nothing may land on the session of a closed window
    assert np.array_equal(session.labels, after_close) and (after_close != kept).any()
    assert excepthook == []


def test_opening_another_file_during_a_propagation_saves_the_finished_slices(
    qtbot, make_window, tmp_path, fake, excepthook, monkeypatch
) -> None:
    window = make_window(fake(delay=0.1))
    session = _open(window, tmp_path)
    session.ensure_active_label()
    session.mark_saved()
    out = tmp_path / "kept_seg.nii.gz"
    monkeypatch.setattr(dialogs, "ask_save_changes", lambda parent: "save")
    monkeypatch.setattr(window, "save_dialog", lambda: window.save_labels(out))
    _start_propagation(qtbot, window)
    other = tmp_path / "other"
    other.mkdir()
    assert window.open_path_and_wait(synthetic_nifti(other))
    assert window.session is not session and not window.session.labels.any()
    saved = read_labels(out, session.volume)
    assert np.array_equal(saved, session.labels) and 0 < saved.any(axis=(1, 2)).sum() < 9
    assert excepthook == []


def test_deleting_the_label_during_a_propagation_discards_it_with_a_message(
    qtbot, make_window, tmp_path, fake, excepthook
) -> None:
    window = make_window(fake(delay=0.05))
    session = _open(window, tmp_path)
    _start_propagation(qtbot, window)
    window.labels_panel.delete_selected()
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        pass
    assert not session.labels.any() and len(session.table) == 0
    assert "label was deleted" in _status(window) and not window.progress.isVisible()
    assert window.act_propagate.isEnabled() and window.act_undo.isEnabled()
    window.undo()  # the deletion comes back; nothing of the propagation was written
    assert len(session.table) == 1 and not session.labels.any()
    assert excepthook == []


def test_propagation_then_undo_and_redo_restore_the_exact_label_maps(
    qtbot, make_window, tmp_path, fake, excepthook
) -> None:
    window = make_window(fake(delay=0.02))
    session = _open(window, tmp_path)
    other = session.add_label("other").id
    session.apply_volume_mask(np.ones((3, 60, 80), bool), other, z0=3)  # another label under the box
    first = session.add_label("target").id
    before = session.labels.copy()
    window.view.last_box = (4, BOX.copy())
    window.propagate(below=2, above=2)
    assert not window.act_undo.isEnabled()
    window.undo()  # ignored while the propagation runs
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        pass
    after = session.labels.copy()
    mask = after == first
    assert mask.any(axis=(1, 2)).tolist() == [False, False, True, True, True, True, True, False, False]
    assert np.array_equal(after[~mask], before[~mask])  # nothing but the new label's voxels changed
    _near_box(mask[4])
    window.undo()
    assert np.array_equal(session.labels, before)
    window.redo()
    assert np.array_equal(session.labels, after)
    assert excepthook == []


def test_orientation_and_settings_changes_mid_propagation(qtbot, make_window, tmp_path, fake, excepthook) -> None:
    window = make_window(fake(delay=0.05))
    session = _open(window, tmp_path)
    _start_propagation(qtbot, window, below=2, above=2)
    window.set_orientation("coronal")
    s = window.settings
    window.apply_settings(AppSettings(s.model, 2, 1, "background", s.runtime, s.precision))
    assert window.worker.cache.max_bytes == 2**20 and not window.act_propagate.isEnabled()
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        pass
    filled = session.labels.any(axis=(1, 2))
    assert filled.tolist() == [False, False, True, True, True, True, True, False, False]  # axial, as drawn
    _near_box(session.labels[4] > 0)
    for z in range(2, 7):  # each slice prompted by its neighbour's mask: near the box, never elsewhere
        _near_box(session.labels[z] > 0, tol=5)
    assert window.view.orientation == "coronal" and "Propagation done: 5 slices" in _status(window)
    assert excepthook == []


# --- strokes interrupted ------------------------------------------------------------------------------------
def test_a_stroke_does_not_go_on_in_another_view(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = _open(window, tmp_path)
    window.set_tool(Tool.BRUSH)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 20.5))
    dab = session.labels.copy()
    assert dab[4].any() and dab.any(axis=(1, 2)).sum() == 1
    window.set_orientation("coronal")  # key 2 while the mouse is down
    qtbot.mouseMove(vp, pos=_pt(view, 60.5, 2.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 60.5, 2.5))
    assert np.array_equal(session.labels, dab)  # never painted at coronal coordinates on the axial slice
    window.undo()  # the dab was recorded as its own step
    assert not session.labels.any()
    assert excepthook == []


def test_a_slice_change_during_a_stroke_paints_the_slice_shown(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = _open(window, tmp_path)
    session.ensure_active_label()
    start = session.labels.copy()
    window.set_tool(Tool.BRUSH)
    window.set_brush_radius(2)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 20.5))
    view.step(1)  # wheel while painting
    qtbot.mouseMove(vp, pos=_pt(view, 40.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 40.5, 20.5))
    labels = session.labels
    assert labels[4, 20, 20] and not labels[4, 20, 30:].any()  # slice 4: the first dab only
    assert labels[5, 20, 38:41].all() and not labels[5, 20, :30].any()  # slice 5: where the mouse went on it
    window.undo()
    window.undo()
    assert np.array_equal(session.labels, start)
    assert excepthook == []


def test_an_image_opened_during_a_stroke_is_not_painted(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    _open(window, tmp_path)
    window.set_tool(Tool.BRUSH)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 20.5))
    other = tmp_path / "other"
    other.mkdir()
    assert window.open_path_and_wait(synthetic_nifti(other))  # the background read ends mid-stroke
    qtbot.mouseMove(vp, pos=_pt(view, 30.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 30.5, 20.5))
    assert excepthook == []
    assert not window.session.labels.any() and len(window.session.history) == 0


def test_undo_during_a_stroke_ends_it_and_leaves_no_orphan_voxels(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = _open(window, tmp_path)
    window.set_tool(Tool.BRUSH)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 20.5))  # creates "Label 1" + a dab
    window.undo()  # Ctrl+Z with the mouse down: the dab
    window.undo()  # and "Label 1"
    qtbot.mouseMove(vp, pos=_pt(view, 30.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 30.5, 20.5))
    assert len(session.table) == 0 and not session.labels.any()  # no voxels of a label that does not exist
    assert excepthook == []


# --- segmenting: messages, degenerate input ----------------------------------------------------------------
def test_a_box_superseded_by_a_slice_change_says_so(qtbot, make_window, tmp_path, fake, excepthook) -> None:
    window = make_window(fake(delay=0.2))
    session = _open(window, tmp_path)
    window.view.box_drawn.emit(4, BOX.copy())
    assert _status(window) == "Segmenting…"
    with qtbot.waitSignal(window.worker.encoded, timeout=10000):
        window.view.step(1)
    assert _status(window).startswith("Segmentation discarded: the slice changed")
    assert not session.labels.any()
    assert excepthook == []


def test_boxes_outside_the_image_give_one_line_and_change_nothing(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = _open(window, tmp_path)
    for box in ([100, 100, 200, 200], [-50, -50, -10, -10], [10, 60, 40, 60]):  # the last: one row below
        with qtbot.waitSignal(window.worker.failed, timeout=5000):
            window.view.box_drawn.emit(4, np.array(box, float))
        assert "\n" not in _status(window) and "outside" in _status(window)
    assert not session.labels.any()
    window.view.set_slice(8)  # the last slice, the whole image
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(8, np.array([0.0, 0.0, 79.0, 59.0]))
    assert session.labels[8].mean() > 0.95 and not session.labels[:8].any()
    assert excepthook == []


def test_zero_width_or_height_boxes_are_segmented(qtbot, make_window, tmp_path, excepthook) -> None:
    """A box one pixel wide or high (inclusive corners) is a valid prompt, drawn or emitted; a click draws none."""
    window = make_window()
    _open(window, tmp_path)
    for box in ([10, 10, 10, 40], [79, 59, 79, 59], [5, 59, 60, 59]):
        with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
            window.view.box_drawn.emit(4, np.array(box, float))
        assert _status(window).startswith("Segmented"), _status(window)
    drawn: list[np.ndarray] = []
    window.view.box_drawn.connect(lambda z, box: drawn.append(np.array(box)))
    window.set_tool(Tool.BOX)
    view, vp = window.view, window.view.viewport()
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 10.5))
        qtbot.mouseMove(vp, pos=_pt(view, 20.5, 25.5))
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 40.5))
    assert len(drawn) == 1 and drawn[0].tolist() == [20, 10, 20, 40]
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 30.5, 30.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 30.5, 30.5))
    assert len(drawn) == 1  # a click is not a box
    assert excepthook == []


def test_a_model_that_fails_to_load_then_normal_editing(qtbot, make_window, tmp_path, errors, excepthook) -> None:
    window = make_window(RuntimeError("weights\nare corrupt"))
    session = _open(window, tmp_path)
    window.view.last_box = (4, BOX.copy())
    window.propagate(below=1, above=1)
    qtbot.waitUntil(lambda: window._propagation is None and window.act_propagate.isEnabled(), timeout=5000)
    assert len(errors) == 1 and "weights are corrupt" in errors[0] and window.model_label.text() == "model: unavailable"
    window.set_tool(Tool.BRUSH)
    view, vp = window.view, window.view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 20.5))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_pt(view, 20.5, 20.5))
    painted = session.labels.copy()
    assert painted[4].any()
    window.undo()
    assert not session.labels.any()
    window.redo()
    assert np.array_equal(session.labels, painted) and len(errors) == 1
    assert excepthook == []


def test_a_2d_image_propagates_one_slice(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = _open(window, tmp_path, shape=(1, 60, 80))
    assert not window.act_propagate.isEnabled()
    window.view.last_box = (0, BOX.copy())
    window.propagate(below=3, above=3)
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=5000) as blocker:
        pass
    assert blocker.args[1] == 0 and blocker.args[2].shape == (1, 60, 80)
    _near_box(session.labels[0] > 0)
    assert excepthook == []


def test_propagate_dialog_on_a_single_slice_says_why(make_window, tmp_path, monkeypatch, excepthook) -> None:
    window = make_window()
    session = _open(window, tmp_path, shape=(1, 60, 80))
    asked: list[object] = []
    monkeypatch.setattr(dialogs, "ask_propagation_range", lambda *a: asked.append(a))
    window.view.last_box = (0, BOX.copy())
    window.propagate_dialog()
    assert asked == [] and window._propagation is None and not session.labels.any()
    assert "single slice" in _status(window)
    assert excepthook == []


# --- labels, masks, settings ---------------------------------------------------------------------------------
def test_many_labels_segment_and_undo_exactly(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = _open(window, tmp_path)
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


@pytest.mark.parametrize("kind", ["size", "spacing"])
def test_a_mask_of_another_geometry_is_refused_in_one_line(qtbot, make_window, tmp_path, errors, kind) -> None:
    window = make_window()
    session = _open(window, tmp_path)
    session.apply_mask(4, np.ones((60, 80), bool), session.ensure_active_label())
    before, steps = session.labels.copy(), len(session.history)
    other = tmp_path / "masks"
    other.mkdir()
    shape, spacing = ((9, 60, 81), (0.7, 1.3, 2.5)) if kind == "size" else ((9, 60, 80), (0.7, 1.3, 3.0))
    image = sitk.GetImageFromArray(np.ones(shape, np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    sitk.WriteImage(image, str(other / "m_seg.nii.gz"))
    assert not window.open_mask(other / "m_seg.nii.gz")
    assert len(errors) == 1 and "does not fit" in errors[0] and "\n" not in errors[0]
    assert np.array_equal(session.labels, before) and len(session.history) == steps


def test_corrupt_stored_settings_do_not_stop_the_app(qtbot, store, make_window, tmp_path) -> None:
    store.setValue("model/cache_mb", -5)
    store.setValue("model/threads", -3)
    store.sync()
    window = make_window()
    assert window.settings.cache_mb == 0 and window.settings.threads == 0
    session = _open(window, tmp_path)
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(4, BOX.copy())
    assert session.labels[4].any()
