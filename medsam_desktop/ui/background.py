"""A generic background task for the GUI: run a plain function on Qt's thread pool and get its result (or a
one-line error) back on the GUI thread. No domain logic here (the model has its own worker, ``worker.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QObject, QRunnable, QThreadPool, pyqtSignal

from ..text import exception_line

log = logging.getLogger(__name__)


class _Relay(QObject):
    done = pyqtSignal(object)
    failed = pyqtSignal(str)


class _Task(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self._fn, self._relay = fn, relay

    def run(self) -> None:
        try:
            result = self._fn()
        except Exception as exc:  # reported as one line; the traceback at debug level
            log.debug("background task failed", exc_info=True)
            self._emit(self._relay.failed, exception_line(exc))
            return
        self._emit(self._relay.done, result)

    @staticmethod
    def _emit(signal: Any, value: Any) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the owner (and its relay) was deleted meanwhile: nobody is waiting
            log.debug("background result dropped: its owner is gone")


def run_in_background(
    fn: Callable[[], Any], on_done: Callable[[Any], None], on_failed: Callable[[str], None], owner: QObject
) -> None:
    """``fn()`` on the global thread pool; ``on_done(result)`` or ``on_failed(message)`` on the GUI thread, unless
    ``owner`` was deleted first (the relay is its child: the result is dropped)."""
    relay = _Relay(owner)
    relay.done.connect(on_done)
    relay.failed.connect(on_failed)
    relay.done.connect(relay.deleteLater)
    relay.failed.connect(relay.deleteLater)
    QThreadPool.globalInstance().start(_Task(fn, relay))
