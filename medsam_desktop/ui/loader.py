"""Reading images off the GUI thread: one QThread per request, the newest request wins.

A folder holding several DICOM series is listed in the background; the window then asks which series to open
and posts a second request with the chosen series uid. Results of superseded requests are dropped.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from PyQt6.QtCore import QObject, QThread, pyqtSignal

from ..core.document.files import read_source
from ..io import DicomSeriesInfo, MedSAMIOError, Volume
from .dialogs import unexpected_message

log = logging.getLogger(__name__)

#: ``reader(path, series_uid)`` -> a Volume, or the list of series when a folder holds several and no uid is given
Reader = Callable[[Path, str | None], "Volume | list[DicomSeriesInfo]"]


default_reader: Reader = read_source


class _Job(QThread):
    done = pyqtSignal(int, object)  # request id, Volume | list[DicomSeriesInfo] | str (one-line error)

    def __init__(self, req_id: int, path: Path, uid: str | None, reader: Reader, parent: QObject) -> None:
        super().__init__(parent)
        self.req_id, self.path, self.uid, self.reader = req_id, path, uid, reader

    def run(self) -> None:
        try:
            result: object = self.reader(self.path, self.uid)
        except MedSAMIOError as exc:
            result = str(exc)
        except Exception as exc:  # never a traceback in front of the user (MemoryError included)
            log.exception("unexpected error opening %s", self.path)
            result = unexpected_message("open", self.path, exc)
        self.done.emit(self.req_id, result)


#: reading threads still running after their loader shut down (see :meth:`ImageLoader.wait`)
_DETACHED: set[_Job] = set()


def _release_detached() -> None:
    for job in [j for j in _DETACHED if j.isFinished()]:
        _DETACHED.discard(job)
        job.deleteLater()


class ImageLoader(QObject):
    """``load(path)`` returns a request id; exactly one of the signals follows for the newest request."""

    loaded = pyqtSignal(int, object, object)  # id, path, Volume
    choose_series = pyqtSignal(int, object, object)  # id, path, list[DicomSeriesInfo]
    failed = pyqtSignal(int, object, str)  # id, path, one-line message
    busy_changed = pyqtSignal(bool)

    def __init__(self, reader: Reader | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.reader: Reader = reader or default_reader
        self._ids = itertools.count(1)
        self.latest = 0
        self._jobs: set[_Job] = set()

    @property
    def busy(self) -> bool:
        return any(job.req_id == self.latest for job in self._jobs)

    def load(self, path: str | os.PathLike[str], uid: str | None = None) -> int:
        req_id = next(self._ids)
        self.latest = req_id
        job = _Job(req_id, Path(path), uid, self.reader, self)
        job.done.connect(self._on_done)
        job.finished.connect(self._on_job_finished)  # a bound slot: disconnected when the loader is destroyed
        self._jobs.add(job)
        job.start()
        self.busy_changed.emit(True)
        return req_id

    def cancel(self) -> None:
        """Forget the pending request (its thread finishes in the background and its result is dropped)."""
        self.latest = next(self._ids)
        self.busy_changed.emit(False)

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Block until every reading thread has ended (shutdown); True when all ended in time.

        A thread still reading after ``timeout_ms`` is detached and kept alive until it ends, so destroying the
        loader (or the window) never destroys a running QThread.
        """
        ok = True
        for job in list(self._jobs):
            self._jobs.discard(job)
            job.done.disconnect()
            job.finished.disconnect()
            if not job.wait(timeout_ms):
                ok = False
                log.warning("still reading %s after %d ms; leaving it to finish in the background", job.path,
                            timeout_ms)  # fmt: skip
                job.setParent(None)
                _DETACHED.add(job)
                job.finished.connect(_release_detached)
                if job.isFinished():  # it ended in between: nothing will emit finished again
                    _release_detached()
        return ok

    def _on_job_finished(self) -> None:
        job = self.sender()
        if isinstance(job, _Job):
            self._jobs.discard(job)
            job.deleteLater()

    def _on_done(self, req_id: int, result: object) -> None:
        job = self.sender()
        path = job.path if isinstance(job, _Job) else Path()
        if req_id != self.latest:
            log.debug("dropping superseded load %d (%s)", req_id, path)
            return
        self.busy_changed.emit(False)
        if isinstance(result, Volume):
            self.loaded.emit(req_id, path, result)
        elif isinstance(result, list):
            self.choose_series.emit(req_id, path, result)
        else:
            self.failed.emit(req_id, path, str(result))
