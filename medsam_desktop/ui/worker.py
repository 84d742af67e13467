"""Inference off the GUI thread: a QObject living in a QThread runs the calls of the Qt-free
:class:`~medsam_desktop.core.inference.segmentation_service.SegmentationService` (encode, segment, propagate,
prefetch) and emits their results as signals; :class:`SegmentationWorker` is the GUI-side handle.

Requests carry increasing ids (:class:`RequestClock`): an interactive request that is no longer the newest when
the worker reaches it is skipped, and results that are not the newest are dropped before they reach the window.
When the worker is idle it prefetches the service's plan one slice at a time. The model is loaded lazily, on the
worker thread, at the first request. Indices, boxes and masks are in the plane frame of each request's orientation
(see the service).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Hashable

import numpy as np
from PyQt6.QtCore import QObject, QThread, QTimer, pyqtSignal, pyqtSlot

from ..core.backends import DEFAULT_PRECISION, DEFAULT_RUNTIME, InferenceBackend
from ..core.inference.cache import EmbeddingCache
from ..core.inference.clicks import ClickPoint
from ..core.inference.predictor import Predictor
from ..core.inference.segmentation_service import (
    BackendFactory,
    ClickFactory,
    ModelUnavailableError,
    RequestClock,
    SegmentationService,
    belongs_to_volume,
    one_line,
)
from ..io import Volume

log = logging.getLogger(__name__)


def default_backend_factory(
    model: str = "auto", threads: int = 0, runtime: str = DEFAULT_RUNTIME, precision: str = DEFAULT_PRECISION
) -> BackendFactory:
    """A factory loading the named model (``auto``: bundled student, else the installed teacher) on ``runtime``
    at ``precision`` (see ``core.backends.load_backend``; an unusable runtime falls back and the backend's
    ``fallback_reason`` says why)."""

    def factory() -> InferenceBackend:
        from ..core.backends import load_backend
        from ..model_files import default_model_name

        name = default_model_name() if model == "auto" else model
        return load_backend(name, threads=threads or None, precision=precision, runtime=runtime)

    return factory


def default_click_factory(model: str = "auto", threads: int = 0, runtime: str = DEFAULT_RUNTIME) -> ClickFactory:
    """A factory loading the click path of the named model's weights (``core.backends.clicks``), called at the
    first click; ClicksUnavailable (one line) when those weights have none."""

    def factory():
        from ..core.backends.clicks import load_click_backend
        from ..model_files import default_model_name, weights_for

        name = default_model_name() if model == "auto" else model
        return load_click_backend(weights_for(name), threads or None, runtime)

    return factory


class _Worker(QObject):
    """Lives in the worker thread; slots are invoked through queued signals from :class:`SegmentationWorker` and
    call the Qt-free :class:`SegmentationService`; this class only skips stale requests and emits results."""

    # indices and masks are in the plane frame of the request's orientation (axial: z and (H, W))
    mask_ready = pyqtSignal(int, int, object)  # id, index, mask (rows, cols) bool
    refined = pyqtSignal(int, int, object)  # id, index, mask (rows, cols) bool after the request's clicks
    encoded = pyqtSignal(int, int)  # id, index
    progress = pyqtSignal(int, int, int)  # id, done, total
    slice_done = pyqtSignal(int, int, object)  # id, index, mask (rows, cols) bool
    propagation_finished = pyqtSignal(int, int, object, bool)  # id, i0, mask (K, rows, cols) bool, cancelled
    model_loaded = pyqtSignal(str)
    model_failed = pyqtSignal(str)  # one-line reason (also when no request was waiting for the model)
    model_warning = pyqtSignal(str)  # the model loaded, but not as asked (e.g. runtime missing: torch fallback)
    failed = pyqtSignal(int, str)  # id, one-line message

    def __init__(self, service: SegmentationService, clock: RequestClock) -> None:
        super().__init__()
        self._service = service
        self._clock = clock

    def _start(self) -> None:
        self._clock.add_pending(-1)

    def _predictor_or_fail(self, req_id: int) -> Predictor | None:
        """The model (loaded at the first request); on failure one ``model_failed`` and, for a request that needs
        it (``req_id >= 0``), one ``failed``."""
        try:
            predictor, loaded_now = self._service.load_model()
        except ModelUnavailableError as exc:
            if exc.__cause__ is not None:  # just failed: say it once
                self.model_failed.emit(str(exc))
            if req_id >= 0:
                self.failed.emit(req_id, f"No segmentation model: {exc}")
            return None
        if loaded_now:
            backend = predictor.backend
            self.model_loaded.emit(str(getattr(backend, "name", "model")))
            if getattr(backend, "fallback_reason", None):
                self.model_warning.emit(str(backend.fallback_reason))
        return predictor

    def _schedule_prefetch(self, orientation: str, index: int) -> None:
        if self._service.plan_prefetch(orientation, index):
            QTimer.singleShot(0, self._prefetch_one)

    @pyqtSlot()
    def _prefetch_one(self) -> None:
        if self._clock.pending > 0:
            return  # a new request is waiting (it reschedules)
        if self._service.prefetch_one():
            QTimer.singleShot(0, self._prefetch_one)

    # --- slots -----------------------------------------------------------------------------------
    @pyqtSlot(object, object)
    def set_volume(self, key: Hashable, volume: Volume | None) -> None:
        self._start()
        self._service.set_volume(key, volume)

    @pyqtSlot(float, float)
    def set_ct_window(self, level: float, width: float) -> None:
        self._start()
        self._service.set_ct_window(level, width)

    @pyqtSlot(int)
    def set_threads(self, threads: int) -> None:
        self._start()
        self._service.set_threads(threads)

    @pyqtSlot(object)
    def set_factory(self, factories: tuple[BackendFactory, ClickFactory | None]) -> None:
        self._start()
        self._service.set_factory(*factories)

    @pyqtSlot(int, int, str)
    def encode(self, req_id: int, z: int, orientation: str) -> None:
        self._start()
        if self._clock.is_stale(req_id) or not self._service.has_image:
            return
        if not 0 <= z < self._service.depth(orientation):
            return  # a slice index of the previous image, posted while a new one was being shown
        predictor = self._predictor_or_fail(-1)  # slice changes never nag about a missing model
        if predictor is None:
            return
        try:
            self._service.encode(predictor, orientation, z)
        except Exception as exc:
            log.exception("encode failed")
            self.failed.emit(req_id, one_line(exc))
            return
        self.encoded.emit(req_id, z)
        self._schedule_prefetch(orientation, z)

    @pyqtSlot(int, int, object, str)
    def segment(self, req_id: int, z: int, box: np.ndarray, orientation: str) -> None:
        self._start()
        if self._clock.is_stale(req_id) or not self._service.has_image:
            log.debug("skipping stale segment request %d", req_id)
            return
        predictor = self._predictor_or_fail(req_id)
        if predictor is None:
            return
        try:
            mask = self._service.segment(predictor, orientation, z, box)
        except Exception as exc:  # InvalidBoxError and friends: one line
            log.info("segment failed: %s", exc)
            self.failed.emit(req_id, one_line(exc))
            return
        self.mask_ready.emit(req_id, z, mask)
        self._schedule_prefetch(orientation, z)

    @pyqtSlot(int, int, object, object, str)
    def refine(self, req_id: int, z: int, box: np.ndarray, points: list[ClickPoint], orientation: str) -> None:
        self._start()
        if self._clock.is_stale(req_id) or not self._service.has_image:
            return
        predictor = self._predictor_or_fail(req_id)
        if predictor is None:
            return
        try:
            mask = self._service.refine(predictor, orientation, z, box, points)
        except Exception as exc:  # no click path, a bad box: one line
            log.info("click failed: %s", exc)
            self.failed.emit(req_id, f"Click not applied: {one_line(exc)}")
            return
        self.refined.emit(req_id, z, mask)

    @pyqtSlot(int, int, object, int, int, object, str, bool, object)
    def propagate(
        self,
        req_id: int,
        zc: int,
        box: np.ndarray,
        below: int,
        above: int,
        cancel: object,
        orientation: str,
        stop_when_empty: bool = False,
        start_mask: np.ndarray | None = None,
    ) -> None:
        """Propagate ``box`` from plane slice ``zc`` along the axis of ``orientation`` (indices and masks stay in
        its plane frame); every finished slice is emitted at once. ``start_mask``: slice ``zc`` as corrected
        with clicks (kept; the propagation starts from it)."""
        self._start()
        predictor = self._predictor_or_fail(req_id)
        if predictor is None or not self._service.has_image:
            return

        def on_slice(z: int, mask: np.ndarray, done: int, total: int) -> None:
            self.slice_done.emit(req_id, z, mask)
            self.progress.emit(req_id, done, total)

        try:
            result = self._service.propagate(
                predictor,
                orientation,
                zc,
                box,
                below,
                above,
                cancel,  # type: ignore[arg-type]
                on_slice,
                stop_when_empty=stop_when_empty,
                start_mask=start_mask,
            )
        except Exception as exc:
            log.exception("propagation failed")
            self.failed.emit(req_id, one_line(exc))
            return
        self.propagation_finished.emit(req_id, result.z0, result.masks, result.cancelled)


class SegmentationWorker(QObject):
    """GUI-side handle: posts requests to the worker thread and forwards only current results."""

    mask_ready = pyqtSignal(int, int, object)
    refined = pyqtSignal(int, int, object)
    encoded = pyqtSignal(int, int)
    progress = pyqtSignal(int, int, int)
    slice_done = pyqtSignal(int, int, object)
    propagation_finished = pyqtSignal(int, int, object, bool)
    model_loaded = pyqtSignal(str)
    model_failed = pyqtSignal(str)
    model_warning = pyqtSignal(str)
    failed = pyqtSignal(int, str)

    _post_volume = pyqtSignal(object, object)
    _post_factory = pyqtSignal(object)
    _post_window = pyqtSignal(float, float)
    _post_threads = pyqtSignal(int)
    _post_encode = pyqtSignal(int, int, str)
    _post_segment = pyqtSignal(int, int, object, str)
    _post_refine = pyqtSignal(int, int, object, object, str)
    _post_propagate = pyqtSignal(int, int, object, int, int, object, str, bool, object)

    def __init__(
        self,
        factory: BackendFactory | None = None,
        cache_bytes: int = 256 * 2**20,
        prefetch: int = 2,
        parent: QObject | None = None,
        click_factory: ClickFactory | None = None,
    ) -> None:
        super().__init__(parent)
        self.cache = EmbeddingCache(cache_bytes, fp16=True)
        self._shared = RequestClock()
        self._ids = itertools.count(1)
        self._propagation_id = 0
        self._cancel: threading.Event | None = None
        self._volume_ids = itertools.count(1)
        self.volume_key: Hashable = None
        self._thread = QThread()
        self._thread.setObjectName("medsam-worker")
        service = SegmentationService(
            factory or default_backend_factory(), self.cache, prefetch,
            click_factory if click_factory is not None or factory is not None else default_click_factory(),
        )  # fmt: skip
        self._worker = _Worker(service, self._shared)
        self._worker.moveToThread(self._thread)
        self._post_volume.connect(self._worker.set_volume)
        self._post_factory.connect(self._worker.set_factory)
        self._post_window.connect(self._worker.set_ct_window)
        self._post_threads.connect(self._worker.set_threads)
        self._post_encode.connect(self._worker.encode)
        self._post_segment.connect(self._worker.segment)
        self._post_refine.connect(self._worker.refine)
        self._post_propagate.connect(self._worker.propagate)
        self._worker.mask_ready.connect(self._on_mask)
        self._worker.refined.connect(self._on_refined)
        self._worker.encoded.connect(self._on_encoded)
        self._worker.progress.connect(self._on_progress)
        self._worker.slice_done.connect(self._on_slice)
        self._worker.propagation_finished.connect(self._on_finished)
        self._worker.model_loaded.connect(self.model_loaded)
        self._worker.model_failed.connect(self.model_failed)
        self._worker.model_warning.connect(self.model_warning)
        self._worker.failed.connect(self.failed)
        self._thread.start()

    # --- requests --------------------------------------------------------------------------------
    @property
    def latest_id(self) -> int:
        return self._shared.latest

    @property
    def thread(self) -> QThread:
        return self._thread

    def _next_interactive(self) -> int:
        req_id = next(self._ids)
        self._shared.latest = req_id
        self._shared.add_pending(1)
        return req_id

    def set_volume(self, volume: Volume | None) -> Hashable:
        """Switch to a new image; drops the embeddings of the previous one. Returns the cache key."""
        key = (next(self._volume_ids), str(volume.source_path) if volume is not None else "")
        self.volume_key = key
        self.cache.discard(lambda k: not belongs_to_volume(k, key))
        self._shared.latest = next(self._ids)  # everything queued for the old image is stale
        self._shared.add_pending(1)
        self._post_volume.emit(key, volume)
        return key

    def set_ct_window(self, level: float, width: float) -> None:
        """Feed CT to the model through this window (later requests; other modalities are not affected)."""
        self._shared.add_pending(1)
        self._post_window.emit(float(level), float(width))

    def set_threads(self, threads: int) -> None:
        """Change the CPU threads of the loaded model (between requests; the cache is kept)."""
        self._shared.add_pending(1)
        self._post_threads.emit(int(threads))

    def set_backend_factory(self, factory: BackendFactory, click_factory: ClickFactory | None = None) -> None:
        """Use another model (loaded lazily at the next request) and its click path (at the next click)."""
        self.cache.discard()
        self._shared.add_pending(1)
        self._post_factory.emit((factory, click_factory))

    def encode(self, z: int, orientation: str = "axial") -> int:
        """Encode slice ``z`` of ``orientation`` (then prefetch its neighbours)."""
        req_id = self._next_interactive()
        self._post_encode.emit(req_id, int(z), str(orientation))
        return req_id

    def segment(self, z: int, box: np.ndarray, orientation: str = "axial") -> int:
        """Segment ``box`` ``[x0, y0, x1, y1]`` (plane-frame pixels) on slice ``z`` of ``orientation``."""
        req_id = self._next_interactive()
        self._post_segment.emit(req_id, int(z), np.asarray(box, dtype=np.float64).copy(), str(orientation))
        return req_id

    def refine(self, z: int, box: np.ndarray, points: list[ClickPoint], orientation: str = "axial") -> int:
        """Correct ``box``'s mask on slice ``z`` of ``orientation`` with ``points`` (plane-frame pixels, all the
        clicks so far in order): the result comes as ``refined``."""
        req_id = self._next_interactive()
        box = np.asarray(box, dtype=np.float64).copy()
        self._post_refine.emit(req_id, int(z), box, list(points), str(orientation))
        return req_id

    def propagate(
        self,
        z: int,
        box: np.ndarray,
        below: int,
        above: int,
        orientation: str = "axial",
        stop_when_empty: bool = False,
        start_mask: np.ndarray | None = None,
    ) -> int:
        """Propagate ``box`` from slice ``z`` of ``orientation``, ``below``/``above`` slices along its axis
        (``stop_when_empty``: each direction also ends where the mask disappears; ``start_mask``: slice ``z``
        as corrected with clicks)."""
        req_id = next(self._ids)
        self._propagation_id = req_id
        self._cancel = threading.Event()
        self._shared.add_pending(1)
        box = np.asarray(box, np.float64).copy()
        self._post_propagate.emit(
            req_id, int(z), box, below, above, self._cancel, str(orientation), bool(stop_when_empty),
            None if start_mask is None else np.asarray(start_mask, bool).copy(),
        )  # fmt: skip
        return req_id

    def cancel(self) -> None:
        """Stop the running propagation between slices (it returns what was finished)."""
        if self._cancel is not None:
            self._cancel.set()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel, stop the thread and wait for it; True when it finished in time."""
        self.cancel()
        self._shared.latest = next(self._ids)
        self._thread.quit()
        ok = self._thread.wait(timeout_ms)
        if not ok:
            log.warning("worker thread did not stop within %d ms", timeout_ms)
        return bool(ok)

    # --- results (GUI thread) --------------------------------------------------------------------
    def _on_mask(self, req_id: int, z: int, mask: np.ndarray) -> None:
        if not self._shared.is_current(req_id):
            log.debug("dropping stale mask %d (latest %d)", req_id, self._shared.latest)
            return
        self.mask_ready.emit(req_id, z, mask)

    def _on_refined(self, req_id: int, z: int, mask: np.ndarray) -> None:
        if self._shared.is_current(req_id):
            self.refined.emit(req_id, z, mask)

    def _on_encoded(self, req_id: int, z: int) -> None:
        if self._shared.is_current(req_id):
            self.encoded.emit(req_id, z)

    def _on_progress(self, req_id: int, done: int, total: int) -> None:
        if req_id == self._propagation_id:
            self.progress.emit(req_id, done, total)

    def _on_slice(self, req_id: int, z: int, mask: np.ndarray) -> None:
        if req_id == self._propagation_id:
            self.slice_done.emit(req_id, z, mask)

    def _on_finished(self, req_id: int, z0: int, mask: np.ndarray, cancelled: bool) -> None:
        if req_id == self._propagation_id:
            self._cancel = None
            self.propagation_finished.emit(req_id, z0, mask, cancelled)
