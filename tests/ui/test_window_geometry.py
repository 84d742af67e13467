"""The window comes back with the size and position it was closed with (kept in the settings store)."""

from __future__ import annotations

from PyQt6.QtCore import QPoint, QSize

from medsam_desktop.ui.main_window import MainWindow


def _window(qtbot, store) -> MainWindow:
    window = MainWindow(backend_factory=lambda: None, store=store, prefetch=0)
    qtbot.addWidget(window)
    return window


def test_size_and_position_are_restored(qtbot, store) -> None:
    first = _window(qtbot, store)
    first.show()
    qtbot.waitExposed(first)
    first.resize(QSize(730, 510))
    first.move(QPoint(40, 55))
    qtbot.waitUntil(lambda: first.size() == QSize(730, 510) and first.pos() == QPoint(40, 55), timeout=5000)
    assert first.close()
    second = _window(qtbot, store)  # constructed, not yet resized by anyone
    assert second.size() == QSize(730, 510)
    second.show()
    qtbot.waitExposed(second)
    assert second.size() == QSize(730, 510) and second.pos() == QPoint(40, 55)
    second.close()


def test_the_first_start_keeps_the_default_size(qtbot, store) -> None:
    window = _window(qtbot, store)
    assert window.size() == QSize(1200, 800)
