"""Keep what native libraries print to the process's stderr (OpenJPEG inside GDCM, ITK, HDF5) out of the user's
terminal: while a reader runs, file descriptor 2 goes to a temporary file; afterwards its text is logged at debug
level, so the one-line error the reader raises is all a user sees.

Python warnings and logging are not involved (they are handled where they arise); this is for C and C++ code that
writes to the descriptor directly. Captures do not nest or overlap: one lock serialises them (the app reads one
image at a time). Where the descriptor cannot be redirected (no fd 2, e.g. a windowed executable), nothing is
captured and reading goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

_LOCK = threading.RLock()
_depth = 0  # captures entered by the thread holding the lock (an inner one leaves the outer in charge)
MAX_LOGGED = 4000  # characters of captured text kept in the debug log


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


@contextlib.contextmanager
def native_stderr_to_log(what: str) -> Iterator[None]:
    """Send native writes to fd 2 during the block to the debug log (as ``what: ...``)."""
    global _depth
    with _LOCK:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        _depth = 1
        with tempfile.TemporaryFile() as sink:
            _flush_python_streams()
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                _flush_python_streams()
                os.dup2(saved, 2)
                os.close(saved)
                _depth = 0
                sink.seek(0)
                text = sink.read(MAX_LOGGED + 1).decode("utf-8", "replace").strip()
                if text:
                    log.debug("%s: native output: %s", what, text[:MAX_LOGGED])
