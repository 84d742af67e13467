"""Crash-safety snapshots without Qt: atomic round trip, orphan detection, coalescing writer."""

from __future__ import annotations

import os
import subprocess
import sys

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

    def slow_write(snap, path):
        import time

        time.sleep(0.2)
        written.append(int(snap.labels.sum()))
        real(snap, path)

    monkeypatch.setattr(autosave, "write_snapshot", slow_write)
    saver = autosave.Autosaver(tmp_path)
    s = _edited(image)
    for i in range(5):
        snap = autosave.Snapshot.of(s)
        snap.labels[0, 0, 0] = i
        saver.save(snap)
    assert saver.busy and saver.wait()
    assert len(written) <= 2 and written[-1] == int(s.labels.sum()) + 4  # only the newest pending one is kept
    saver.clear()
    assert saver.wait() and not saver.path.exists()
    saver.close()
