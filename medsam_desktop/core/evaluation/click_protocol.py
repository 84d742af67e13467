"""The box-then-clicks protocol on one challenge case (CVPR 2025 interactive track, as simulated here).

Each object starts from its box-only mask, exactly as ``medsam-infer`` without clicks segments the case. Then
``clicks`` rounds: every object whose mask still differs from its ground truth gets one click
(:func:`~.clicks.next_click`) and its mask is decoded again by the click path with all its clicks so far and
the previous logits as the mask prompt (no re-encode).

- 2D: the clicks go on the image.
- 3D: the click goes on the slice of the object's box range with the most error voxels. That slice is decoded
  with the prompt propagation gave it (the 3D box's rectangle on the start slice, else the bbox + 3 model pixels
  of the neighbour's mask towards the start), so the clicks correct the mask shown, and its clicks.
  Slices corrected earlier keep their masks. Then the object's propagation is re-run from the corrected slice
  away from its start slice (the box's middle slice) to the end of its box range: exactly the slices that were
  propagated through the corrected one (``propagate_boxes(fixed_masks=...)``); the others stay.

After the box and after every round the case is scored as ``medsam-eval`` scores it (DSC, NSD), giving a curve
of ``clicks + 1`` points, per case (the mean over its objects) and per object (``objects``, the ground truth's
labels, and their DSC and NSD: issue #19 states its goal over objects). ``auc`` is the trapezoidal area under the
points of clicks 1..K over a unit step, divided by K - 1, i.e. a mean that weighs every click interval equally
(the box itself is not in it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..inference.boxes import box_from_model
from ..inference.cache import EmbeddingCache
from ..inference.challenge import usable_objects
from ..inference.clicks import ClickPoint, ClickRefiner, model_image
from ..inference.predictor import Predictor
from ..inference.propagation import Box3D, propagate_boxes, slice_prompt
from .clicks import largest_error_slice, next_click
from .metrics import evaluate_case

log = logging.getLogger(__name__)

#: embeddings kept for re-propagating a 3D case after each click (fp32: the same values on every pass)
CLICK_CACHE_BYTES = 1536 * 2**20


@dataclass
class ClickCurve:
    """DSC and NSD of a case after the box (index 0) and after each click round (index k); ``object_dsc[k]`` and
    ``object_nsd[k]`` hold the same per object, aligned with ``objects`` (the ground truth's labels)."""

    dsc: list[float] = field(default_factory=list)
    nsd: list[float] = field(default_factory=list)
    objects: tuple[int, ...] = ()
    object_dsc: list[tuple[float, ...]] = field(default_factory=list)
    object_nsd: list[tuple[float, ...]] = field(default_factory=list)

    @staticmethod
    def _auc(values: list[float]) -> float:
        v = np.asarray(values[1:], np.float64)
        if len(v) < 2:
            return float(v[0]) if len(v) else float("nan")
        return float(np.sum((v[1:] + v[:-1]) / 2) / (len(v) - 1))

    def object_rows(self) -> list[tuple[int, int, float, float]]:
        """(label, click, DSC, NSD) per object and click, objects in label order, click 0 = the box."""
        return [
            (label, k, self.object_dsc[k][j], self.object_nsd[k][j])
            for j, label in enumerate(self.objects)
            for k in range(len(self.object_dsc))
        ]

    @property
    def dsc_auc(self) -> float:
        return self._auc(self.dsc)

    @property
    def nsd_auc(self) -> float:
        return self._auc(self.nsd)


def _compose(shape: tuple[int, ...], masks: dict[int, np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Label map from per-object masks (label -> mask): a larger label wins where masks overlap (the challenge)."""
    out = np.zeros(shape, dtype)
    for value in sorted(masks):
        out[masks[value]] = value
    return out


def _score(curve: ClickCurve, segs: np.ndarray, gts: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    m = evaluate_case(segs, gts, spacing)
    curve.dsc.append(float(m.dsc))
    curve.nsd.append(float(m.nsd))
    curve.objects = m.labels
    curve.object_dsc.append(tuple(float(v) for v in m.dsc_per_label))
    curve.object_nsd.append(tuple(float(v) for v in m.nsd_per_label))


def clicks_2d(
    predictor: Predictor, refiner: ClickRefiner, image: np.ndarray, boxes: np.ndarray, gts: np.ndarray, clicks: int,
    name: str = "case",
) -> tuple[np.ndarray, ClickCurve]:  # fmt: skip
    """(H, W[, 3]) image, (N, 4) boxes, (H, W) ground truth -> segs after the last round and the curve."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    usable = usable_objects(boxes, (1, int(image.shape[0]), int(image.shape[1])), name)
    curve = ClickCurve()
    dtype = np.uint16 if len(boxes) > 255 else np.uint8
    if not usable:
        segs = np.zeros(gts.shape, dtype)
        for _ in range(clicks + 1):
            _score(curve, segs, gts, None)
        return segs, curve
    emb = predictor.encode(image)
    first = predictor.decode(emb, boxes[usable])
    masks = {i + 1: first.masks[k] for k, i in enumerate(usable)}
    logits = {i + 1: first.logits[k] for k, i in enumerate(usable)}
    points: dict[int, list[ClickPoint]] = {v: [] for v in masks}
    segs = _compose(gts.shape, masks, dtype)
    _score(curve, segs, gts, None)
    slice_image = model_image(image) if clicks and refiner.needs_image else None
    for _ in range(clicks):
        for i in usable:
            v = i + 1
            c = next_click(masks[v], gts == v)
            if c is None:
                continue
            points[v].append(c)
            pred = refiner.refine(emb, boxes[i], points[v], logits[v], slice_image)
            masks[v], logits[v] = pred.masks[0], pred.logits[0]
        segs = _compose(gts.shape, masks, dtype)
        _score(curve, segs, gts, None)
    return segs, curve


@dataclass
class _SliceState:
    box: np.ndarray
    logits: np.ndarray
    points: list[ClickPoint] = field(default_factory=list)


def clicks_3d(
    predictor: Predictor, refiner: ClickRefiner, volume: np.ndarray, boxes: np.ndarray, gts: np.ndarray,
    spacing_zyx: tuple[float, float, float], clicks: int, name: str = "case",
) -> tuple[np.ndarray, ClickCurve]:  # fmt: skip
    """(D, H, W) volume, (N, 6) boxes, (D, H, W) ground truth -> segs after the last round and the curve."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 6)
    shape = tuple(int(s) for s in volume.shape[:3])
    usable = usable_objects(boxes, shape, name)  # type: ignore[arg-type]
    curve = ClickCurve()
    values = [i + 1 for i in usable]
    segs = (
        propagate_boxes(predictor, volume, boxes[usable], label_values=values) if usable else np.zeros(shape, np.uint8)
    )
    _score(curve, segs, gts, spacing_zyx)
    if not usable:
        for _ in range(clicks):
            _score(curve, segs, gts, spacing_zyx)
        return segs, curve
    cached = Predictor(predictor.backend, EmbeddingCache(CLICK_CACHE_BYTES, fp16=False))
    masks = {v: segs == v for v in values}
    state: dict[int, dict[int, _SliceState]] = {v: {} for v in values}
    images: dict[int, np.ndarray | None] = {}  # model-frame slices for a refining click path, made once each
    for _ in range(clicks):
        for i in usable:
            v = i + 1
            b = Box3D.from_array(boxes[i], shape[0]).clipped(shape[1:3])  # as propagation clips it
            truth = gts == v
            z = largest_error_slice(masks[v][b.z0 : b.z1 + 1], truth[b.z0 : b.z1 + 1])
            if z is None:
                continue
            z += b.z0
            c = next_click(masks[v][z], truth[z])
            assert c is not None
            emb = cached.encode(volume[z], key=("click", z))
            st = state[v].get(z)
            if st is None:  # the prompt propagation gave this slice, so the clicks correct the mask shown
                neighbour = None
                if z != b.zmid:  # the neighbour towards the start slice
                    neighbour = masks[v][z - 1] if z > b.zmid else masks[v][z + 1]
                prompt = slice_prompt(b, neighbour, emb.frame)
                st = state[v][z] = _SliceState(box_from_model(prompt, emb.frame.original_size), np.zeros(0))
                st.logits = predictor.decode_model_boxes(emb, prompt[None]).logits[0]
            st.points.append(c)
            if z not in images:
                images[z] = model_image(volume[z]) if refiner.needs_image else None
            pred = refiner.refine(emb, st.box, st.points, st.logits, images[z])
            st.logits = pred.logits[0]
            # the slices propagated through z (away from the box's start slice) are re-run from the corrected
            # slice; those between the start and z never depended on z and stay
            lo, hi = (z, b.z1) if z >= b.zmid else (b.z0, z)
            fixed = {zz: masks[v][zz] for zz in state[v] if lo <= zz <= hi}  # corrected slices keep their masks
            fixed[z] = pred.masks[0]
            x0, y0, x1, y1 = b.xyxy
            part = np.array([[x0, y0, lo, x1, y1, hi]])
            out = propagate_boxes(cached, volume, part, volume_key="click", start_slices=[z], fixed_masks=[fixed])
            masks[v][lo : hi + 1] = out[lo : hi + 1] == 1
        segs = _compose(shape, masks, segs.dtype)
        _score(curve, segs, gts, spacing_zyx)
    return segs, curve
