"""Crash-safety snapshots without Qt: atomic round trip, orphan detection (a reused PID, a lock still held, a
process killed with SIGKILL), coalescing writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.core.document import autosave
from medsam_desktop.core.document.annotation import AnnotationSession
from medsam_desktop.io import Volume


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.npy"
    path.write_bytes(b"x" * 10)
    return Volume(np.zeros((4, 20, 30), np.int16), modality="CT", source_path=path)


def _edited(volume: Volume) -> AnnotationSession:
    s = AnnotationSession(volume)
    s.add_label("liver")
    mask = np.zeros((20, 30), bool)
    mask[2:9, 3:12] = True
    s.apply_mask(1, mask)
    s.add_label("spleen", (1, 2, 3))
    s.apply_mask(2, mask)
    s.add_label("empty")
    s.set_label_display(2, visible=False, opacity=0.8)
    s.set_active_label(2)
    return s


def test_round_trip_restores_labels_table_and_active(tmp_path, image, monkeypatch) -> None:
    monkeypatch.setenv(autosave.ENV_DATA_DIR, str(tmp_path / "data"))
    assert autosave.autosave_root() == tmp_path / "data" / "autosave"
    s = _edited(image)
    path = tmp_path / "snap" / "session.npz"
    autosave.write_snapshot(autosave.Snapshot.of(s), path)
    assert [p.name for p in path.parent.iterdir()] == ["session.npz"]  # no temporary file left behind
    snap = autosave.read_snapshot(path)
    assert snap.source == str(image.source_path) and autosave.same_image(snap.fingerprint, image)
    fresh = AnnotationSession(image)
    from medsam_desktop.core.document.annotation import LabelTable

    fresh.restore_state(snap.labels, LabelTable.from_json(snap.table_json), snap.active_label)
    np.testing.assert_array_equal(fresh.labels, s.labels)
    assert fresh.table.state() == s.table.state() and fresh.active_label == 2 and fresh.dirty
    assert fresh.undo() and not fresh.labels.any()
    image.source_path.write_bytes(b"changed, longer")  # the image changed: no longer the same
    assert not autosave.same_image(snap.fingerprint, image)


def test_orphans_are_snapshots_of_dead_processes(tmp_path, image) -> None:
    root = tmp_path / "autosave"
    mine = autosave.Autosaver(root)
    mine.save(autosave.Snapshot.of(_edited(image)))
    assert mine.wait() and mine.writes == 1
    assert autosave.find_orphans(root) == []  # this process is alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (root / "other").mkdir()
    (root / "other" / "lock.json").write_text(f'{{"pid": {pid}}}')
    os.link(mine.path, root / "other" / "session.npz")
    assert autosave.find_orphans(root) == [root / "other" / "session.npz"]
    autosave.discard(root / "other" / "session.npz")
    assert not (root / "other").exists()
    mine.close()  # a clean shutdown removes the folder
    assert not mine.folder.exists()


def test_writer_coalesces_and_clears(tmp_path, image, monkeypatch) -> None:
    written: list[int] = []
    real = autosave.write_snapshot

    release = threading.Event()  # the first write holds the writer until all five snapshots are queued

    def held_write(snap, path):
        assert release.wait(10), "the test never released the writer"
        written.append(int(snap.labels.sum()))
        real(snap, path)

    monkeypatch.setattr(autosave, "write_snapshot", held_write)
    saver = autosave.Autosaver(tmp_path)
    s = _edited(image)
    for i in range(5):
        snap = autosave.Snapshot.of(s)
        snap.labels[0, 0, 0] = i
        saver.save(snap)
    assert saver.busy
    release.set()
    assert saver.wait()
    assert len(written) <= 2 and written[-1] == int(s.labels.sum()) + 4  # only the newest pending one is kept
    saver.clear()
    assert saver.wait() and not saver.path.exists()
    saver.close()


# --- orphans whose PID was reused, and locks held by live processes ----------------------------------------
def _snapshot(tmp_path) -> autosave.Snapshot:
    src = tmp_path / "img.npy"
    src.write_bytes(b"x" * 10)
    session = AnnotationSession(Volume(np.zeros((2, 8, 8), np.int16), modality="CT", source_path=src))
    session.add_label("liver")
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    session.apply_mask(1, mask)
    return autosave.Snapshot.of(session)


def test_crashed_run_with_our_pid_is_an_orphan(tmp_path) -> None:
    """Containers and sandboxes (Docker, Flatpak) start the app with the same PID every time: the folder of the
    run that crashed carries our PID, yet it is not ours and must be offered for restore."""
    root = tmp_path / "autosave"
    crashed = root / f"{os.getpid()}-0123456789ab"
    crashed.mkdir(parents=True)
    (crashed / autosave.LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "started": 0.0}))
    autosave.write_snapshot(_snapshot(tmp_path), crashed / autosave.SNAPSHOT_NAME)
    mine = autosave.Autosaver(root)
    mine.save(_snapshot(tmp_path))
    assert mine.wait() and mine.writes == 1
    assert autosave.find_orphans(root) == [crashed / autosave.SNAPSHOT_NAME]  # never our own live folder
    mine.close()
    assert not mine.folder.exists() and crashed.exists()


def test_pid_reused_by_another_program_does_not_hide_the_orphan(tmp_path) -> None:
    """After a crash (or a reboot) the dead app's PID may belong to another running program: the folder is still
    an orphan, because nobody holds its alive.lock."""
    root = tmp_path / "autosave"
    crashed = root / "4242-0123456789ab"
    crashed.mkdir(parents=True)
    (crashed / autosave.ALIVE_NAME).write_bytes(b"")
    other = os.getppid()  # a live process that is not this one
    assert autosave.pid_alive(other) and other != os.getpid()
    (crashed / autosave.LOCK_NAME).write_text(json.dumps({"pid": other, "started": 0.0, "alive_lock": True}))
    autosave.write_snapshot(_snapshot(tmp_path), crashed / autosave.SNAPSHOT_NAME)
    assert autosave.find_orphans(root) == [crashed / autosave.SNAPSHOT_NAME]
    # the same folder written by an app from before alive.lock: the live PID still counts as its owner
    (crashed / autosave.LOCK_NAME).write_text(json.dumps({"pid": other, "started": 0.0}))
    assert autosave.find_orphans(root) == []


def test_running_app_is_no_orphan_until_it_is_killed(tmp_path) -> None:
    """A second app (another process) that holds its lock is left alone; killed with SIGKILL, it leaves an orphan
    (the OS released its lock), whatever becomes of its PID."""
    root = tmp_path / "autosave"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from medsam_desktop.core.document import autosave\n"
        "from medsam_desktop.core.document.annotation import AnnotationSession\n"
        "from medsam_desktop.io import Volume\n"
        "s = AnnotationSession(Volume(np.zeros((2, 8, 8), np.int16), modality='CT'))\n"
        "s.add_label('liver')\n"
        f"a = autosave.Autosaver(Path({str(root)!r}))\n"
        "a.save(autosave.Snapshot.of(s)); a.wait()\n"
        "print(a.folder, flush=True)\n"
        "sys.stdin.read()\n"
    )
    app = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        folder = Path(app.stdout.readline().strip())
        assert (folder / autosave.SNAPSHOT_NAME).is_file()
        assert json.loads((folder / autosave.LOCK_NAME).read_text())["alive_lock"] is True
        assert autosave.find_orphans(root) == []  # alive: its lock is held
    finally:
        app.kill()
        app.wait(10)
    assert autosave.find_orphans(root) == [folder / autosave.SNAPSHOT_NAME]


def test_own_folder_holds_its_lock_until_closed(tmp_path) -> None:
    root = tmp_path / "autosave"
    mine = autosave.Autosaver(root)
    mine.save(_snapshot(tmp_path))
    assert mine.wait()
    assert autosave._alive_lock_held(mine.folder) is True  # another open file cannot take it
    assert autosave.find_orphans(root) == []
    mine.close()
    assert not mine.folder.exists()
