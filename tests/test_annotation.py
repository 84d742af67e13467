"""Qt-free document model: undo/redo exactness, diff memory, overlap rule, one-step propagation, events."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from medsam_desktop.core.document.annotation import AnnotationSession, LabelTable, OverlapRule, Signal, sidecar_path
from medsam_desktop.io import Volume


def make_session(shape: tuple[int, int, int] = (12, 40, 50)) -> AnnotationSession:
    return AnnotationSession(Volume(np.zeros(shape, np.int16)))


def random_op(s: AnnotationSession, rng: np.random.Generator) -> None:
    d, h, w = s.shape
    op = rng.integers(0, 9)
    z = int(rng.integers(0, d))
    if op == 0 or not len(s.table):
        s.add_label()
    elif op == 1:
        mask = np.zeros((h, w), bool)
        y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
        mask[y : y + rng.integers(2, 15), x : x + rng.integers(2, 15)] = True
        s.apply_mask(z, mask, int(rng.choice(s.table.ids())))
    elif op == 2:
        s.begin_stroke(z, erase=bool(rng.integers(0, 2)))
        s.stroke_to(rng.uniform(0, [w, h], size=(4, 2)), radius=float(rng.uniform(1, 4)))
        s.stroke_to(rng.uniform(0, [w, h], size=(2, 2)), radius=2)
        s.end_stroke()
    elif op == 3:
        vol = np.zeros((4, h, w), bool)
        vol[:, 5:20, 10:30] = rng.random((4, 15, 20)) > 0.3
        s.apply_volume_mask(vol, z0=min(z, d - 4))
    elif op == 4:
        s.fill_holes(z)
    elif op == 5:
        s.clear_slice(z, None if rng.integers(0, 2) else s.active_label)
    elif op == 6:
        s.rename_label(int(rng.choice(s.table.ids())), f"organ {rng.integers(100)}")
    elif op == 7:
        s.recolor_label(int(rng.choice(s.table.ids())), tuple(int(v) for v in rng.integers(0, 256, 3)))
    elif op == 8 and len(s.table) > 1:
        s.delete_label(int(rng.choice(s.table.ids())))
    s.overlap = OverlapRule.BACKGROUND if rng.integers(0, 3) == 0 else OverlapRule.OVERWRITE


def test_undo_redo_restores_exact_arrays_over_60_ops() -> None:
    s = make_session()
    rng = np.random.default_rng(0)
    states = [(s.labels.copy(), s.table.state())]
    for _ in range(60):
        before = len(s.history)
        random_op(s, rng)
        if len(s.history) != before or s.history.can_redo:
            states.append((s.labels.copy(), s.table.state()))
    n_steps = len(states) - 1
    assert n_steps >= 50 and len(s.history) == n_steps
    for labels, table in reversed(states[:-1]):
        assert s.undo()
        np.testing.assert_array_equal(s.labels, labels)
        assert s.table.state() == table
    assert not s.undo() and not s.dirty
    for labels, table in states[1:]:
        assert s.redo()
        np.testing.assert_array_equal(s.labels, labels)
        assert s.table.state() == table
    assert not s.redo()


def test_diff_memory_is_bounded_on_a_big_volume() -> None:
    s = AnnotationSession(Volume(np.zeros((300, 512, 512), np.uint8)))
    s.add_label()
    for i in range(60):
        s.begin_stroke(i * 5)
        s.stroke_to(np.array([[100.0 + i, 100.0], [140.0, 130.0]]), radius=5)
        s.end_stroke()
    assert len(s.history) == 61
    assert s.history.nbytes < 200_000  # vs 78 MB for one copy of the label map
    mask = np.zeros((3, 512, 512), bool)
    mask[:, 10:30, 20:60] = True
    s.apply_volume_mask(mask, z0=100)
    step = s.history._steps[-1]
    assert step.before.shape == (3, 20, 40)


def test_undo_depth_is_bounded_by_steps() -> None:
    s = AnnotationSession(Volume(np.zeros((2, 8, 8), np.uint8)), max_undo=50)
    s.add_label()
    for i in range(70):
        m = np.zeros((8, 8), bool)
        m[i % 8, (i // 8) % 8] = True
        s.apply_mask(i % 2, m)
    assert len(s.history) == 50
    undone = 0
    while s.undo():
        undone += 1
    assert undone == 50 and s.dirty  # the opening state was dropped from history: still unsaved work


def test_overlap_rule() -> None:
    s = make_session((1, 10, 10))
    a, b = s.add_label().id, s.add_label().id
    m1 = np.zeros((10, 10), bool)
    m1[2:6, 2:6] = True
    m2 = np.zeros((10, 10), bool)
    m2[4:8, 4:8] = True
    s.apply_mask(0, m1, a)
    s.overlap = OverlapRule.BACKGROUND
    s.apply_mask(0, m2, b)
    assert s.labels[0, 5, 5] == a and s.labels[0, 7, 7] == b
    s.overlap = OverlapRule.OVERWRITE
    s.apply_mask(0, m2, b)
    assert s.labels[0, 5, 5] == b and s.labels[0, 2, 2] == a


def test_propagation_result_is_one_undo_step_and_events_fire() -> None:
    s = make_session()
    events: dict[str, list] = {"labels": [], "table": [], "dirty": []}
    s.labels_changed.connect(lambda z0, z1: events["labels"].append((z0, z1)))
    s.table_changed.connect(lambda: events["table"].append(True))
    s.dirty_changed.connect(lambda d: events["dirty"].append(d))
    s.add_label("liver")
    assert events["table"] and events["dirty"] == [True]
    s.mark_saved()
    assert events["dirty"] == [True, False]
    mask = np.zeros((6, 40, 50), bool)
    mask[1:5, 10:20, 10:30] = True
    n = len(s.history)
    assert s.apply_volume_mask(mask, z0=3)
    assert len(s.history) == n + 1 and events["labels"][-1] == (4, 7)
    assert int(s.labels.sum()) == 4 * 10 * 20
    s.undo()
    assert not s.labels.any() and events["dirty"][-1] is False and events["labels"][-1] == (4, 7)


def test_fill_holes_clear_and_delete() -> None:
    s = make_session((2, 20, 20))
    lid = s.add_label().id
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[8:12, 8:12] = False
    s.apply_mask(0, ring)
    assert s.fill_holes(0) and s.labels[0, 10, 10] == lid
    s.apply_mask(1, ring)
    assert s.clear_slice(1) and not s.labels[1].any()
    s.delete_label(lid)
    assert lid not in s.table and not s.labels.any() and s.active_label == 0
    s.undo()
    assert lid in s.table and s.labels[0, 10, 10] == lid


def test_large_label_ids_switch_to_uint16_and_sidecar_roundtrip(tmp_path) -> None:
    s = make_session((1, 4, 4))
    s.table.add("a", label_id=300)
    s.set_active_label(300)
    s.apply_mask(0, np.ones((4, 4), bool))
    assert s.labels.dtype == np.uint16 and s.labels.max() == 300
    text = s.table.to_json()
    assert LabelTable.from_json(text).state() == s.table.state()
    assert sidecar_path(tmp_path / "x_seg.nii.gz").name == "x_seg.json"
    with pytest.raises(ValueError):
        LabelTable.from_json('{"format": "other"}')


def test_signal_connect_disconnect() -> None:
    sig, got = Signal(), []
    sig.connect(got.append)
    sig.emit(1)
    sig.disconnect(got.append)
    sig.emit(2)
    assert got == [1]


def test_document_model_imports_no_qt() -> None:
    code = (
        "import sys, medsam_desktop.core.document.annotation, medsam_desktop.core.document.undo\n"
        "bad = [m for m in ('PyQt6', 'PySide6', 'pyqtgraph', 'qtawesome') if m in sys.modules]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_edits_arriving_during_a_brush_stroke_stay_separate_undo_steps() -> None:
    """A segmentation (or propagation, undo ...) landing while the mouse is still down must not be folded into the
    brush step: undoing everything returns to empty, redoing everything to the final state."""
    s = make_session()
    s.add_label()
    seg = np.zeros(s.shape[1:], bool)
    seg[20:30, 30:45] = True

    s.begin_stroke(3)
    s.stroke_to(np.array([[5.0, 5.0]]), radius=2)
    s.apply_mask(3, seg)  # the model's answer arrives mid-stroke
    s.stroke_to(np.array([[10.0, 8.0]]), radius=2, connect=True)
    s.end_stroke()
    final = s.labels.copy()

    s.undo()  # the brush, only: the segmentation stays
    np.testing.assert_array_equal(s.labels[3][seg], 1)
    while s.undo():
        pass
    assert not s.labels.any(), "undoing every step must give back the empty label map"
    while s.redo():
        pass
    np.testing.assert_array_equal(s.labels, final)


def test_undo_pressed_during_a_brush_stroke_keeps_history_consistent() -> None:
    s = make_session()
    s.add_label()
    seg = np.zeros(s.shape[1:], bool)
    seg[20:30, 30:45] = True
    s.apply_mask(3, seg)

    s.begin_stroke(3)
    s.stroke_to(np.array([[5.0, 5.0]]), radius=2)
    s.undo()  # Ctrl+Z with the mouse still down
    s.stroke_to(np.array([[12.0, 12.0]]), radius=2)
    s.end_stroke()
    while s.undo():
        pass
    assert not s.labels.any()


def test_fill_holes_matches_scipy_on_random_masks() -> None:
    """The app fills holes with SimpleITK (no scipy in the bundle): the same holes as scipy's definition."""
    from scipy import ndimage

    from medsam_desktop.core.document.annotation import fill_holes

    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.uniform(0.2, 0.8)
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_repaint_replaces_the_previous_mask_in_one_undo_step() -> None:
    from medsam_desktop.core.inference.reformat import Plane

    s = make_session()
    s.overlap = OverlapRule.OVERWRITE
    other, label = s.add_label("other").id, s.add_label("target").id
    plane = Plane()
    s.apply_mask(3, _rect(s, 5, 5, 10, 10), label=other)
    base = s.plane_slice(plane, 3)
    s.apply_plane_mask(plane, 3, _rect(s, 0, 0, 20, 20), label)  # the box's mask, over the other label
    assert (s.labels[3] == label).sum() == 400 and (s.labels[3] == other).sum() == 0
    s.repaint_plane_mask(plane, 3, base, _rect(s, 15, 15, 25, 25), label)  # a click: another mask
    assert (s.labels[3] == label).sum() == 100 and (s.labels[3][15:25, 15:25] == label).all()
    assert (s.labels[3] == other).sum() == 25  # what the box had covered is back as it was
    assert s.history.undo_text() == "Click"
    s.undo()  # one step: back to the box's mask
    assert (s.labels[3] == label).sum() == 400 and (s.labels[3] == other).sum() == 0


def test_repaint_keeps_locked_voxels() -> None:
    from medsam_desktop.core.inference.reformat import Plane

    s = make_session()
    locked, label = s.add_label("locked").id, s.add_label("target").id
    s.apply_mask(2, _rect(s, 0, 0, 4, 4), label=locked)
    base = s.plane_slice(plane := Plane(), 2)
    s.set_label_locked(locked, True)
    s.repaint_plane_mask(plane, 2, np.zeros_like(base), _rect(s, 0, 0, 10, 10), label)  # base without it
    assert (s.labels[2] == locked).sum() == 16 and (s.labels[2] == label).sum() == 84


def _rect(s: AnnotationSession, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros(s.shape[1:], bool)
    m[y0:y1, x0:x1] = True
    return m
