"""Reformatted planes (core.reformat) and plane-frame edits of the annotation session (Qt-free)."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_desktop.core.document.annotation import AnnotationSession, OverlapRule
from medsam_desktop.core.inference.reformat import Plane
from medsam_desktop.io import Volume

SHAPE = (5, 6, 7)  # D, H, W: every axis distinct, so a wrong transpose cannot pass
ARR = np.arange(np.prod(SHAPE)).reshape(SHAPE)


@pytest.mark.parametrize(
    ("plane", "index", "expected"),
    [
        (Plane("axial"), 2, ARR[2]),
        (Plane("coronal"), 3, ARR[:, 3, :]),
        (Plane("coronal", flip=True), 3, ARR[::-1, 3, :]),
        (Plane("sagittal"), 4, ARR[:, :, 4]),
        (Plane("sagittal", flip=True), 4, ARR[::-1, :, 4]),
    ],
)
def test_plane_slices_voxels_and_inverse(plane: Plane, index: int, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(plane.take(ARR, index), expected)
    assert plane.size(SHAPE) == expected.shape and plane.depth(SHAPE) == plane.stack(ARR).shape[0]
    rows, cols = expected.shape
    for row, col in ((0, 0), (rows - 1, 0), (1, cols - 1)):
        assert ARR[plane.voxel(index, row, col, SHAPE)] == expected[row, col]
    # to_zyx undoes stack: a block of plane slices 1..2 lands where it came from
    block = plane.stack(ARR)[1:3]
    z, y, x = plane.origin(1)
    back = plane.to_zyx(block)
    np.testing.assert_array_equal(back, ARR[z : z + back.shape[0], y : y + back.shape[1], x : x + back.shape[2]])


def test_plane_of_flips_when_the_slice_axis_points_superior_and_keeps_rgb_channels() -> None:
    up = Volume(np.zeros((3, 4, 5), np.int16))
    down = Volume(np.zeros((3, 4, 5), np.int16), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert Plane.of(up, "coronal") == Plane("coronal", True) and Plane.of(up, "axial") == Plane("axial")
    assert Plane.of(down, "sagittal") == Plane("sagittal", False)
    rgb = np.arange(3 * 4 * 5 * 3).reshape(3, 4, 5, 3)
    np.testing.assert_array_equal(Plane("sagittal", True).take(rgb, 2), rgb[::-1, :, 2, :])
    assert Plane("coronal").pixel_spacing((0.7, 1.3, 2.5)) == (0.7, 2.5)
    with pytest.raises(ValueError):
        Plane("oblique")


def test_apply_plane_and_stack_masks_land_on_the_voxels_one_undo_step_each() -> None:
    session = AnnotationSession(Volume(np.zeros(SHAPE, np.int16)))
    session.add_label()
    plane = Plane("coronal", flip=True)
    mask = np.zeros((5, 7), bool)  # (D, W) plane frame: row 0 is z = 4
    mask[0:2, 1:4] = True
    assert session.apply_plane_mask(plane, 2, mask)
    expected = np.zeros(SHAPE, np.uint8)
    expected[3:5, 2, 1:4] = 1
    np.testing.assert_array_equal(session.labels, expected)
    # a sagittal stack of 2 slices (x = 5, 6) under the "only fill background" rule
    session.add_label()
    session.overlap = OverlapRule.BACKGROUND
    stack = np.zeros((2, 5, 6), bool)  # (K, D, H), not flipped
    stack[:, 3:5, 2] = True  # z 3..4, y 2 (voxels (3..4, 2, 5..6); (4, 2, 5) not labelled yet)
    stack[0, 4, 0] = True
    session.apply_plane_mask(Plane("coronal", flip=True), 2, np.pad(np.ones((2, 1), bool), ((0, 3), (5, 1))), 1)
    before = session.labels.copy()  # label 1 now also on z 3..4, y 2, x 5
    steps = len(session.history)
    assert session.apply_stack_mask(Plane("sagittal"), 5, stack, 2)
    assert len(session.history) == steps + 1
    expected = before.copy()
    expected[3:5, 2, 6] = 2  # x 5 keeps label 1 (protected), x 6 was background
    expected[4, 0, 5] = 2
    np.testing.assert_array_equal(session.labels, expected)
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    with pytest.raises(ValueError):
        session.apply_stack_mask(Plane("sagittal"), 6, stack, 2)  # slices 6..7 do not exist
