"""3D segmentation from box prompts by slice-to-slice propagation (the challenge algorithm).

For a 3D box ``[x0, y0, z0, x1, y1, z1]`` (image pixels, slice indices, inclusive) the middle slice
``zm = int((z1 - z0) / 2 + z0)`` is segmented with the 2D box; then slices zm+1..z1 are segmented upwards and
zm-1..z0 downwards, each prompted by the bbox (+3 px in the model frame) of the previous slice's mask, or by
the original box when that mask is empty. Label ``i + 1`` is written for box ``i``; where masks of two boxes
overlap the larger label value wins (with the default values i + 1 that is the later box, as the
challenge writes them in order).

All boxes are advanced together in one upward and one downward sweep, so each slice is encoded at most once
per sweep and its embedding is shared by every box that needs it (slices needed by both sweeps are kept).

An optional ``pixel_spacing`` (column, row) mm, the same for every slice of the stack, makes the model see
each slice with its physical aspect (e.g. coronal slices of thick-slice CT); prompts are then mapped to the
model frame per axis, and the +3 px margin stays 3 MODEL-FRAME pixels. Without it (the challenge path) the
results are LiteMedSAM's exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from ...io.label_values import MAX_LABEL, label_dtype
from .boxes import InvalidBoxError, box_to_model, mask_bbox_model, validate_box
from .predictor import Embedding, Predictor
from .preprocess import FrameInfo

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
SliceCallback = Callable[[int, np.ndarray], None]


class PropagationCancelled(Exception):
    """Raised when the cancel flag is set; ``labels`` holds what was finished so far."""

    def __init__(self, labels: np.ndarray) -> None:
        super().__init__("propagation cancelled")
        self.labels = labels


@dataclass(frozen=True)
class Box3D:
    """A 3D box prompt with its slice range clipped to the volume and its middle slice."""

    xyxy: np.ndarray  # (4,) x0, y0, x1, y1 image pixels
    z0: int
    z1: int
    zmid: int

    @classmethod
    def from_array(cls, box: np.ndarray, depth: int, start: int | None = None) -> Box3D:
        """``start``: the slice to begin on (e.g. where the user drew the box); default the middle slice."""
        x0, y0, z0, x1, y1, z1 = (float(v) for v in np.asarray(box).reshape(6))
        if not np.all(np.isfinite([x0, y0, z0, x1, y1, z1])):
            raise InvalidBoxError(f"a 3D box needs 6 finite numbers, got {[x0, y0, z0, x1, y1, z1]}")
        z0i, z1i = sorted((round(z0), round(z1)))
        if z1i < 0 or z0i > depth - 1:
            raise ValueError(f"box slices {z0i}..{z1i} lie outside the volume (0..{depth - 1})")
        z0i, z1i = max(z0i, 0), min(z1i, depth - 1)
        zmid = int((z1i - z0i) / 2 + z0i) if start is None else int(start)
        if not z0i <= zmid <= z1i:
            raise ValueError(f"start slice {zmid} is outside the box's slices {z0i}..{z1i}")
        return cls(np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]), z0i, z1i, zmid)

    def clipped(self, size: tuple[int, int]) -> Box3D:
        """The box with its x/y part checked and clipped to an (H, W) slice as a 2D box is (:func:`validate_box`)."""
        return dataclasses.replace(self, xyxy=validate_box(self.xyxy, size))


def _check_label_values(label_values: list[int] | None, n_boxes: int) -> list[int]:
    """``label_values`` (default 1..n) checked before any work: one whole number in 1..65535 per box."""
    if label_values is None:
        return list(range(1, n_boxes + 1))
    values = list(label_values)
    if len(values) != n_boxes:
        raise ValueError(f"{len(values)} label values for {n_boxes} boxes")
    bad = [v for v in values if isinstance(v, bool) or int(v) != v or not 1 <= int(v) <= MAX_LABEL]
    if bad:
        raise ValueError(f"label values must be whole numbers from 1 to {MAX_LABEL}, got {bad}")
    return [int(v) for v in values]


def slice_prompt(box: Box3D, neighbour: np.ndarray | None, frame: FrameInfo) -> np.ndarray:
    """The model-frame box (4,) propagation prompts a slice with: the bbox (+3 model pixels) of ``neighbour``, the
    mask of the slice before it in the sweep; the 3D box's rectangle without one (the start slice) or when it is
    empty (the challenge's rule)."""
    prompt = None if neighbour is None else mask_bbox_model(neighbour, pixel_aspect=frame.pixel_aspect)
    return box_to_model(box.xyxy, frame.original_size, frame.pixel_aspect) if prompt is None else prompt


def _encode(
    predictor: Predictor, image: np.ndarray, key: Hashable | None, pixel_spacing: tuple[float, float] | None
) -> Embedding:
    """``predictor.encode``; the spacing is passed only when given, so predictors predating it keep working."""
    if pixel_spacing is None:
        return predictor.encode(image, key=key)
    return predictor.encode(image, key=key, pixel_spacing=pixel_spacing)


def segment_slice(
    predictor: Predictor,
    image: np.ndarray,
    boxes: np.ndarray,
    key: Hashable | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    label_values: list[int] | None = None,
) -> np.ndarray:
    """2D: boxes (N, 4) image pixels on one image (H, W[, 3]) -> labels (H, W), ``label_values[i]`` (default
    i + 1; 1..65535, else ValueError) for box i, later boxes win. ``pixel_spacing``: (column, row) mm of the
    image's pixels (None: square). Boxes are checked by :func:`validate_box` (zero width or height is fine)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    values = _check_label_values(label_values, len(boxes))
    labels = np.zeros(image.shape[:2], dtype=label_dtype(max(values, default=1)))
    if len(boxes) == 0:
        return labels
    emb = _encode(predictor, image, key, pixel_spacing)
    pred = predictor.decode(emb, boxes)
    for value, mask in zip(values, pred.masks):
        labels[mask] = value
    return labels


def propagate_boxes(
    predictor: Predictor,
    volume: np.ndarray,
    boxes3d: np.ndarray,
    volume_key: Hashable | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    on_slice: SliceCallback | None = None,
    label_values: list[int] | None = None,
    start_slices: list[int] | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    stop_when_empty: bool = False,
    fixed_masks: list[dict[int, np.ndarray]] | None = None,
) -> np.ndarray:
    """Segment a volume (D, H, W) or (D, H, W, 3) in display range from 3D boxes (N, 6).

    The x/y part of each box is checked and clipped like a 2D box (:func:`validate_box`: NaN or outside boxes
    raise :class:`~medsam_desktop.core.inference.boxes.InvalidBoxError`; zero width, height or depth is a valid prompt).

    Returns labels (D, H, W) with ``label_values[i]`` (default i + 1; 1..65535, else ValueError) for box i.
    ``progress(done, total)`` counts slice visits; ``on_slice(z, labels[z])`` is called when a slice changes;
    setting ``cancel`` stops between slices with :class:`PropagationCancelled`. ``start_slices[i]`` replaces
    box i's middle slice as the slice segmented with the 2D box (the app starts where the user drew it).
    ``pixel_spacing``: (column, row) mm of every slice's pixels (None: square pixels, the challenge's
    preprocessing).

    ``stop_when_empty`` (the app's "until the mask disappears"): a box whose mask comes back empty on a slice is
    not carried further in that direction (an empty start slice stops both), instead of being re-prompted with
    the original box (the challenge's rule, the default). Slices never visited stay 0.

    ``fixed_masks[i]`` maps slice -> (H, W) bool mask of box i that is kept as it is (a slice corrected with clicks):
    on such a slice nothing is decoded for box i, the mask is written and the sweep continues from it.
    """
    depth = volume.shape[0]
    raw = np.asarray(boxes3d).reshape(-1, 6)
    starts = start_slices if start_slices is not None else [None] * len(raw)
    if len(starts) != len(raw):
        raise ValueError(f"{len(starts)} start slices for {len(raw)} boxes")
    size = (int(volume.shape[1]), int(volume.shape[2]))
    boxes = [Box3D.from_array(b, depth, z) for b, z in zip(raw, starts)]
    boxes = [b.clipped(size) for b in boxes]  # same rules as 2D
    values = _check_label_values(label_values, len(boxes))
    fixed = fixed_masks if fixed_masks is not None else [{} for _ in boxes]
    if len(fixed) != len(boxes):
        raise ValueError(f"{len(fixed)} fixed-mask sets for {len(boxes)} boxes")
    labels = np.zeros(volume.shape[:3], dtype=label_dtype(max(values, default=1)))
    if not boxes:
        return labels
    up = sorted({z for b in boxes for z in range(b.zmid, b.z1 + 1)})
    down = sorted({z for b in boxes for z in range(b.z0, b.zmid)}, reverse=True)
    keep = set(up) & set(down)
    kept: dict[int, Embedding] = {}
    # slices kept for the second sweep are stored as float16 (half the memory) when that is lossless
    compact = volume_key is not None and bool(getattr(predictor, "serves_float16", False))
    total, done = len(up) + len(down), 0
    prev: list[np.ndarray | None] = [None] * len(boxes)
    mid_masks: list[np.ndarray | None] = [None] * len(boxes)

    def embedding(z: int) -> Embedding:
        if z in kept:
            held = kept.pop(z)
            return dataclasses.replace(held, array=held.array.astype(np.float32)) if compact else held
        key = None if volume_key is None else (volume_key, z)
        emb = _encode(predictor, volume[z], key, pixel_spacing)
        if z in keep:
            kept[z] = dataclasses.replace(emb, array=emb.array.astype(np.float16)) if compact else emb
        return emb

    def visit(z: int, active: list[int], upward: bool) -> None:
        decoded = [i for i in active if z not in fixed[i]]
        emb = embedding(z) if decoded else None
        prompts = []
        for i in decoded:
            b = boxes[i]
            neighbour = None
            if not (upward and z == b.zmid):  # the first slice below the start continues from the start's mask
                neighbour = mid_masks[i] if not upward and z == b.zmid - 1 else prev[i]
            prompts.append(slice_prompt(b, neighbour, emb.frame))
        masks = (
            dict(zip(decoded, predictor.decode_model_boxes(emb, np.stack(prompts)).masks)) if emb is not None else {}
        )
        sl = labels[z]
        for i in active:
            mask = masks[i] if i in masks else np.asarray(fixed[i][z], bool)
            prev[i] = mask
            if upward and z == boxes[i].zmid:
                mid_masks[i] = mask
            value = values[i]
            sl[mask & (sl < value)] = value
        if on_slice is not None:
            on_slice(z, sl)

    mid_empty: set[int] = set()
    for upward, order in ((True, up), (False, down)):
        prev = [None] * len(boxes)
        stopped: set[int] = set() if upward else set(mid_empty)
        for z in order:
            if cancel is not None and cancel.is_set():
                raise PropagationCancelled(labels)
            if upward:
                active = [i for i, b in enumerate(boxes) if b.zmid <= z <= b.z1 and i not in stopped]
            else:
                active = [i for i, b in enumerate(boxes) if b.z0 <= z < b.zmid and i not in stopped]
            if not active:
                if stop_when_empty and len(stopped) == len(boxes):
                    break  # every box has run out of mask in this direction
                continue
            visit(z, active, upward)
            if stop_when_empty:
                for i in active:
                    mask = prev[i]
                    if mask is not None and not mask.any():
                        stopped.add(i)
                        if upward and z == boxes[i].zmid:
                            mid_empty.add(i)
            done += 1
            if progress is not None:
                progress(done, total)
    return labels
