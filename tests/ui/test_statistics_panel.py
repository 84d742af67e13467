"""The statistics panel: computed in the background after edits (the window keeps answering), the same numbers as
``core.document.statistics``, emptied by undo, exported as CSV."""

from __future__ import annotations

import csv

import numpy as np
from window_helpers import BOX, open_synthetic

from medsam_desktop.core.document.statistics import label_statistics


def test_statistics_follow_the_edits_and_export(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    panel = window.statistics_panel
    assert panel.isVisible()
    qtbot.waitUntil(lambda: panel.state.text() == "No labels yet", timeout=5000)
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(4, BOX.copy())
    qtbot.waitUntil(lambda: len(panel.rows) == 1, timeout=5000)
    expected = label_statistics(session.labels, session.volume.spacing, session.volume.array,
                                {lb.id: lb.name for lb in session.table})  # fmt: skip
    assert panel.rows == expected
    assert panel.units == "HU" and "HU" in panel.state.text()
    assert panel.table.rowCount() == 1 and panel.table.item(0, 1).text() == str(expected[0].voxels)
    assert panel.table.item(0, 7).text() == "4–4"
    out = tmp_path / "stats.csv"
    panel.export(out)
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert int(rows[0]["voxels"]) == expected[0].voxels
    assert np.isclose(float(rows[0]["volume_ml"]), expected[0].volume_ml)
    window.undo()
    qtbot.waitUntil(lambda: panel.rows == [], timeout=5000)
    assert panel.table.rowCount() == 0
    assert excepthook == []


def test_a_hidden_panel_computes_nothing_until_shown(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    panel = window.statistics_panel
    dock = panel.parentWidget()
    dock.hide()
    session = open_synthetic(window, tmp_path)
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(4, BOX.copy())
    assert panel.rows == [] and panel.state.text() == "" and panel._pending
    dock.show()
    qtbot.waitUntil(lambda: len(panel.rows) == 1, timeout=5000)
    assert panel.rows[0].voxels == int((session.labels > 0).sum())


def test_a_result_computed_across_an_edit_is_dropped_and_the_labels_are_never_copied(
    qtbot, make_window, tmp_path, monkeypatch
) -> None:
    import threading

    from medsam_desktop.ui import statistics_panel

    window = make_window()
    session = open_synthetic(window, tmp_path)
    panel = window.statistics_panel
    qtbot.waitUntil(lambda: panel.state.text() == "No labels yet", timeout=5000)
    entered, gate, seen = threading.Event(), threading.Event(), []

    def gated(labels, *args):  # the numbers of the labels as they were, returned only once the test allows it
        seen.append(labels)
        rows = label_statistics(labels, *args)
        entered.set()
        assert gate.wait(10)
        return rows

    monkeypatch.setattr(statistics_panel, "label_statistics", gated)
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(4, BOX.copy())
    qtbot.waitUntil(entered.is_set, timeout=5000)  # computing the box's label
    assert seen[0] is session.labels  # read in place, not a copy on the GUI thread
    window.undo()  # an edit while it computes
    with qtbot.waitSignal(panel._runner.done, timeout=5000):
        gate.set()
    assert panel.rows == [] and panel.table.rowCount() == 0  # the stale row (one label) is not shown
    qtbot.waitUntil(lambda: len(seen) == 2 and panel.state.text() == "No labels yet", timeout=5000)
    assert panel.rows == []
