"""Where file dialogs start and how recent files are kept (Qt-free; the window stores the values in QSettings).

* Recent files are kept by their resolved path (symlinks and ``..`` followed), newest first, each file once,
  however it was reached.
* Dialogs start in the last folder the user chose in a dialog, never in a folder the app opened by itself (a
  sample shipped inside an installed package, e.g. pydicom's test files in the virtual environment).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path


def resolved(path: str | os.PathLike[str]) -> str:
    """``path`` absolute with symlinks followed (a missing path is resolved as far as it exists)."""
    return str(Path(path).expanduser().resolve())


def add_recent(path: str | os.PathLike[str], recent: Iterable[str], limit: int) -> list[str]:
    """``recent`` with ``path`` first, every entry resolved and listed once, at most ``limit`` entries."""
    out: list[str] = []
    for p in (path, *recent):
        r = resolved(p)
        if r not in out:
            out.append(r)
    return out[:limit]


def dedupe_recent(recent: Iterable[str]) -> list[str]:
    """``recent`` resolved, each file once (entries stored by older versions may name one file twice)."""
    out: list[str] = []
    for p in recent:
        r = resolved(p)
        if r not in out:
            out.append(r)
    return out


def inside_installation(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies inside the Python installation or virtual environment (e.g. a package's sample)."""
    p = Path(resolved(path))
    roots = {Path(resolved(r)) for r in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return any(p == r or r in p.parents for r in roots)


def start_folder(last: str | None, fallback: str | os.PathLike[str]) -> str:
    """The folder a dialog starts in: ``last`` (the folder chosen last) when it still exists, else ``fallback``."""
    if last and Path(last).is_dir() and not inside_installation(last):
        return str(last)
    return str(fallback)


def save_start(default: Path, last: str | None, home: str | os.PathLike[str]) -> Path:
    """Where the save dialog proposes ``default`` (``<image>_seg.nii.gz`` next to the image): there, unless the
    image lies inside the installation (a sample): then the same name in the last chosen folder (else home)."""
    if not inside_installation(default.parent):
        return default
    return Path(start_folder(last, home)) / default.name
