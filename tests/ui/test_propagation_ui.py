"""Propagation through the window (fake backends, offscreen) racing with closing, opening another file,
deleting its label, undo/redo, orientation and settings changes; 2D images and single-slice views."""

from __future__ import annotations

import numpy as np
from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication, QCheckBox, QDialog, QLabel, QSpinBox
from window_helpers import BOX, near_box, open_synthetic, status, synthetic_nifti, wait_worker_stopped

from medsam_desktop.io import read_labels
from medsam_desktop.ui import dialogs
from medsam_desktop.ui.settings_dialog import AppSettings


def _start_propagation(qtbot, window, below: int = 4, above: int = 4, z: int = 4) -> int:
    """Start propagating ``BOX`` from slice ``z``; returns once the first slice is done."""
    window.view.last_box = (z, BOX.copy())
    with qtbot.waitSignal(window.worker.slice_done, timeout=10000):
        req = window.propagate(below=below, above=above)
    assert req is not None
    return req


def test_closing_during_a_propagation_asks_and_keeps_the_finished_slices(
    qtbot, make_window, tmp_path, fake, excepthook, monkeypatch
) -> None:
    window = make_window(fake(delay=0.1))
    session = open_synthetic(window, tmp_path)
    session.ensure_active_label()
    session.mark_saved()  # nothing unsaved but the propagation itself
    steps = len(session.history)
    asked: list[str] = []
    answer = "cancel"
    monkeypatch.setattr(dialogs, "ask_save_changes", lambda parent: asked.append(answer) or answer)
    _start_propagation(qtbot, window)
    assert not window.close()  # the propagated slices are unsaved work: asked, and "cancel" keeps the window
    assert asked == ["cancel"] and window.isVisible() and not window.segmentation.propagating
    done = session.labels.any(axis=(1, 2))
    assert done[4] and 0 < done.sum() < 9 and len(session.history) == steps + 1  # kept, as one undo step
    assert window.act_propagate.isEnabled() and not window.progress.isVisible()
    kept = session.labels.copy()
    answer = "discard"
    _start_propagation(qtbot, window, below=0, above=0, z=0)
    qtbot.waitUntil(lambda: not window.segmentation.propagating, timeout=5000)
    kept = session.labels.copy()
    _start_propagation(qtbot, window, below=8, above=0, z=8)
    assert window.close() and asked == ["cancel", "discard"]
    after_close = session.labels.copy()
    wait_worker_stopped(qtbot, window.worker)  # nothing more can come, and what was sent has been handled
    assert np.array_equal(session.labels, after_close) and (after_close != kept).any()
    assert excepthook == []


def test_opening_another_file_during_a_propagation_saves_the_finished_slices(
    qtbot, make_window, tmp_path, fake, excepthook, monkeypatch
) -> None:
    window = make_window(fake(delay=0.1))
    session = open_synthetic(window, tmp_path)
    session.ensure_active_label()
    session.mark_saved()
    out = tmp_path / "kept_seg.nii.gz"
    monkeypatch.setattr(dialogs, "ask_save_changes", lambda parent: "save")
    monkeypatch.setattr(window.file_actions, "save_dialog", lambda: window.file_actions.save_labels(out))
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
    session = open_synthetic(window, tmp_path)
    _start_propagation(qtbot, window)
    window.labels_panel.delete_selected()
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        pass
    assert not session.labels.any() and len(session.table) == 0
    assert "label was deleted" in status(window) and not window.progress.isVisible()
    assert window.act_propagate.isEnabled() and window.act_undo.isEnabled()
    window.undo()  # the deletion comes back; nothing of the propagation was written
    assert len(session.table) == 1 and not session.labels.any()
    assert excepthook == []


def test_propagation_then_undo_and_redo_restore_the_exact_label_maps(
    qtbot, make_window, tmp_path, fake, excepthook
) -> None:
    window = make_window(fake(delay=0.02))
    session = open_synthetic(window, tmp_path)
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
    near_box(mask[4])
    window.undo()
    assert np.array_equal(session.labels, before)
    window.redo()
    assert np.array_equal(session.labels, after)
    assert excepthook == []


def test_orientation_and_settings_changes_mid_propagation(qtbot, make_window, tmp_path, fake, excepthook) -> None:
    window = make_window(fake(delay=0.05))
    session = open_synthetic(window, tmp_path)
    _start_propagation(qtbot, window, below=2, above=2)
    window.set_orientation("coronal")
    s = window.settings
    window.apply_settings(AppSettings(s.model, 2, 1, "background", s.runtime, s.precision))
    assert window.worker.cache.max_bytes == 2**20 and not window.act_propagate.isEnabled()
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        pass
    filled = session.labels.any(axis=(1, 2))
    assert filled.tolist() == [False, False, True, True, True, True, True, False, False]  # axial, as drawn
    near_box(session.labels[4] > 0)
    for z in range(2, 7):  # each slice prompted by its neighbour's mask: near the box, never elsewhere
        near_box(session.labels[z] > 0, tol=5)
    assert window.view.orientation == "coronal" and "Propagation done: 5 slices" in status(window)
    assert excepthook == []


