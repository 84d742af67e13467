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


def test_slow_reader_keeps_the_event_loop_answering(qtbot, make_window, tmp_path) -> None:
    reader = SlowReader(1.0)
    window = _window(make_window, reader)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    with qtbot.waitSignal(window.loader.loaded, timeout=10000):
        assert window.open_path(tmp_path / "big.nii.gz")
        assert window.load_progress.isVisible()
    timer.stop()
    gaps = np.diff(ticks)
    assert len(ticks) > 40 and gaps.max() < 0.2, f"max event-loop gap {gaps.max():.3f} s"
    assert reader.threads == {False}  # reading never runs on the GUI thread
    assert window.session is not None and window.session.shape == (5, 32, 40)
    assert not window.load_progress.isVisible()


def test_newest_request_wins(qtbot, make_window, tmp_path) -> None:
    window = _window(make_window, SlowReader(0.3))
    window.open_path(tmp_path / "first.nii.gz")
    window.open_path(tmp_path / "small.nii.gz")
    with qtbot.waitSignal(window.loader.loaded, timeout=5000):
        pass
    qtbot.wait(500)  # the first request's result would have landed by now
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

    monkeypatch.setattr(window, "_ask_series", ask)
    assert window.open_path_and_wait(tmp_path)
    assert offered == [2] and window.session.volume.modality == "MR"
