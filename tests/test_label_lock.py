"""A locked label: no box, brush, eraser, fill, clear or propagation changes its voxels; saved with the labels."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_desktop.core.document.annotation import AnnotationSession, LabelLockedError, LabelTable, OverlapRule
from medsam_desktop.core.inference.reformat import Plane
from medsam_desktop.io import Volume


def _session() -> tuple[AnnotationSession, int, int]:
    session = AnnotationSession(Volume(np.zeros((4, 30, 30), np.int16)))
    liver = session.add_label("liver").id
    mask = np.zeros((30, 30), bool)
    mask[5:20, 5:20] = True
    session.apply_mask(1, mask, liver)
    other = session.add_label("tumour").id
    session.set_label_locked(liver, True)
    return session, liver, other


def test_other_labels_never_overwrite_a_locked_one() -> None:
    session, liver, other = _session()
    before = session.labels.copy()
    big = np.ones((30, 30), bool)
    assert session.overlap is OverlapRule.OVERWRITE  # even the rule that replaces other labels
    session.apply_mask(1, big, other)
    assert ((session.labels == liver) == (before == liver)).all()  # every liver voxel kept
    assert (session.labels[1][~(before[1] == liver)] == other).all()  # the rest painted
    stack = np.ones((4, 30, 30), bool)
    session.apply_stack_mask(Plane(), 0, stack, other)  # a propagation result
    assert ((session.labels == liver) == (before == liver)).all()


def test_brush_eraser_clear_and_fill_keep_it() -> None:
    session, liver, other = _session()
    before = session.labels.copy()
    session.set_active_label(other)
    session.begin_stroke(1, erase=True)
    session.stroke_to(np.array([[10.0, 10.0]]), 8)
    session.end_stroke()
    session.begin_stroke(1)
    session.stroke_to(np.array([[25.0, 25.0]]), 3)  # outside the liver: painted
    session.end_stroke()
    assert session.clear_slice(1)  # "every label" clears the tumour and keeps the locked liver
    assert ((session.labels == liver) == (before == liver)).all()
    with pytest.raises(LabelLockedError, match="liver is locked"):
        session.begin_stroke(1, label=liver)
    with pytest.raises(LabelLockedError):
        session.fill_holes(1, label=liver)
    with pytest.raises(LabelLockedError):
        session.clear_label(liver)
    with pytest.raises(LabelLockedError):
        session.delete_label(liver)
    with pytest.raises(LabelLockedError):
        session.apply_mask(1, np.ones((30, 30), bool), liver)
    session.set_label_locked(liver, False)
    assert session.clear_label(liver) and not (session.labels == liver).any()  # unlocked: editable again


def test_the_lock_is_saved_with_the_label_names() -> None:
    session, liver, _ = _session()
    table = LabelTable.from_json(session.table.to_json())
    assert table.get(liver).locked and not table.get(liver + 1).locked
    old = '{"format": "medsam-desktop-labels", "version": 1, "labels": [{"id": 1, "name": "a", "color": [1, 2, 3]}]}'
    assert not LabelTable.from_json(old).get(1).locked  # sidecars of before: unlocked
