"""Crash safety without Qt: the labels of the open session are saved in the background, atomically.

Each running app owns a folder ``<data>/autosave/<pid>-<random>/`` holding ``lock.json`` (its PID),
``alive.lock`` (locked by the OS for as long as the app runs: ``flock`` / ``msvcrt.locking``) and
``session.npz`` (the label map, compressed, plus a JSON description: label table, active label, source image
path and fingerprint). A clean shutdown removes the folder; a folder whose ``alive.lock`` nobody holds is an
orphan that the next start offers to restore. The OS drops the lock when its process dies, however it dies,
so a PID reused by another program after a crash (or a reboot) cannot hide the orphan; folders written
before ``alive.lock`` existed fall back to checking their PID. ``<data>`` is
``platformdirs.user_data_dir("MedSAM Desktop")``, or ``$MEDSAM_DESKTOP_DATA``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_write
from ...io import Volume
from ...paths import DATA_DIR_ENV, user_data_dir
from .annotation import AnnotationSession

log = logging.getLogger(__name__)

ENV_DATA_DIR = DATA_DIR_ENV  # re-exported for callers of this module
SNAPSHOT_NAME = "session.npz"
LOCK_NAME = "lock.json"
ALIVE_NAME = "alive.lock"
FORMAT_VERSION = 1

#: autosave folders of this process's :class:`Autosaver` objects: a folder whose lock holds our own PID but is
#: not listed here was left by an earlier run that had the same PID (containers, sandboxes), i.e. an orphan
_OWN_FOLDERS: set[Path] = set()
_OWN_LOCK = threading.Lock()


def data_dir() -> Path:
    """The per-user data folder (:func:`medsam_desktop.paths.user_data_dir`; ``$MEDSAM_DESKTOP_DATA`` overrides)."""
    return user_data_dir()


def autosave_root() -> Path:
    return data_dir() / "autosave"


def fingerprint(volume: Volume) -> dict[str, Any]:
    """What identifies the source image: size and mtime of the file (or folder), array shape and modality."""
    info: dict[str, Any] = {"shape": list(volume.array.shape), "modality": volume.modality}
    src = volume.source_path
    if src is not None and src.exists():
        st = src.stat()
        info["size"] = st.st_size if src.is_file() else None
        info["mtime_ns"] = st.st_mtime_ns
    return info


def same_image(saved: dict[str, Any], volume: Volume) -> bool:
    """True when ``volume`` is the image the snapshot was taken on (shape, modality, file size and mtime)."""
    return saved == fingerprint(volume)


@dataclass
class Snapshot:
    """The state worth restoring after a crash."""

    labels: np.ndarray
    table_json: str
    active_label: int
    source: str
    fingerprint: dict[str, Any]
    saved_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, session: AnnotationSession, labels: np.ndarray | None = None) -> Snapshot:
        """The session's state; ``labels`` is a copy of its label map (default: a fresh full copy)."""
        vol = session.volume
        labels = session.labels.copy() if labels is None else labels
        return cls(labels, session.table.to_json(), session.active_label, str(vol.source_path or ""),
                   fingerprint(vol))  # fmt: skip

    def meta(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "table": json.loads(self.table_json), "active_label": self.active_label,
                "source": self.source, "fingerprint": self.fingerprint, "saved_at": self.saved_at}  # fmt: skip


class ShadowLabels:
    """A copy of the label map refreshed only on the slices marked as changed, so that taking a snapshot after
    a brush stroke copies one slice, not the volume. Update it only while no write of it is in flight."""

    def __init__(self) -> None:
        self._copy: np.ndarray | None = None
        self._range: tuple[int, int] | None = None

    def mark(self, z0: int, z1: int) -> None:
        """Slices ``z0..z1`` (inclusive) changed."""
        lo, hi = (z0, z1) if self._range is None else (min(z0, self._range[0]), max(z1, self._range[1]))
        self._range = (int(lo), int(hi))

    @property
    def pending(self) -> tuple[int, int] | None:
        """The slice range (inclusive) the next :meth:`update` copies, or None when the copy is current."""
        return self._range

    def reset(self, labels: np.ndarray | None = None) -> None:
        """Start over; ``labels`` known to be all zeros (a new session) costs no copy at all."""
        self._range = None
        self._copy = None
        if labels is not None and not labels.any():
            self._copy = np.zeros(labels.shape, labels.dtype)  # calloc: pages are touched only when written

    def update(self, labels: np.ndarray) -> np.ndarray:
        """The up-to-date copy of ``labels`` (a full copy the first time or when shape/dtype changed)."""
        if self._copy is None or self._copy.shape != labels.shape or self._copy.dtype != labels.dtype:
            self._copy = labels.copy()
        elif self._range is not None:
            z0, z1 = self._range
            self._copy[z0 : z1 + 1] = labels[z0 : z1 + 1]
        self._range = None
        return self._copy


