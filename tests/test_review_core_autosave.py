"""Review: an autosave left by a crashed run is offered even when the new run got the same PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from medsam_desktop.core.document import autosave
from medsam_desktop.core.document.annotation import AnnotationSession
from medsam_desktop.io import Volume


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
