"""Review: an autosave left by a crashed run is offered even when the new run got the same PID."""

from __future__ import annotations

import json
import os

import numpy as np

from medsam_desktop.core import autosave
from medsam_desktop.core.annotation import AnnotationSession
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
