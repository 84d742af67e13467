"""A real app process killed with SIGKILL: the next window offers its autosave and restores identical labels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medsam_desktop.ui import dialogs

#: a real app process (the app's own window, autosave and lock, no model) that opens SRC, paints a rectangle on
#: slice Z with a new label "hook" and keeps running: what a user's unsaved edit looks like to a crash
EDITING_APP = """
import sys
import numpy as np
from PyQt6.QtWidgets import QApplication
from medsam_desktop.ui.main_window import MainWindow

def no_model():
    raise RuntimeError("no model in this test")

src, z, x0, y0, x1, y1 = sys.argv[1], *map(int, sys.argv[2:7])
app = QApplication(sys.argv[:1])
window = MainWindow(backend_factory=no_model)
window.show()

def paint():
    mask = np.zeros(window.session.shape[1:], bool)
    mask[y0:y1, x0:x1] = True
    window.session.add_label("hook")
    window.session.apply_mask(z, mask)

window.open_path(src, then=paint)
sys.exit(app.exec())
"""


@pytest.fixture
def editing_app(tmp_path: Path, data_dir: Path):
    """Start :data:`EDITING_APP` on an image with a rectangle ``(z, x0, y0, x1, y1)``; the process is killed at
    the end of the test if it still runs."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(src: Path, z: int, x0: int, y0: int, x1: int, y1: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1", HOME=str(tmp_path / "home"),
                   XDG_CONFIG_HOME=str(tmp_path / "config"), MEDSAM_DESKTOP_DATA=str(data_dir))  # fmt: skip
        args = [sys.executable, "-c", EDITING_APP, str(src), *(str(v) for v in (z, x0, y0, x1, y1))]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_app_offers_restore_with_identical_labels(
    qtbot, make_window, tmp_path, data_dir, monkeypatch, editing_app
) -> None:
    arr = np.random.default_rng(0).integers(-1000, 1000, size=(9, 60, 80)).astype(np.int16)
    src = tmp_path / "case.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(src))
    proc = editing_app(src, 4, 10, 20, 40, 50)
    try:
        qtbot.waitUntil(lambda: bool(list(data_dir.glob("autosave/*/session.npz"))) or proc.poll() is not None,
                        timeout=60000)  # fmt: skip
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""  # autosaved, still running
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    (orphan,) = list(data_dir.glob("autosave/*/lock.json"))  # not a clean shutdown
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "ask_restore", lambda parent, name, when: asked.append(name) or "restore")
    window = make_window()
    with qtbot.waitSignal(window.loader.loaded, timeout=10000):
        assert window.check_autosave()
    assert asked == ["case.nii.gz"]
    expected = np.zeros(arr.shape, np.uint8)
    expected[4, 20:50, 10:40] = 1
    np.testing.assert_array_equal(window.session.labels, expected)
    assert [lb.name for lb in window.session.table] == ["hook"] and window.session.active_label == 1
    assert window.session.dirty and not orphan.parent.exists()  # the orphan is consumed
    assert not window.check_autosave()  # offered once only


def test_window_autosaves_after_edits_and_clears_when_saved(qtbot, make_window, tmp_path) -> None:
    from medsam_desktop.core.document import autosave

    arr = np.zeros((5, 40, 50), np.int16)
    src = tmp_path / "vol.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(src))
    window = make_window()
    assert window.open_path_and_wait(src)
    mask = np.zeros((40, 50), bool)
    mask[5:9, 5:9] = True
    window.session.apply_mask(2, mask)
    path = window.autosaver.path
    qtbot.waitUntil(lambda: path.exists() and autosave.read_snapshot(path).labels.any(), timeout=5000)
    assert window.file_actions.save_labels(tmp_path / "vol_seg.nii.gz")
    qtbot.waitUntil(lambda: not path.exists(), timeout=5000)  # saved work needs no autosave


def test_autosave_after_a_stroke_on_a_big_volume_copies_only_the_stroke() -> None:
    from medsam_desktop.core.document.annotation import AnnotationSession
    from medsam_desktop.core.document.autosave import ShadowLabels, Snapshot
    from medsam_desktop.io import Volume

    session = AnnotationSession(Volume(np.zeros((300, 512, 512), np.int16)))
    shadow = ShadowLabels()
    session.labels_changed.connect(shadow.mark)
    shadow.reset(session.labels)  # a new session: all zeros, nothing to copy
    session.begin_stroke(150)
    session.stroke_to(np.array([[100.0, 100.0], [300.0, 300.0]]), 10)
    session.end_stroke()
    assert shadow.pending == (150, 150)  # the GUI thread copies one slice, not 300
    snap = Snapshot.of(session, shadow.update(session.labels))  # the only part on the GUI thread
    np.testing.assert_array_equal(snap.labels, session.labels)
    assert shadow.pending is None


def _orphan(data_dir, image_path, shape=(3, 10, 12)) -> Path:
    """A snapshot left by a dead process, for ``image_path``."""
    from medsam_desktop.core.document import autosave
    from medsam_desktop.core.document.annotation import AnnotationSession
    from medsam_desktop.io import read_image

    session = AnnotationSession(read_image(image_path))
    session.apply_mask(1, np.ones(shape[1:], bool))
    folder = data_dir / "autosave" / "dead"
    autosave.write_snapshot(autosave.Snapshot.of(session), folder / "session.npz")
    (folder / "lock.json").write_text('{"pid": 0}')
    return folder


@pytest.mark.parametrize("answer", ["discard", "later"])
def test_declined_restore_discards_or_keeps(qtbot, make_window, tmp_path, data_dir, monkeypatch, answer) -> None:
    src = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 10, 12), np.int16)), str(src))
    folder = _orphan(data_dir, src)
    monkeypatch.setattr(dialogs, "ask_restore", lambda parent, name, when: answer)
    window = make_window()
    assert not window.check_autosave() and window.session is None
    assert folder.exists() == (answer == "later")


def test_restore_refuses_a_changed_image(qtbot, make_window, tmp_path, data_dir, monkeypatch, errors) -> None:
    src = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 10, 12), np.int16)), str(src))
    folder = _orphan(data_dir, src)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 10, 12), np.int16)), str(src))  # edited since
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    monkeypatch.setattr(dialogs, "ask_restore", lambda parent, name, when: "restore")
    window = make_window()
    with qtbot.waitSignal(window.loader.loaded, timeout=5000):
        assert window.check_autosave()
    assert len(errors) == 1 and "changed" in errors[0]
    assert not window.session.labels.any() and folder.exists()  # nothing applied, nothing lost