def write_snapshot(snapshot: Snapshot, path: Path) -> None:
    """Write atomically (:func:`~medsam_desktop.atomic.atomic_write`): a crash leaves the previous snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, labels=snapshot.labels, meta=np.array(json.dumps(snapshot.meta())))


def read_snapshot(path: Path) -> Snapshot:
    """Read a snapshot written by :func:`write_snapshot` (ValueError/OSError when unreadable)."""
    with np.load(path, allow_pickle=False) as data:
        labels = np.asarray(data["labels"])
        meta = json.loads(str(data["meta"]))
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown autosave version {meta.get('version')}")
    return Snapshot(labels, json.dumps(meta["table"]), int(meta["active_label"]), str(meta["source"]),
                    dict(meta["fingerprint"]), float(meta["saved_at"]))  # fmt: skip


def pid_alive(pid: int) -> bool:
    """Whether a process with this id is running (on this machine)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_info(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / LOCK_NAME).read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _lock_pid(folder: Path) -> int:
    try:
        return int(_lock_info(folder)["pid"])
    except (KeyError, TypeError, ValueError):
        return 0


def _try_lock(fh: Any) -> bool:
    """Take the exclusive OS lock of the open file ``fh`` without waiting: True when taken, False when another
    open file holds it; OSError when this file system cannot lock."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        fh.seek(0)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except PermissionError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fh: Any) -> None:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _alive_lock_held(folder: Path) -> bool | None:
    """Whether some process holds ``folder``'s ``alive.lock``; None when that cannot be told (no such file, or
    no locking on this file system)."""
    try:
        with (folder / ALIVE_NAME).open("r+b") as fh:
            if not _try_lock(fh):
                return True
            _unlock(fh)
            return False
    except OSError:
        return None


def _is_live_owner(folder: Path) -> bool:
    """Whether the app that wrote ``folder`` is still running: it is one of this process's :class:`Autosaver`
    objects, or another process holds its ``alive.lock``; for folders without one, its PID is alive (and not
    ours: our PID on a folder we do not own was left by an earlier run with the same PID)."""
    with _OWN_LOCK:
        if folder.resolve() in _OWN_FOLDERS:
            return True
    if _lock_info(folder).get("alive_lock") and (held := _alive_lock_held(folder)) is not None:
        return held
    pid = _lock_pid(folder)
    return pid != os.getpid() and pid_alive(pid)


def find_orphans(root: Path | None = None) -> list[Path]:
    """Snapshots left by apps that did not shut down cleanly (their PID is gone), newest first."""
    root = root or autosave_root()
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        snap = folder / SNAPSHOT_NAME
        if folder.is_dir() and snap.is_file() and not _is_live_owner(folder):
            found.append(snap)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def discard(snapshot_path: Path) -> None:
    """Remove an orphan's folder (after it was restored or declined)."""
    shutil.rmtree(snapshot_path.parent, ignore_errors=True)


class Autosaver:
    """Writes snapshots on one background thread: at most one write in flight, only the newest pending one kept.

    ``save(snapshot)`` and ``clear()`` return at once; ``close()`` waits and removes this app's folder
    (a clean shutdown).
    """

    _CLEAR = object()

    def __init__(self, root: Path | None = None) -> None:
        root = root or autosave_root()
        self.folder = root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.path = self.folder / SNAPSHOT_NAME
        with _OWN_LOCK:
            _OWN_FOLDERS.add(self.folder.resolve())
        self._cond = threading.Condition()
        self._pending: object = None
        self._writing = False
        self._closed = False
        self.writes = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._alive: Any = None  # the open alive.lock this app holds locked while it runs

    @property
    def busy(self) -> bool:
        """A write is in flight or waiting."""
        with self._cond:
            return self._writing or self._pending is not None

    def save(self, snapshot: Snapshot) -> None:
        self._post(snapshot)

    def clear(self) -> None:
        """Nothing to restore any more (labels saved, or no image): remove the snapshot."""
        self._post(self._CLEAR)

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until nothing is pending or being written; True when idle in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._writing or self._pending is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Clean shutdown: finish, stop the thread and remove this app's folder."""
        self.wait()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        if self._alive is not None:  # release before removing: Windows cannot delete an open file
            with contextlib.suppress(OSError):
                _unlock(self._alive)
            self._alive.close()
            self._alive = None
        shutil.rmtree(self.folder, ignore_errors=True)
        with _OWN_LOCK:
            _OWN_FOLDERS.discard(self.folder.resolve())

    def _post(self, item: object) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending = item
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="medsam-autosave", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _ensure_lock(self) -> None:
        """Before the first snapshot: take ``alive.lock`` (held until :meth:`close` or the process ends), then
        write ``lock.json``, so a folder with a snapshot is never seen without its holder."""
        lock = self.folder / LOCK_NAME
        if lock.exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"pid": os.getpid(), "started": time.time()}
        try:
            fh = (self.folder / ALIVE_NAME).open("a+b")
            if _try_lock(fh):
                self._alive, info["alive_lock"] = fh, True
            else:  # cannot happen for a fresh folder; keep the PID check then
                fh.close()
        except OSError as exc:  # a file system without locks: the PID check remains
            log.info("autosave: no file lock in %s (%s); orphans are found by PID", self.folder, exc)
        lock.write_text(json.dumps(info), encoding="utf-8")

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                item, self._pending = self._pending, None
                self._writing = True
            try:
                if item is self._CLEAR:
                    self.path.unlink(missing_ok=True)
                else:
                    assert isinstance(item, Snapshot)
                    self._ensure_lock()
                    write_snapshot(item, self.path)
                    self.writes += 1
                self.last_error = None
            except Exception as exc:  # a failed autosave must never take the app down
                log.warning("autosave failed: %s", exc)
                self.last_error = str(exc)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
