"""Crash-safe file replacement: write a temp file next to the target, fsync, then ``os.replace``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "move_aside", "replace_folder"]

log = logging.getLogger(__name__)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Persist the rename on POSIX (no-op where directories cannot be opened, e.g. Windows)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it atomically replaces ``path``.

    The temporary name ends with the target's name (or with ``suffix`` when given, e.g. a lower-case
    ``.nii.gz`` for ``SEG.NII.GZ``, which ITK does not recognise), so extension-driven writers (SimpleITK's
    ``.nii.gz``, PIL's ``.png``) pick the right format. If the body raises, the temporary file is
    deleted, the exception propagates and any previous file at ``path`` is left untouched.
    Raises ``FileNotFoundError`` when the folder does not exist.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    tail = f".tmp-{target.name}" if suffix is None else f".tmp{suffix}"
    fd, tmp_name = tempfile.mkstemp(prefix=".", suffix=tail, dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer did not create {tmp}")
        _fsync_file(tmp)
        # mkstemp creates 0600 files: keep an existing file's mode, otherwise use rw-r--r--.
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:
            mode = 0o644
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)
    log.debug("atomically wrote %s", target)


def move_aside(path: str | os.PathLike[str]) -> None:
    """Take ``path`` (a file or folder) out of the way in one rename, then delete it: nobody ever sees it half
    deleted. A path that is gone or was replaced meanwhile (another process) is left to that process."""
    path = Path(path)
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    with contextlib.suppress(OSError):
        os.replace(path, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)


def replace_folder(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Put a copy of the folder ``source`` at ``target``, replacing what was there in one rename.

    The copy is made (and fsynced) under a temporary name beside ``target``; the old folder is renamed out of the
    way, the new one into place, then the old one deleted: a crash leaves the old or the new folder at
    ``target`` (at worst none, with the new one complete beside it), never a half-written one.
    """
    source, target = Path(source), Path(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    new = staging / "new"
    shutil.copytree(source, new)
    for child in new.iterdir():
        _fsync_file(child)
    old = staging / "old"
    with contextlib.suppress(FileNotFoundError):
        os.replace(target, old)
    try:
        os.replace(new, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(target.parent)
    log.debug("replaced folder %s", target)
