"""What the app's segmentation worker does, without Qt: one image, its slices as the model sees them per
orientation, the embedding cache keys, the lazily loaded model, encode / segment / propagate, the prefetch plan
and the stale-request rule. ``ui/worker.py`` only moves these calls onto its thread and emits signals.

Frames: an orientation (``axial``, ``coronal``, ``sagittal``) names a plane (:meth:`Plane.of`); slice indices,
boxes ``[x0, y0, x1, y1]`` and masks (rows, cols) are in that plane's frame. Cache keys: a slice stack is keyed
by ``(volume key, intensity mapping, orientation)`` and a slice by ``(stack key, index)``, so axial slice 5 and
coronal slice 5 never share an embedding; the predictor adds its backend name and the pixel aspect.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from ...io import Volume
from ...text import exception_line
from ..backends import InferenceBackend
from ..backends.base import apply_torch_threads
from ..backends.clicks import ClickBackend
from .cache import EmbeddingCache
from .clicks import ClickPoint, ClickRefiner, model_image
from .model_input import ModelInput
from .predictor import Embedding, Predictor
from .propagation import PropagationCancelled, propagate_boxes
from .reformat import Plane

log = logging.getLogger(__name__)

BackendFactory = Callable[[], InferenceBackend]
ClickFactory = Callable[[], ClickBackend]


@dataclass
class ClickChain:
    """The masks of one box and its clicks on one slice: entry ``k`` = (first k clicks, logits, mask) after them;
    entry 0 is the box alone. Kept for the latest box only, so an undone click costs nothing to show again."""

    key: Hashable
    steps: list[tuple[tuple[ClickPoint, ...], np.ndarray, np.ndarray]]
    image: np.ndarray | None = None  # the slice's model-frame image, for a click path that refines with it (kept
    # for the next box on the same slice: made once per slice, not once per box)

    def reuse(self, points: tuple[ClickPoint, ...]) -> None:
        """Keep the longest prefix of steps whose clicks begin ``points``."""
        k = 1
        while k < len(self.steps) and len(self.steps[k][0]) <= len(points) and self.steps[k][0] == points[:k]:
            k += 1
        del self.steps[k:]


@dataclass
class RequestClock:
    """Request ids shared by the GUI thread and the worker: an interactive request (encode, segment) that is no
    longer the newest when the worker reaches it is skipped, and a result whose id is not the newest is dropped.
    ``pending`` counts requests posted and not yet started (prefetch waits while any is pending)."""

    latest: int = 0
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_pending(self, n: int) -> None:
        with self.lock:
            self.pending += n

    def is_stale(self, req_id: int) -> bool:
        """An interactive request older than the newest one: not worth computing any more."""
        return req_id < self.latest

    def is_current(self, req_id: int) -> bool:
        """A result of the newest interactive request: the only one shown."""
        return req_id == self.latest


def belongs_to_volume(cache_key: Hashable, volume_key: Hashable) -> bool:
    """True for the predictor's cache keys ``(backend, ((volume, mapping, orientation), index), aspect)`` of
    ``volume_key``."""
    if not (isinstance(cache_key, tuple) and len(cache_key) >= 2 and isinstance(cache_key[1], tuple)):
        return False
    stack = cache_key[1][0] if cache_key[1] else None
    return isinstance(stack, tuple) and bool(stack) and stack[0] == volume_key


def clamp_range(depth: int, zc: int, below: int, above: int) -> tuple[int, int]:
    """(below, above) slice counts from ``zc`` limited to a stack of ``depth`` slices."""
    return max(0, min(below, zc)), max(0, min(above, depth - 1 - zc))


def prefetch_plan(depth: int, index: int, radius: int) -> list[int]:
    """The neighbours of ``index`` to encode ahead, nearest first (``index+1, index-1, index+2, ...``)."""
    near = [index + s * r for r in range(1, radius + 1) for s in (1, -1)]
    return [n for n in near if 0 <= n < depth]


class ModelUnavailableError(RuntimeError):
    """The model could not be loaded; the message is one line for the user."""


@dataclass(frozen=True)
class PropagationResult:
    """Masks of slices ``z0 .. z0 + len(masks) - 1`` (K, rows, cols) bool; ``cancelled`` when stopped early."""

    z0: int
    masks: np.ndarray
    cancelled: bool


class SegmentationService:
    """One image and the model, for one worker thread (not thread-safe by itself)."""

    def __init__(
        self, factory: BackendFactory, cache: EmbeddingCache, prefetch_radius: int = 2,
        click_factory: ClickFactory | None = None,
    ) -> None:  # fmt: skip
        self._factory = factory
        self._click_factory = click_factory
        self._refiner: ClickRefiner | None = None
        self._chain: ClickChain | None = None
        self._cache = cache
        self.prefetch_radius = prefetch_radius
        self._predictor: Predictor | None = None
        self._model_error: str | None = None
        self._input: ModelInput | None = None  # axial
        self._inputs: dict[str, ModelInput] = {}  # orientation -> the model input sliced along that plane
        self._key: Hashable = None
        self._prefetch: deque[tuple[str, int]] = deque()  # (orientation, index)

    # --- model -----------------------------------------------------------------------------------
    @property
    def predictor(self) -> Predictor | None:
        return self._predictor

    def load_model(self) -> tuple[Predictor, bool]:
        """The predictor, loading the model at the first call: (predictor, loaded now). A failure is remembered
        (no retry until :meth:`set_factory`) and raised as :class:`ModelUnavailableError` every time."""
        if self._predictor is None and self._model_error is None:
            try:
                self._predictor = Predictor(self._factory(), self._cache)
            except Exception as exc:  # any load failure becomes one line for the user
                log.exception("model could not be loaded")
                self._model_error = one_line(exc)
                raise ModelUnavailableError(self._model_error) from exc
            return self._predictor, True
        if self._predictor is None:
            raise ModelUnavailableError(str(self._model_error))
        return self._predictor, False

    def set_factory(self, factory: BackendFactory, click_factory: ClickFactory | None = None) -> None:
        self._factory, self._predictor, self._model_error = factory, None, None
        self._click_factory, self._refiner, self._chain = click_factory, None, None

    def set_threads(self, threads: int) -> int:
        """CPU threads of a loaded torch model, live (0: all cores); the count in effect, 0 when not torch."""
        return apply_torch_threads(threads)

    # --- image -----------------------------------------------------------------------------------
    def set_volume(self, key: Hashable, volume: Volume | None) -> None:
        self._key = key
        self._chain = None
        self._input = None if volume is None else ModelInput(volume)
        self._inputs = {} if self._input is None else {"axial": self._input}
        self._prefetch.clear()

    def set_ct_window(self, level: float, width: float) -> bool:
        """Feed CT through this window from now on; True when a mapping changed (prefetch plans are dropped)."""
        changed = any([stack.set_ct_window(level, width) for stack in self._inputs.values()])
        if changed:
            self._prefetch.clear()
        return changed

    @property
    def has_image(self) -> bool:
        return self._input is not None

    def depth(self, orientation: str) -> int:
        """Number of slices along ``orientation`` (0 without an image)."""
        return len(self._input_for(orientation)) if self._input is not None else 0

    def stack_key(self, orientation: str = "axial") -> Hashable:
        """Cache key of a slice stack: the volume, its intensity mapping (CT window) and the orientation."""
        return (self._key, self._input.mapping if self._input is not None else None, orientation)

    def _input_for(self, orientation: str) -> ModelInput:
        """The model input sliced along ``orientation`` (as displayed), created at first use."""
        if self._input is None:
            raise RuntimeError("no image")
        stack = self._inputs.get(orientation)
        if stack is None:
            stack = self._input.reformatted(Plane.of(self._input.volume, orientation))
            self._inputs[orientation] = stack
        return stack

    # --- work ------------------------------------------------------------------------------------
    def encode(self, predictor: Predictor, orientation: str, index: int) -> Embedding:
        """Embedding of plane slice ``index``, seen by the model with its physical pixel aspect."""
        stack = self._input_for(orientation)
        return predictor.encode(
            stack[index], key=(self.stack_key(orientation), index), pixel_spacing=stack.pixel_spacing
        )

    def segment(self, predictor: Predictor, orientation: str, index: int, box: np.ndarray) -> np.ndarray:
        """Mask (rows, cols) bool of ``box`` on plane slice ``index``."""
        pred = predictor.decode(self.encode(predictor, orientation, index), np.asarray(box, dtype=np.float64))
        return pred.masks[0]

    def refine(
        self, predictor: Predictor, orientation: str, index: int, box: np.ndarray, points: list[ClickPoint]
    ) -> np.ndarray:
        """Mask (rows, cols) bool of ``box`` corrected by ``points`` (plane-frame pixels) on plane slice ``index``:
        the click path decodes each new click from the previous logits (no re-encode); clicks already decoded
        for this box are reused. The click network is loaded at the first click (ClicksUnavailable says why
        there is none)."""
        if self._click_factory is None:
            from ..backends.clicks import ClicksUnavailable

            raise ClicksUnavailable("clicks are not available with this model")
        if self._refiner is None:
            self._refiner = ClickRefiner(self._click_factory)
        box = np.asarray(box, dtype=np.float64)
        emb = self.encode(predictor, orientation, index)
        key = (self.stack_key(orientation), index, tuple(float(v) for v in box))
        if self._chain is None or self._chain.key != key:
            first = predictor.decode(emb, box)
            same_slice = self._chain is not None and self._chain.key[:2] == key[:2]
            image = self._chain.image if same_slice else None  # type: ignore[union-attr]
            self._chain = ClickChain(key, [((), first.logits[0], first.masks[0])], image)
        wanted = tuple(points)
        self._chain.reuse(wanted)
        if len(wanted) >= len(self._chain.steps) and self._chain.image is None and self._refiner.needs_image:
            stack = self._input_for(orientation)
            self._chain.image = model_image(stack[index], stack.pixel_spacing)
        for k in range(len(self._chain.steps), len(wanted) + 1):
            pred = self._refiner.refine(emb, box, list(wanted[:k]), self._chain.steps[-1][1], self._chain.image)
            self._chain.steps.append((wanted[:k], pred.logits[0], pred.masks[0]))
        return self._chain.steps[len(wanted)][2]

    def propagate(
        self,
        predictor: Predictor,
        orientation: str,
        zc: int,
        box: np.ndarray,
        below: int,
        above: int,
        cancel: threading.Event,
        on_slice: Callable[[int, np.ndarray, int, int], None],
        stop_when_empty: bool = False,
        start_mask: np.ndarray | None = None,
    ) -> PropagationResult:
        """Propagate ``box`` from plane slice ``zc`` along the axis of ``orientation`` (the challenge algorithm on
        the reformatted stack), ``below`` / ``above`` slices clamped to the stack. ``on_slice(z, mask, done,
        total)`` after each slice; a cancel returns the slices finished (``cancelled``). ``stop_when_empty``: each
        direction ends where the mask disappears (the slices beyond stay empty). ``start_mask`` (rows, cols): the
        mask of slice ``zc`` as corrected with clicks, kept as it is; the propagation starts from it."""
        stack = self._input_for(orientation)
        below, above = clamp_range(len(stack), zc, below, above)
        total, done = above + below + 1, 0
        out = np.zeros((total, *stack.shape[1:3]), bool)
        z0 = zc - below

        def slice_done(z: int, sl: np.ndarray) -> None:
            nonlocal done
            out[z - z0] = sl > 0
            done += 1
            on_slice(z, out[z - z0].copy(), done, total)

        boxes3d = np.array([[box[0], box[1], z0, box[2], box[3], zc + above]], dtype=np.float64)
        try:
            propagate_boxes(
                predictor,
                stack,  # type: ignore[arg-type]  # quacks like the (N, rows, cols) array
                boxes3d,
                volume_key=self.stack_key(orientation),
                cancel=cancel,
                on_slice=slice_done,
                start_slices=[zc],
                pixel_spacing=stack.pixel_spacing,
                stop_when_empty=stop_when_empty,
                fixed_masks=None if start_mask is None else [{zc: np.asarray(start_mask, bool)}],
            )
        except PropagationCancelled:
            return PropagationResult(z0, out, True)
        return PropagationResult(z0, out, False)

    # --- prefetch --------------------------------------------------------------------------------
    def plan_prefetch(self, orientation: str, index: int) -> bool:
        """Replace the prefetch plan with the neighbours of ``index``; True when there is something to do."""
        if self._input is None or not self.prefetch_radius:
            return False
        depth = len(self._input_for(orientation))
        self._prefetch = deque((orientation, n) for n in prefetch_plan(depth, index, self.prefetch_radius))
        return bool(self._prefetch)

    def prefetch_one(self) -> bool:
        """Encode the next planned slice unless it is cached; True when more of the plan is left."""
        if not self._prefetch or self._predictor is None or self._input is None:
            return False
        orientation, index = self._prefetch.popleft()
        stack = self._input_for(orientation)
        if self._predictor.cached(stack.shape[1:3], (self.stack_key(orientation), index), stack.pixel_spacing) is None:
            try:
                self.encode(self._predictor, orientation, index)
            except Exception:  # prefetch is best effort
                log.exception("prefetch of %s slice %d failed", orientation, index)
                self._prefetch.clear()
                return False
        return bool(self._prefetch)


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters (its class name when it has no text)."""
    return exception_line(exc, 299)
