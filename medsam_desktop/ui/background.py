"""A generic background runner for the GUI: plain functions on Qt's thread pool, results back on the GUI thread as
signals of a runner the caller owns. No domain logic here (the model has its own worker, ``worker.py``).

Results travel as queued signals of the runner, a child of its owner: when the owner is deleted first, Qt drops
the pending results with it, so a late result never reaches a deleted widget. Connect the signals to
``@pyqtSlot`` methods of the owner (not lambdas), which Qt disconnects with the owner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any

from PyQt6.QtCore import QObject, QRunnable, QThreadPool, pyqtSignal

from ..text import exception_line

log = logging.getLogger(__name__)


class BackgroundRunner(QObject):
    """``run(tag, fn)``: ``fn()`` on the global thread pool; ``done((tag, result))`` or ``failed((tag, message))``
    on the GUI thread, the message one line."""

    done = pyqtSignal(object)
    failed = pyqtSignal(object)

    def run(self, tag: Hashable, fn: Callable[[], Any]) -> None:
        QThreadPool.globalInstance().start(_Task(self, tag, fn))


class _Task(QRunnable):
    def __init__(self, runner: BackgroundRunner, tag: Hashable, fn: Callable[[], Any]) -> None:
        super().__init__()
        self._runner, self._tag, self._fn = runner, tag, fn

    def run(self) -> None:
        try:
            signal, value = self._runner.done, self._fn()
        except Exception as exc:  # reported as one line; the traceback at debug level
            log.debug("background task failed", exc_info=True)
            signal, value = self._runner.failed, exception_line(exc)
        try:
            signal.emit((self._tag, value))
        except RuntimeError:  # the runner (and its owner) was deleted meanwhile: nobody is waiting
            log.debug("background result dropped: its owner is gone")
