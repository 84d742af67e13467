"""Keys through the window as a user presses them (offscreen, fake backend): Enter while renaming a label commits
the name and segments nothing; the slice keys act on the view whichever widget has the focus, except a text field
being edited (3D Slicer's and ITK-SNAP's convention)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PyQt6.QtCore import QEvent, QObject, Qt
from PyQt6.QtWidgets import QApplication, QLineEdit
from window_helpers import BOX, drain_worker, open_synthetic


@pytest.fixture
def excepthook(monkeypatch) -> list[BaseException]:
    """Exceptions escaping to Qt (slots, event handlers) are recorded here."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda _t, value, _tb: seen.append(value))
    return seen


class _KeyRecorder(QObject):
    """Records the keys pressed on the widget it filters."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[Qt.Key] = []

    def eventFilter(self, _obj, ev) -> bool:  # noqa: N802 - Qt override
        if ev.type() == QEvent.Type.KeyPress:
            self.keys.append(Qt.Key(ev.key()))
        return False


def _start_renaming(qtbot, window) -> QLineEdit:
    """Double-click the active label in the labels list; returns the name editor that opened."""
    panel = window.labels_panel
    qtbot.waitUntil(lambda: panel.list.count() == 1, timeout=5000)
    lst = panel.list
    rect = lst.visualItemRect(lst.item(0))
    qtbot.mouseClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(lst.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.waitUntil(lambda: isinstance(QApplication.focusWidget(), QLineEdit), timeout=5000)
    editor = QApplication.focusWidget()
    assert isinstance(editor, QLineEdit)
    return editor


def test_enter_while_renaming_commits_the_name_and_segments_nothing(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    label = session.ensure_active_label()
    window.view.last_box = (window.view.current, BOX.copy())  # a box on screen, as a sample's suggested box
    window.view.refresh()
    steps = len(session.history)
    editor = _start_renaming(qtbot, window)
    editor.selectAll()
    qtbot.keyClicks(editor, "liver")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: session.table.get(label).name == "liver", timeout=5000)
    drain_worker(qtbot, window.worker)  # a segmentation the key might have started has ended and landed
    assert not session.labels.any()
    assert len(session.history) == steps + 1  # the rename, nothing else
    qtbot.waitUntil(lambda: window.labels_panel.list.item(0).text() == "liver", timeout=5000)
    window.undo()  # takes the rename back, not a mask
    assert session.table.get(label).name != "liver" and not session.labels.any()
    assert excepthook == []


def test_slice_keys_move_the_view_when_the_labels_list_has_the_focus(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    session.ensure_active_label()
    window.new_label()  # two labels, so Up/Down inside the list would change the active one
    panel = window.labels_panel
    qtbot.waitUntil(lambda: panel.list.count() == 2, timeout=5000)
    active = session.active_label
    panel.list.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is panel.list, timeout=5000)
    z = window.view.current
    for key, step in ((Qt.Key.Key_Up, 1), (Qt.Key.Key_PageUp, 1), (Qt.Key.Key_Down, -1), (Qt.Key.Key_PageDown, -1)):
        with qtbot.waitSignal(window.view.slice_changed, timeout=5000):
            qtbot.keyClick(panel.list, key)
        z += step
        assert window.view.current == z
        assert session.active_label == active
    assert excepthook == []


def test_slice_keys_stay_in_a_text_field_being_edited(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    session = open_synthetic(window, tmp_path)
    session.ensure_active_label()
    editor = _start_renaming(qtbot, window)
    z = window.view.current
    seen: list[int] = []
    window.view.slice_changed.connect(seen.append)
    got = _KeyRecorder()
    editor.installEventFilter(got)
    keys = [Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp, Qt.Key.Key_PageDown]
    for key in keys:
        qtbot.keyClick(editor, key)  # delivered (and any shortcut triggered) before keyClick returns
    assert got.keys == keys  # the editor received every key...
    assert seen == [] and window.view.current == z  # ...and none changed the slice
    assert np.array_equal(session.labels, np.zeros_like(session.labels))
    assert excepthook == []
