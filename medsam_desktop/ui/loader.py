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

from ..io import DicomSeriesInfo, MedSAMIOError, Volume
from .files import read_source

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
        except Exception as exc:  # never a traceback in front of the user
            log.exception("unexpected error opening %s", self.path)
            result = f"Cannot open '{self.path.name}': {' '.join(str(exc).split()) or type(exc).__name__}"
        self.done.emit(self.req_id, result)


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
        job.finished.connect(lambda j=job: self._forget(j))
        self._jobs.add(job)
        job.start()
        self.busy_changed.emit(True)
        return req_id

    def cancel(self) -> None:
        """Forget the pending request (its thread finishes in the background and its result is dropped)."""
        self.latest = next(self._ids)
        self.busy_changed.emit(False)

    def wait(self, timeout_ms: int = 10000) -> None:
        """Block until every reading thread has ended (shutdown)."""
        for job in list(self._jobs):
            job.wait(timeout_ms)

    def _forget(self, job: _Job) -> None:
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
