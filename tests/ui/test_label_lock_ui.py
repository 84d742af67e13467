"""The labels panel's Lock: a box, the brush and the edit actions leave a locked label alone and say why."""

from __future__ import annotations

import numpy as np
from window_helpers import drain_worker, open_synthetic, status


def test_a_box_into_a_locked_label_segments_nothing_and_says_why(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    label = session.ensure_active_label()
    panel = window.labels_panel
    qtbot.waitUntil(lambda: panel.selected_id() == label, timeout=3000)
    panel.lock_button.click()
    assert session.table.get(label).locked and not panel.delete_button.isEnabled()
    window.view.box_drawn.emit(4, np.array([10.0, 10.0, 40.0, 40.0]))
    drain_worker(qtbot, window.worker)
    assert not session.labels.any() and "locked" in status(window) and "\n" not in status(window)
    window.fill_holes()
    window.clear_label()
    assert "locked" in status(window)
    panel.lock_button.click()  # unlocked: segmenting works again
    assert not session.table.get(label).locked and panel.delete_button.isEnabled()
    with qtbot.waitSignal(window.worker.mask_ready, timeout=5000):
        window.view.box_drawn.emit(4, np.array([10.0, 10.0, 40.0, 40.0]))
    qtbot.waitUntil(lambda: bool(session.labels[4].any()), timeout=5000)
    assert excepthook == []
