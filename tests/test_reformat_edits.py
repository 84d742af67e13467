"""Brush, eraser, fill holes and clear slice on coronal/sagittal planes (Qt-free, exact arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_desktop.core.document.annotation import AnnotationSession, OverlapRule
from medsam_desktop.core.inference.reformat import Plane, brush_mm
from medsam_desktop.io import Volume

D, H, W = 6, 9, 12  # every axis distinct, so a wrong transpose cannot pass
SPACING = (0.5, 1.0, 2.0)  # x, y, z mm: anisotropic in every plane
UP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # slice axis points superior: coronal/sagittal rows flipped
DOWN = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def make_session(direction=UP) -> AnnotationSession:
    session = AnnotationSession(Volume(np.zeros((D, H, W), np.int16), spacing=SPACING, direction=direction))
    session.add_label()
    return session


def test_brush_radius_is_round_in_mm_in_every_plane() -> None:
    assert brush_mm(4, SPACING) == 2.0  # a brush pixel is the finer axial spacing (0.5 mm)
    assert Plane("axial").brush_radii(4, SPACING) == (4.0, 2.0)  # x 0.5 mm, y 1.0 mm
    assert Plane("coronal").brush_radii(4, SPACING) == (4.0, 1.0)  # x 0.5 mm, z 2.0 mm
    assert Plane("sagittal").brush_radii(4, SPACING) == (2.0, 1.0)  # y 1.0 mm, z 2.0 mm
    assert Plane("coronal").brush_radii(1, SPACING) == (1.0, 0.5)  # never under half a pixel
    assert Plane("axial").brush_radii(5, (1.0, 1.0, 3.0)) == (5.0, 5.0)  # square axial pixels: radius in pixels
    assert Plane("sagittal", True).region(4, 2, (D, H, W)) == (slice(0, D), slice(0, H), slice(4, 6))


@pytest.mark.parametrize(
    ("orientation", "direction", "index", "point", "expected"),
    [
        # coronal y = 3, radius 4 -> 4 columns (x) by 1 row (z); rows flipped: z = 5 - row
        ("coronal", UP, 3, (5, 2), [((3, 3, slice(1, 10))), (4, 3, 5), (2, 3, 5)]),
        ("coronal", DOWN, 3, (5, 2), [((2, 3, slice(1, 10))), (1, 3, 5), (3, 3, 5)]),
        # sagittal x = 6, radius 4 -> 2 columns (y) by 1 row (z)
        ("sagittal", UP, 6, (3, 1), [(4, slice(1, 6), 6), (5, 3, 6), (3, 3, 6)]),
        ("sagittal", DOWN, 6, (3, 1), [(1, slice(1, 6), 6), (0, 3, 6), (2, 3, 6)]),
    ],
)
def test_brush_dab_on_a_reformatted_plane_paints_exactly_the_voxels_under_it(
    orientation, direction, index, point, expected
) -> None:
    session = make_session(direction)
    plane = Plane.of(session.volume, orientation)
    changed: list[tuple[int, int]] = []
    session.labels_changed.connect(lambda z0, z1: changed.append((z0, z1)))
    session.begin_stroke(index, plane=plane)
    session.stroke_to(np.array([point], float), 4)
    assert session.end_stroke() and len(session.history) == 2  # add label + one stroke
    want = np.zeros((D, H, W), np.uint8)
    for where in expected:
        want[where] = 1
    np.testing.assert_array_equal(session.labels, want)
    zs = np.flatnonzero(want.any(axis=(1, 2)))
    assert changed[0] == (zs[0], zs[-1])  # the slices the autosave/axial view must refresh
    assert session.history.undo_text() == "Brush"
    session.undo()
    assert not session.labels.any()
    session.redo()
    np.testing.assert_array_equal(session.labels, want)


def test_a_stroke_is_one_undo_step_with_no_gaps_and_stays_on_its_plane() -> None:
    session = make_session()
    plane = Plane.of(session.volume, "coronal")
    session.begin_stroke(4, plane=plane)
    session.stroke_to(np.array([[1.0, 3.0], [10.0, 3.0]]), 1, connect=True)  # radius 1: 1 col x 0.5 row
    session.stroke_to(np.array([[10.0, 3.0], [10.0, 5.0]]), 1, connect=True)
    session.end_stroke()
    want = np.zeros((D, H, W), np.uint8)
    want[2, 4, 0:12] = 1  # row 3 -> z 2, a dab of 1 column reaches x 0 and x 11
    want[0:3, 4, 9:12] = 1  # rows 3..5 -> z 2..0, at x 10 +- 1
    np.testing.assert_array_equal(session.labels, want)
    assert [s.description for s in session.history._steps] == ["Add label", "Brush"]
    session.undo()
    assert not session.labels.any()


def test_eraser_and_brush_on_a_sagittal_plane_obey_the_overlap_rule() -> None:
    session = make_session()
    other = session.add_label().id  # label 2, now active
    session.set_active_label(1)
    base = np.zeros((D, H, W), np.uint8)
    base[:, :, 6] = other
    base[0:3, 2:5, 6] = 1
    session.replace_labels(base)
    session.overlap = OverlapRule.BACKGROUND
    plane = Plane.of(session.volume, "sagittal")
    # eraser with "only fill background": removes only the active label 1 under the dab
    session.begin_stroke(6, erase=True, plane=plane)
    session.stroke_to(np.array([[3.0, 4.0]]), 4)  # rows 3..5 (z 2..0) at y 3, row 4 (z 1) at y 1..5
    session.end_stroke()
    want = base.copy()
    want[1, 2:5, 6] = 0
    want[0, 3, 6] = want[2, 3, 6] = 0
    np.testing.assert_array_equal(session.labels, want)
    # the brush does not overwrite label 2 with "only fill background", but does with "overwrite"
    session.begin_stroke(6, plane=plane)
    session.stroke_to(np.array([[7.0, 1.0]]), 4)  # row 1 (z 4) at y 5..9, rows 0, 2 (z 5, 3) at y 7
    session.end_stroke()
    np.testing.assert_array_equal(session.labels, want)
    session.overlap = OverlapRule.OVERWRITE
    session.begin_stroke(6, plane=plane)
    session.stroke_to(np.array([[7.0, 1.0]]), 4)
    session.end_stroke()
    want[4, 5:9, 6] = 1
    want[5, 7, 6] = want[3, 7, 6] = 1
    np.testing.assert_array_equal(session.labels, want)
    session.undo()
    session.undo()
    np.testing.assert_array_equal(session.labels, base)


def ring_volume(session: AnnotationSession) -> np.ndarray:
    """Label 1 rings in the sagittal planes x = 4 and x = 5 (hole z 2..3, y 2..3); lines in axial planes."""
    labels = np.zeros((D, H, W), np.uint8)
    for x in (4, 5):
        labels[1:5, 1:5, x] = 1
        labels[2:4, 2:4, x] = 0
    session.replace_labels(labels)
    return labels


def test_fill_holes_on_a_sagittal_plane_fills_only_that_plane() -> None:
    session = make_session()
    before = ring_volume(session)
    assert not session.fill_holes(2)  # axial slice 2 holds two lines, no hole
    assert not session.fill_holes(3, plane=Plane.of(session.volume, "coronal"))  # coronal y 3: no hole either
    steps = len(session.history)
    assert session.fill_holes(4, plane=Plane.of(session.volume, "sagittal"))
    assert len(session.history) == steps + 1 and session.history.undo_text() == "Fill holes"
    want = before.copy()
    want[2:4, 2:4, 4] = 1
    np.testing.assert_array_equal(session.labels, want)  # the ring at x 5 keeps its hole
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.redo()
    np.testing.assert_array_equal(session.labels, want)
    assert not session.fill_holes(W, plane=Plane("sagittal"))  # outside the volume: nothing
    assert session.fill_holes(None, plane=Plane("sagittal", flip=True))  # every sagittal plane
    want[2:4, 2:4, 5] = 1
    np.testing.assert_array_equal(session.labels, want)


@pytest.mark.parametrize("label", [None, 2])
def test_clear_slice_on_coronal_clears_exactly_one_y_plane(label) -> None:
    session = make_session()
    session.add_label()
    before = np.random.default_rng(1).integers(0, 3, size=(D, H, W)).astype(np.uint8)
    session.replace_labels(before)
    plane = Plane.of(session.volume, "coronal")
    changed: list[tuple[int, int]] = []
    session.labels_changed.connect(lambda z0, z1: changed.append((z0, z1)))
    assert session.clear_slice(5, label, plane)
    assert session.history.undo_text() == "Clear slice" and changed == [(0, D - 1)]
    want = before.copy()
    if label is None:
        want[:, 5, :] = 0
    else:
        want[:, 5, :][want[:, 5, :] == label] = 0
    np.testing.assert_array_equal(session.labels, want)
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.redo()
    np.testing.assert_array_equal(session.labels, want)
    assert not session.clear_slice(H, None, plane) and not session.clear_slice(-1, None, plane)
