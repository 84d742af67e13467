"""Inference off the GUI thread: a QObject living in a QThread runs encode / decode / propagation.

Requests carry increasing ids; an interactive request (encode, segment) that is no longer the newest when the
worker reaches it is skipped, and results whose id is stale are dropped before they reach the window. When the
worker is idle it prefetches the embeddings of the neighbouring slices. The model is loaded lazily, on the
worker thread, at the first request.

Every request names an orientation (axial, coronal, sagittal): slice indices, boxes and masks are in the PLANE
FRAME of :meth:`medsam_desktop.core.inference.reformat.Plane.of` for that orientation (what the view shows). Embeddings
are cached per (volume, intensity mapping, orientation) and slice index, so planes never share an embedding.
Every slice is given to the model with its plane's pixel spacing (:attr:`ModelInput.pixel_spacing`), i.e. at
its physical aspect ratio (the predictor adds the pixel aspect to the cache key).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
from PyQt6.QtCore import QObject, QThread, QTimer, pyqtSignal, pyqtSlot

from ..core.backends import DEFAULT_PRECISION, DEFAULT_RUNTIME, InferenceBackend
from ..core.inference.cache import EmbeddingCache
from ..core.inference.model_input import ModelInput
from ..core.inference.predictor import Embedding, Predictor
from ..core.inference.propagation import PropagationCancelled, propagate_boxes
from ..core.inference.reformat import Plane
from ..io import Volume

log = logging.getLogger(__name__)

BackendFactory = Callable[[], InferenceBackend]


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


@dataclass
class _Shared:
    """State shared by the GUI thread and the worker (ints under a lock)."""

    latest: int = 0  # newest interactive request id
    pending: int = 0  # requests posted and not yet started
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_pending(self, n: int) -> None:
        with self.lock:
            self.pending += n


class _Worker(QObject):
    """Lives in the worker thread; slots are invoked through queued signals from :class:`SegmentationWorker`."""

    # indices and masks are in the plane frame of the request's orientation (axial: z and (H, W))
    mask_ready = pyqtSignal(int, int, object)  # id, index, mask (rows, cols) bool
    encoded = pyqtSignal(int, int)  # id, index
    progress = pyqtSignal(int, int, int)  # id, done, total
    slice_done = pyqtSignal(int, int, object)  # id, index, mask (rows, cols) bool
    propagation_finished = pyqtSignal(int, int, object, bool)  # id, i0, mask (K, rows, cols) bool, cancelled
    model_loaded = pyqtSignal(str)
    model_failed = pyqtSignal(str)  # one-line reason (also when no request was waiting for the model)
    model_warning = pyqtSignal(str)  # the model loaded, but not as asked (e.g. runtime missing: torch fallback)
    failed = pyqtSignal(int, str)  # id, one-line message

    def __init__(self, factory: BackendFactory, cache: EmbeddingCache, shared: _Shared, prefetch: int) -> None:
        super().__init__()
        self._factory = factory
        self._cache = cache
        self._shared = shared
        self._prefetch_radius = prefetch
        self._predictor: Predictor | None = None
        self._model_error: str | None = None
        self._input: ModelInput | None = None  # axial
        self._inputs: dict[str, ModelInput] = {}  # orientation -> model input sliced along that plane
        self._key: Hashable = None
        self._prefetch: deque[tuple[str, int]] = deque()  # (orientation, index)

    # --- helpers ---------------------------------------------------------------------------------
    def _start(self) -> None:
        self._shared.add_pending(-1)

    def _stale(self, req_id: int) -> bool:
        return req_id < self._shared.latest

    def _predictor_or_fail(self, req_id: int) -> Predictor | None:
        if self._predictor is None and self._model_error is None:
            try:
                backend = self._factory()
                self._predictor = Predictor(backend, self._cache)
                self.model_loaded.emit(str(getattr(backend, "name", "model")))
                if getattr(backend, "fallback_reason", None):
                    self.model_warning.emit(str(backend.fallback_reason))
            except Exception as exc:  # any load failure becomes one line for the user
                log.exception("model could not be loaded")
                self._model_error = _one_line(exc)
                self.model_failed.emit(self._model_error)
        if self._predictor is None:
            if req_id >= 0:
                self.failed.emit(req_id, f"No segmentation model: {self._model_error}")
            return None
        return self._predictor

    def _input_for(self, orientation: str) -> ModelInput:
        """The model input sliced along ``orientation`` (as displayed), created at first use."""
        assert self._input is not None
        stack = self._inputs.get(orientation)
        if stack is None:
            stack = self._input.reformatted(Plane.of(self._input.volume, orientation))
            self._inputs[orientation] = stack
        return stack

    def _encode(self, predictor: Predictor, orientation: str, index: int) -> Embedding:
        """Embedding of plane slice ``index``, seen by the model with its physical pixel aspect."""
        stack = self._input_for(orientation)
        return predictor.encode(stack[index], key=(self._vkey(orientation), index), pixel_spacing=stack.pixel_spacing)

    def _vkey(self, orientation: str = "axial") -> Hashable:
        """Cache key of a slice stack: the volume, its intensity mapping (CT window) and the orientation.

        A slice's key is ``(vkey, index)``: axial slice 5 and coronal slice 5 never share an embedding.
        """
        return (self._key, self._input.mapping if self._input is not None else None, orientation)

    def _schedule_prefetch(self, orientation: str, index: int) -> None:
        if self._input is None or not self._prefetch_radius:
            return
        depth = len(self._input_for(orientation))
        near = [index + s * r for r in range(1, self._prefetch_radius + 1) for s in (1, -1)]
        self._prefetch = deque((orientation, n) for n in near if 0 <= n < depth)
        QTimer.singleShot(0, self._prefetch_one)

    @pyqtSlot()
    def _prefetch_one(self) -> None:
        if self._shared.pending > 0 or not self._prefetch or self._predictor is None or self._input is None:
            return  # a new request is waiting (it reschedules), or nothing to do
        orientation, index = self._prefetch.popleft()
        stack = self._input_for(orientation)
        if self._predictor.cached(stack.shape[1:3], (self._vkey(orientation), index), stack.pixel_spacing) is None:
            try:
                self._encode(self._predictor, orientation, index)
            except Exception:  # prefetch is best effort
                log.exception("prefetch of %s slice %d failed", orientation, index)
                self._prefetch.clear()
                return
        if self._prefetch:
            QTimer.singleShot(0, self._prefetch_one)

    # --- slots -----------------------------------------------------------------------------------
    @pyqtSlot(object, object)
    def set_volume(self, key: Hashable, volume: Volume | None) -> None:
        self._start()
        self._key = key
        self._input = None if volume is None else ModelInput(volume)
        self._inputs = {} if self._input is None else {"axial": self._input}
        self._prefetch.clear()

    @pyqtSlot(float, float)
    def set_ct_window(self, level: float, width: float) -> None:
        self._start()
        changed = [stack.set_ct_window(level, width) for stack in self._inputs.values()]
        if any(changed):
            self._prefetch.clear()

    @pyqtSlot(int)
    def set_threads(self, threads: int) -> None:
        self._start()
        apply_threads(threads)

    @pyqtSlot(object)
    def set_factory(self, factory: BackendFactory) -> None:
        self._start()
        self._factory, self._predictor, self._model_error = factory, None, None

    @pyqtSlot(int, int, str)
    def encode(self, req_id: int, z: int, orientation: str) -> None:
        self._start()
        if self._stale(req_id) or self._input is None:
            return
        if not 0 <= z < len(self._input_for(orientation)):
            return  # a slice index of the previous image, posted while a new one was being shown
        predictor = self._predictor_or_fail(-1)  # slice changes never nag about a missing model
        if predictor is None:
            return
        try:
            self._encode(predictor, orientation, z)
        except Exception as exc:
            log.exception("encode failed")
            self.failed.emit(req_id, _one_line(exc))
            return
        self.encoded.emit(req_id, z)
        self._schedule_prefetch(orientation, z)

    @pyqtSlot(int, int, object, str)
    def segment(self, req_id: int, z: int, box: np.ndarray, orientation: str) -> None:
        self._start()
        if self._stale(req_id) or self._input is None:
            log.debug("skipping stale segment request %d", req_id)
            return
        predictor = self._predictor_or_fail(req_id)
        if predictor is None:
            return
        try:
            pred = predictor.decode(self._encode(predictor, orientation, z), np.asarray(box, dtype=np.float64))
        except Exception as exc:  # InvalidBoxError and friends: one line
            log.info("segment failed: %s", exc)
            self.failed.emit(req_id, _one_line(exc))
            return
        self.mask_ready.emit(req_id, z, pred.masks[0])
        self._schedule_prefetch(orientation, z)

    @pyqtSlot(int, int, object, int, int, object, str)
    def propagate(
        self, req_id: int, zc: int, box: np.ndarray, below: int, above: int, cancel: object, orientation: str
    ) -> None:
        """Propagate ``box`` from plane slice ``zc`` along the axis of ``orientation`` (the challenge algorithm
        on the reformatted stack; indices and masks stay in its plane frame)."""
        self._start()
        predictor = self._predictor_or_fail(req_id)
        if predictor is None or self._input is None:
            return
        user_cancel: threading.Event = cancel  # type: ignore[assignment]
        stack = self._input_for(orientation)
        depth = len(stack)
        above, below = max(0, min(above, depth - 1 - zc)), max(0, min(below, zc))
        total, done = above + below + 1, 0
        out = np.zeros((total, *stack.shape[1:3]), bool)
        z0 = zc - below
        cancelled = False

        def on_slice(z: int, sl: np.ndarray) -> None:
            nonlocal done
            out[z - z0] = sl > 0
            done += 1
            self.slice_done.emit(req_id, z, out[z - z0].copy())
            self.progress.emit(req_id, done, total)

        boxes3d = np.array([[box[0], box[1], z0, box[2], box[3], zc + above]], dtype=np.float64)
        try:
            propagate_boxes(
                predictor,
                stack,  # type: ignore[arg-type]  # quacks like the (N, rows, cols) array
                boxes3d,
                volume_key=self._vkey(orientation),
                cancel=user_cancel,
                on_slice=on_slice,
                start_slices=[zc],
                pixel_spacing=stack.pixel_spacing,
            )
        except PropagationCancelled:
            cancelled = True
        except Exception as exc:
            log.exception("propagation failed")
            self.failed.emit(req_id, _one_line(exc))
            return
        self.propagation_finished.emit(req_id, z0, out, cancelled)


def apply_threads(threads: int) -> int:
    """Set torch's CPU threads now, without reloading the model (0: all cores); returns the count in effect."""
    torch = sys.modules.get("torch")  # not loaded yet: the backend applies the setting when it loads
    if torch is None:
        return 0
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return int(torch.get_num_threads())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