def test_a_2d_image_propagates_one_slice(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path, shape=(1, 60, 80))
    assert not window.act_propagate.isEnabled()
    window.view.last_box = (0, BOX.copy())
    window.propagate(below=3, above=3)
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=5000) as blocker:
        pass
    assert blocker.args[1] == 0 and blocker.args[2].shape == (1, 60, 80)
    near_box(session.labels[0] > 0)
    assert excepthook == []


def test_propagate_dialog_on_a_single_slice_says_why(make_window, tmp_path, monkeypatch, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path, shape=(1, 60, 80))
    asked: list[object] = []
    monkeypatch.setattr(dialogs, "ask_propagation_range", lambda *a: asked.append(a))
    window.view.last_box = (0, BOX.copy())
    window.propagate_dialog()
    assert asked == [] and not window.segmentation.propagating and not session.labels.any()
    assert "single slice" in status(window)
    assert excepthook == []


class _FadingBackend:
    """The fake model's box masks for the first ``keep`` decodes, empty ones after (the structure ends)."""

    name = "fading"

    def __init__(self, fake, keep: int) -> None:
        self._fake, self.keep, self.decodes = fake(), keep, 0

    def encode(self, images: np.ndarray) -> np.ndarray:
        return self._fake.encode(images)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.decodes += 1
        logits, scores = self._fake.decode(embedding, boxes)
        return (logits if self.decodes <= self.keep else np.full_like(logits, -10.0)), scores


def _answer_propagation_dialog(qtbot, seen: dict, edit=None) -> None:
    """When the propagation dialog is up: record its texts and values, apply ``edit(dialog)``, press OK."""

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QDialog):
            QTimer.singleShot(10, answer)  # not shown yet: look again (the dialog's own event loop runs this)
            return
        try:
            seen["texts"] = " | ".join(label.text() for label in dialog.findChildren(QLabel))
            seen["values"] = tuple(spin.value() for spin in dialog.findChildren(QSpinBox)) + tuple(
                box.isChecked() for box in dialog.findChildren(QCheckBox)
            )
            if edit is not None:
                edit(dialog)
        finally:  # whatever went wrong above, the dialog closes (the test then fails on ``seen``)
            dialog.accept()

    QTimer.singleShot(0, answer)


def test_propagate_dialog_defaults_to_the_whole_stack_until_the_mask_disappears(
    qtbot, make_window, tmp_path, fake, excepthook
) -> None:
    """A box near one end (slice 5 of 40): the default reaches both ends of the image, stopping only where the
    mask disappears; the directions are named anatomically (identity direction: z points superior)."""
    backend = _FadingBackend(fake, keep=3)  # slices 5, 6, 7 have the structure; 8 and 4 do not
    window = make_window(backend)
    session = open_synthetic(window, tmp_path, shape=(40, 60, 80))
    window.view.last_box = (5, BOX.copy())
    seen: dict = {}
    _answer_propagation_dialog(qtbot, seen)
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        window.propagate_dialog()
    assert seen["values"] == (5, 34, True)  # not ±15: all the way to slice 0 and slice 39
    assert "Inferior (towards slice 0)" in seen["texts"] and "Superior (towards slice 39)" in seen["texts"]
    assert "below" not in seen["texts"].lower() and "above" not in seen["texts"].lower()
    assert backend.decodes == 5  # 5, 6, 7, then 8 came back empty; downwards 4 came back empty
    assert [z for z in range(40) if session.labels[z].any()] == [5, 6, 7]
    assert "Propagation done: 3 slices" in status(window)
    assert excepthook == []


def test_propagate_dialog_slice_counts_still_limit_the_range(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path, shape=(40, 60, 80))
    window.view.last_box = (30, BOX.copy())
    seen: dict = {}

    def limit(dialog) -> None:
        spins = dialog.findChildren(QSpinBox)
        spins[0].setValue(2)
        spins[1].setValue(1)

    _answer_propagation_dialog(qtbot, seen, limit)
    with qtbot.waitSignal(window.worker.propagation_finished, timeout=10000):
        window.propagate_dialog()
    assert seen["values"] == (30, 9, True)
    assert [z for z in range(40) if session.labels[z].any()] == [28, 29, 30, 31]
    assert excepthook == []
