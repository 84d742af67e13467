"""UI test setup: offscreen Qt, isolated settings, fast and slow fake encoder backends."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import importlib.util
import threading
import time

import numpy as np
import pytest

#: without the app extra (PyQt6, pyqtgraph) or pytest-qt the UI tests are not collected at all
collect_ignore_glob = (
    [] if all(importlib.util.find_spec(m) is not None for m in ("PyQt6", "pyqtgraph", "pytestqt")) else ["test_*.py"]
)


class FakeBackend:
    """Encodes instantly (or after ``delay`` s); a decoded mask is exactly the prompt box (model frame)."""

    name = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.encodes = 0
        self.on_main_thread: set[bool] = set()
        self._lock = threading.Lock()

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.on_main_thread.add(threading.current_thread() is threading.main_thread())
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.encodes += 1
        return np.zeros((images.shape[0], 256, 64, 64), np.float32)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.asarray(boxes).reshape(-1, 4)
        logits = np.full((len(boxes), 256, 256), -10.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            logits[i, int(np.ceil(y0)) : int(np.floor(y1)) + 1, int(np.ceil(x0)) : int(np.floor(x1)) + 1] = 10.0
        return logits, np.ones(len(boxes), np.float32)


@pytest.fixture
def fake() -> type[FakeBackend]:
    """The fake backend class (tests/ has no package, so tests get it through this fixture)."""
    return FakeBackend


@pytest.fixture
def store(tmp_path):
    from PyQt6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    """Error dialogs are recorded instead of shown."""
    from medsam_desktop.ui import dialogs

    seen: list[str] = []
    monkeypatch.setattr(dialogs, "show_error", lambda parent, title, message: seen.append(dialogs.one_line(message)))
    return seen


def _discard_and_stop(window) -> None:
    if window.session is not None:
        window.session.mark_saved()
    window.worker.shutdown()
    window.autosaver.close()


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """Autosaves go to a per-test folder, never to the user's data folder."""
    from medsam_desktop.core.document.autosave import ENV_DATA_DIR

    path = tmp_path / "user-data"
    monkeypatch.setenv(ENV_DATA_DIR, str(path))
    return path


@pytest.fixture
def make_window(qtbot, store, errors, monkeypatch):
    """``make_window(backend)`` -> a shown MainWindow using ``backend``; closed (discarding) at teardown."""
    from medsam_desktop.ui import dialogs
    from medsam_desktop.ui.main_window import MainWindow

    monkeypatch.setattr(dialogs, "ask_save_changes", lambda parent: "discard")

    windows = []

    def make(backend: object = None, prefetch: int = 0, clicks: object = None) -> MainWindow:
        backend = backend or FakeBackend()

        def factory() -> object:
            if isinstance(backend, Exception):
                raise backend
            return backend

        click_factory = None if clicks is None else lambda: clicks
        window = MainWindow(backend_factory=factory, store=store, prefetch=prefetch, click_factory=click_factory)
        qtbot.addWidget(window, before_close_func=_discard_and_stop)
        window.resize(900, 700)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    for w in windows:
        _discard_and_stop(w)


@pytest.fixture
def excepthook(monkeypatch) -> list[BaseException]:
    """Exceptions escaping to Qt (slots, event handlers) are recorded here."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda _t, value, _tb: seen.append(value))
    return seen
