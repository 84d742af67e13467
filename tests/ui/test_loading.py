"""Opening images in the background: the GUI keeps answering, the newest request wins, failures keep the session."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QTimer

from medsam_desktop.io import MedSAMIOError, Volume
from medsam_desktop.ui.loader import default_reader


class SlowReader:
    """Returns a synthetic volume per path after ``delay`` s; paths named ``bad*`` fail."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.threads: set[bool] = set()

    def __call__(self, path: Path, uid: str | None) -> Volume:
        self.threads.add(threading.current_thread() is threading.main_thread())
        time.sleep(self.delay)
        if path.name.startswith("bad"):
            raise MedSAMIOError("the file is damaged", path=path)
        depth = 3 if "small" in path.name else 5
        return Volume(np.full((depth, 32, 40), 7, np.int16), modality="CT", source_path=path)


def _window(make_window, reader):
    window = make_window()
    window.loader.reader = reader
    return window


class GatedReader(SlowReader):
    """Reads only once the GUI thread lets it (``release``), after the read has started (``started``)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.started, self.release = threading.Event(), threading.Event()
        self.released: list[bool] = []

    def __call__(self, path: Path, uid: str | None) -> Volume:
        self.started.set()
        self.released.append(self.release.wait(30))
        return super().__call__(path, uid)


def test_slow_reader_keeps_the_event_loop_answering(qtbot, make_window, tmp_path) -> None:
    """A read in progress never holds the event loop: it ends only when a GUI timer, firing after the read
    started, lets it (read on the GUI thread or blocking it, it would never be let go)."""
    reader = GatedReader()
    window = _window(make_window, reader)
    timer = QTimer()
    timer.timeout.connect(lambda: reader.started.is_set() and reader.release.set())
    timer.start(10)
    with qtbot.waitSignal(window.loader.loaded, timeout=40000):
        assert window.open_path(tmp_path / "big.nii.gz")
        assert window.load_progress.isVisible()
    timer.stop()
    assert reader.released == [True]  # the running event loop let the read finish
    assert reader.threads == {False}  # reading never runs on the GUI thread
    assert window.session is not None and window.session.shape == (5, 32, 40)
    assert not window.load_progress.isVisible()


def test_newest_request_wins(qtbot, make_window, tmp_path) -> None:
    window = _window(make_window, SlowReader(0.3))
    window.open_path(tmp_path / "first.nii.gz")
    window.open_path(tmp_path / "small.nii.gz")
    with qtbot.waitSignal(window.loader.loaded, timeout=5000):
        pass
    # both reading threads have ended; a job leaves _jobs only after its (superseded) result was handled
    qtbot.waitUntil(lambda: not window.loader._jobs, timeout=5000)
    assert window.session.volume.source_path.name == "small.nii.gz"


def test_failure_is_one_line_and_keeps_the_session(qtbot, make_window, tmp_path, errors) -> None:
    window = _window(make_window, SlowReader(0.05))
    assert window.open_path_and_wait(tmp_path / "good.nii.gz")
    session = window.session
    session.apply_mask(1, np.ones((32, 40), bool))
    session.mark_saved()
    assert not window.open_path_and_wait(tmp_path / "bad.nii.gz")
    assert len(errors) == 1 and "damaged" in errors[0] and "\n" not in errors[0]
    assert window.session is session and session.labels[1].all()


def test_dicom_folder_with_two_series_asks_in_the_window(qtbot, make_window, raw_dir, tmp_path, monkeypatch) -> None:
    import shutil

    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(raw_dir / name, tmp_path / name)
    window = _window(make_window, default_reader)
    offered: list[int] = []

    def ask(series):
        offered.append(len(series))
        return next(s for s in series if s.modality == "MR")

    monkeypatch.setattr(window.file_actions, "ask_series", ask)
    assert window.open_path_and_wait(tmp_path)
    assert offered == [2] and window.session.volume.modality == "MR"