class SegmentationWorker(QObject):
    """GUI-side handle: posts requests to the worker thread and forwards only current results."""

    mask_ready = pyqtSignal(int, int, object)
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
    _post_propagate = pyqtSignal(int, int, object, int, int, object, str)

    def __init__(
        self,
        factory: BackendFactory | None = None,
        cache_bytes: int = 256 * 2**20,
        prefetch: int = 2,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.cache = EmbeddingCache(cache_bytes, fp16=True)
        self._shared = _Shared()
        self._ids = itertools.count(1)
        self._propagation_id = 0
        self._cancel: threading.Event | None = None
        self._volume_ids = itertools.count(1)
        self.volume_key: Hashable = None
        self._thread = QThread()
        self._thread.setObjectName("medsam-worker")
        self._worker = _Worker(factory or default_backend_factory(), self.cache, self._shared, prefetch)
        self._worker.moveToThread(self._thread)
        self._post_volume.connect(self._worker.set_volume)
        self._post_factory.connect(self._worker.set_factory)
        self._post_window.connect(self._worker.set_ct_window)
        self._post_threads.connect(self._worker.set_threads)
        self._post_encode.connect(self._worker.encode)
        self._post_segment.connect(self._worker.segment)
        self._post_propagate.connect(self._worker.propagate)
        self._worker.mask_ready.connect(self._on_mask)
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
        self.cache.discard(lambda k: not (isinstance(k, tuple) and len(k) >= 2 and isinstance(k[1], tuple)
                                          and isinstance(k[1][0], tuple) and k[1][0][0] == key))  # fmt: skip
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

    def set_backend_factory(self, factory: BackendFactory) -> None:
        """Use another model (loaded lazily at the next request)."""
        self.cache.discard()
        self._shared.add_pending(1)
        self._post_factory.emit(factory)

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

    def propagate(self, z: int, box: np.ndarray, below: int, above: int, orientation: str = "axial") -> int:
        """Propagate ``box`` from slice ``z`` of ``orientation``, ``below``/``above`` slices along its axis."""
        req_id = next(self._ids)
        self._propagation_id = req_id
        self._cancel = threading.Event()
        self._shared.add_pending(1)
        box = np.asarray(box, np.float64).copy()
        self._post_propagate.emit(req_id, int(z), box, below, above, self._cancel, str(orientation))
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
        if req_id != self._shared.latest:
            log.debug("dropping stale mask %d (latest %d)", req_id, self._shared.latest)
            return
        self.mask_ready.emit(req_id, z, mask)

    def _on_encoded(self, req_id: int, z: int) -> None:
        if req_id == self._shared.latest:
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
