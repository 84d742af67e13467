"""Segmentation metrics of the CVPR 2024 "MedSAM on Laptop" challenge: DSC and NSD.

Semantics follow DeepMind's ``surface-distance`` package (the code the challenge's
``compute_metrics.py`` imports as ``SurfaceDice``); the implementation here is our own
vectorised numpy/scipy code and does not depend on that package.

Surface model
    A mask of shape ``S`` (2D ``(H, W)`` or 3D ``(D, H, W)``) is read as a set of voxels.
    Its surface lives on the *corner grid* of shape ``S + 1``: corner ``p`` touches the
    ``2**ndim`` voxels ``p - 1 + d`` for ``d`` in ``{0, 1}**ndim`` (voxels outside the array
    count as background). A corner whose neighbourhood is neither all-background nor
    all-foreground is a surface element ("surfel"); its size is the length (2D) or area (3D)
    of the marching-squares / marching-cubes surface inside that 2x2(x2) cell, with
    vertices at edge midpoints, scaled by the voxel spacing. Our 3D table is generated, not
    copied: ambiguous cube faces separate the minority corners, and each (possibly
    non-planar) polygon is triangulated to maximise its area. This reproduces the
    reference's 256-entry table exactly for any spacing (checked in tests/test_metrics.py).

Distances
    Each surfel of one mask gets the Euclidean distance (in spacing units, e.g. mm) from its
    corner to the nearest surfel corner of the other mask
    (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``); an empty other mask
    gives ``inf``. The normalised surface Dice at tolerance ``tau`` is
    ``(sum(area_gt[d_gt <= tau]) + sum(area_pred[d_pred <= tau])) / (sum(area_gt) + sum(area_pred))``.

Conventions
    Both masks empty: DSC and NSD are NaN (as the reference); exactly one empty: NSD 0.
    2D challenge cases are scored by :func:`evaluate_case` as ``(H, W, 1)`` slabs with
    spacing 1 and a 2-pixel tolerance, exactly as the challenge's ``compute_metrics.py``
    (``np.expand_dims(..., -1)``, ``spacing = [1.0, 1.0, 1.0]``).

Axis order
    ``spacing`` always lists one value per array axis, in the array's axis order; for the
    challenge's 3D ``.npz`` files both ``gts`` and ``spacing`` are ``(z, y, x)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

__all__ = [
    "CaseMetrics",
    "SurfaceDistances",
    "dice",
    "evaluate_case",
    "normalized_surface_dice",
    "surface_dice_from_distances",
    "surface_distances",
]

# --------------------------------------------------------------------------------------
# Neighbour codes and surfel-size lookup tables
# --------------------------------------------------------------------------------------
# A corner's neighbour code has one bit per neighbouring voxel ``d`` in ``{0, 1}**ndim``
# (``d`` = offset of the voxel from ``corner - 1``). The voxel with ``d = (0, ..., 0)``
# is the most significant bit, ``d = (1, ..., 1)`` the least significant one; this is the
# bit order of the reference's encoding kernels, so codes are comparable one to one.


def _corner_bit(d: Sequence[int]) -> int:
    """Bit index of the neighbour voxel with offset ``d`` (row-major, first = MSB)."""
    n = len(d)
    return (2**n - 1) - int(sum(v << (n - 1 - i) for i, v in enumerate(d)))


def _cube_edges(ndim: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Edges of the unit square/cube as pairs of corner offsets that differ on one axis."""
    corners = list(itertools.product((0, 1), repeat=ndim))
    return [
        (a, b) for a, b in itertools.combinations(corners, 2) if sum(abs(x - y) for x, y in zip(a, b, strict=True)) == 1
    ]


_EDGES_2D = _cube_edges(2)
_EDGES_3D = _cube_edges(3)
_MIDPOINTS_2D = np.array([np.add(a, b) / 2.0 for a, b in _EDGES_2D])
_MIDPOINTS_3D = np.array([np.add(a, b) / 2.0 for a, b in _EDGES_3D])
# The six cube faces, each as the indices of its four edges.
_FACES_3D = [
    [i for i, (a, b) in enumerate(_EDGES_3D) if a[axis] == side and b[axis] == side]
    for axis in range(3)
    for side in (0, 1)
]


def _polygons(code: int) -> list[list[int]]:
    """Marching-cubes polygons of one 2x2x2 configuration, as cycles of edge indices."""
    inside = {d: bool(code >> _corner_bit(d) & 1) for d in itertools.product((0, 1), repeat=3)}
    # Ambiguous faces (two diagonal foreground and two background corners): separate the
    # minority corners, i.e. treat a code and its complement alike (either way for 4 of 8).
    separate_inside = sum(inside.values()) <= 4
    crossing = {i for i, (a, b) in enumerate(_EDGES_3D) if inside[a] != inside[b]}
    neighbours: dict[int, list[int]] = {i: [] for i in crossing}
    for face in _FACES_3D:
        cut = [i for i in face if i in crossing]
        if len(cut) == 2:
            pairs = [tuple(cut)]
        elif len(cut) == 4:  # ambiguous face: two diagonal corners of each kind
            pairs = []
            for i, j in itertools.combinations(cut, 2):
                shared = set(_EDGES_3D[i]) & set(_EDGES_3D[j])
                if shared and inside[shared.pop()] == separate_inside:
                    pairs.append((i, j))
        else:
            pairs = []
        for i, j in pairs:
            neighbours[i].append(j)
            neighbours[j].append(i)
    cycles: list[list[int]] = []
    seen: set[int] = set()
    for start in sorted(crossing):
        if start in seen:
            continue
        cycle, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [v for v in neighbours[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            cycle.append(cur)
            seen.add(cur)
        cycles.append(cycle)
    return cycles


def _triangulations(poly: list[int]) -> list[list[tuple[int, int, int]]]:
    """All triangulations of a polygon given as a vertex cycle."""
    if len(poly) < 3:
        return [[]]
    if len(poly) == 3:
        return [[(poly[0], poly[1], poly[2])]]
    first, last = poly[0], poly[-1]
    result = []
    for k in range(1, len(poly) - 1):
        for left in _triangulations(poly[: k + 1]):
            for right in _triangulations(poly[k:]):
                result.append([*left, *right, (first, poly[k], last)])
    return result


def _triangle_normal(tri: tuple[int, int, int]) -> np.ndarray:
    """Area vector (half the cross product) of an isotropic edge-midpoint triangle."""
    p0, p1, p2 = (_MIDPOINTS_3D[i] for i in tri)
    return 0.5 * np.cross(p1 - p0, p2 - p0)


def _max_area_triangulation(poly: list[int]) -> list[tuple[int, int, int]]:
    """The triangulation of a (possibly non-planar) polygon with the largest isotropic area.

    Ties are harmless: tied triangulations differ only in how they split coplanar parts
    (parallel area vectors), so their areas agree for every spacing.
    """

    def area(tris: list[tuple[int, int, int]]) -> float:
        return round(float(sum(np.linalg.norm(_triangle_normal(t)) for t in tris)), 9)

    return max(_triangulations(poly), key=area)


@lru_cache(maxsize=1)
def _triangle_table_3d() -> np.ndarray:
    """``(n, 4)`` int array of rows ``(code, e0, e1, e2)``: every surfel triangle."""
    rows = []
    for code in range(1, 255):
        for poly in _polygons(code):
            rows.extend((code, *tri) for tri in _max_area_triangulation(poly))
    return np.array(rows, dtype=np.int64)


@lru_cache(maxsize=64)
def _surfel_size_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Surfel length (2D) or area (3D) for every neighbour code, in spacing units.

    Returns a float64 array of ``2 ** 2**ndim`` entries (16 in 2D, 256 in 3D).
    """
    s = np.asarray(spacing, dtype=np.float64)
    if s.size == 2:
        table = np.zeros(16)
        for code in range(1, 15):
            inside = {d: bool(code >> _corner_bit(d) & 1) for d in itertools.product((0, 1), repeat=2)}
            cut = [i for i, (a, b) in enumerate(_EDGES_2D) if inside[a] != inside[b]]
            pts = _MIDPOINTS_2D[cut] * s
            if len(cut) == 2:
                table[code] = np.linalg.norm(pts[0] - pts[1])
            else:  # two diagonal corners: two segments; either pairing has the same length
                table[code] = np.linalg.norm(pts[0] - pts[1]) + np.linalg.norm(pts[2] - pts[3])
        return table
    tris = _triangle_table_3d()
    p0, p1, p2 = (_MIDPOINTS_3D[tris[:, k]] * s for k in (1, 2, 3))
    areas = 0.5 * np.linalg.norm(np.cross(p1 - p0, p2 - p0), axis=1)
    return np.bincount(tris[:, 0], weights=areas, minlength=256)


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every corner of ``mask``: uint8 array of shape ``mask.shape + 1``."""
    padded = np.pad(mask.astype(np.uint8, copy=False), 1)
    out_shape = tuple(n + 1 for n in mask.shape)
    codes = np.zeros(out_shape, dtype=np.uint8)
    for d in itertools.product((0, 1), repeat=mask.ndim):
        window = padded[tuple(slice(o, o + n) for o, n in zip(d, out_shape, strict=True))]
        codes |= window << np.uint8(_corner_bit(d))
    return codes


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the non-zero voxels as slices, or ``None`` if empty."""
    box = []
    for axis in range(mask.ndim):
        proj = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if proj.size == 0:
            return None
        box.append(slice(int(proj[0]), int(proj[-1]) + 1))
    return tuple(box)


def _check_pair(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, ...]:
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs gt {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"only 2D and 3D masks are supported, got {pred.ndim}D")
    if spacing is None:
        return (1.0,) * pred.ndim
    sp = tuple(float(v) for v in np.asarray(spacing, dtype=np.float64).ravel())
    if len(sp) != pred.ndim:
        raise ValueError(f"spacing {sp} has {len(sp)} values for a {pred.ndim}D mask")
    if not all(math.isfinite(v) and v > 0 for v in sp):
        raise ValueError(f"spacing must be positive and finite, got {sp}")
    return sp


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient ``2|P & G| / (|P| + |G|)`` of two same-shape masks.

    Any shape; non-zero means foreground. Returns NaN when both masks are empty (as the
    reference ``compute_dice_coefficient`` does); :func:`evaluate_case` never hits that case
    because it only scores labels present in the ground truth.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs gt {gt.shape}")
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(pred & gt)) / total


@dataclass(frozen=True)
class SurfaceDistances:
    """Surfels of both masks with their distance to the other mask's surface.

    All arrays are 1D float64, one entry per surfel, in C order of the corner grid
    (not sorted). Sizes are lengths (2D) or areas (3D) in spacing units.
    """

    distances_gt_to_pred: np.ndarray
    distances_pred_to_gt: np.ndarray
    surfel_areas_gt: np.ndarray
    surfel_areas_pred: np.ndarray


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Surfels of ``pred`` and ``gt`` and their closest distance to the other surface.

    ``pred`` and ``gt``: same-shape 2D ``(H, W)`` or 3D ``(D, H, W)`` masks (non-zero =
    foreground). ``spacing``: voxel size per axis in the arrays' axis order (default 1).
    Work is restricted to the bounding box of ``pred | gt``. If one mask is empty its arrays
    are empty and the other mask's distances are ``inf``.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    sp = _check_pair(pred, gt, spacing)
    empty = np.zeros(0, dtype=np.float64)
    box = _bounding_box(pred | gt)
    if box is None:
        return SurfaceDistances(empty, empty, empty, empty)
    table = _surfel_size_table(sp)
    full = np.uint8(2**2**pred.ndim - 1)

    def surfels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = _neighbour_codes(mask[box])
        border = (codes != 0) & (codes != full)
        return border, table[codes[border]]

    border_pred, areas_pred = surfels(pred)
    border_gt, areas_gt = surfels(gt)

    def distances_to(border_target: np.ndarray, border_source: np.ndarray) -> np.ndarray:
        n_source = int(np.count_nonzero(border_source))
        if not border_target.any():
            return np.full(n_source, np.inf)
        if n_source == 0:
            return empty
        dist = ndimage.distance_transform_edt(~border_target, sampling=sp)
        return dist[border_source].astype(np.float64, copy=False)

    return SurfaceDistances(
        distances_gt_to_pred=distances_to(border_pred, border_gt),
        distances_pred_to_gt=distances_to(border_gt, border_pred),
        surfel_areas_gt=areas_gt,
        surfel_areas_pred=areas_pred,
    )


def surface_dice_from_distances(sd: SurfaceDistances, tolerance: float) -> float:
    """Normalised surface Dice at ``tolerance`` (same unit as spacing; ``<=`` counts).

    NaN when both surfaces are empty, 0.0 when exactly one is.
    """
    total = float(sd.surfel_areas_gt.sum() + sd.surfel_areas_pred.sum())
    if total == 0.0:
        return float("nan")
    overlap = float(sd.surfel_areas_gt[sd.distances_gt_to_pred <= tolerance].sum()) + float(
        sd.surfel_areas_pred[sd.distances_pred_to_gt <= tolerance].sum()
    )
    return overlap / total


def normalized_surface_dice(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, tolerance_mm: float = 2.0
) -> float:
    """Normalised surface Dice (NSD) of two same-shape 2D ``(H, W)`` or 3D ``(D, H, W)`` masks.

    ``spacing`` per axis in array order (default 1); ``tolerance_mm`` in the same unit.
    A 2D input is scored with contour lengths; to score a 2D case the way the challenge
    does (as a one-voxel-thick slab) use :func:`evaluate_case`.
    """
    return surface_dice_from_distances(surface_distances(pred, gt, spacing), tolerance_mm)


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one multi-label case.

    ``labels`` are the ground-truth labels scored (ascending); ``dsc_per_label`` and
    ``nsd_per_label`` are aligned with them. ``dsc``/``nsd`` are their means (NaN when the
    ground truth has no foreground). ``nsd_computed`` is False when the case DSC was not
    above the threshold, in which case every NSD is 0.0.
    """

    labels: tuple[int, ...]
    dsc_per_label: tuple[float, ...]
    nsd_per_label: tuple[float, ...]
    dsc: float
    nsd: float
    nsd_computed: bool

    @property
    def n_labels(self) -> int:
        return len(self.labels)


def evaluate_case(
    seg: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance: float = 2.0,
    nsd_dsc_threshold: float = 0.2,
    planar_as_slab: bool = True,
) -> CaseMetrics:
    """Score a multi-label segmentation the way the CVPR 2024 challenge does.

    ``seg``, ``gt``: same-shape integer label maps, 2D ``(H, W)`` or 3D ``(D, H, W)``;
    0 is background. ``spacing``: per-axis voxel size in array order (3D: ``(z, y, x)``
    in mm); default 1 for every axis. ``tolerance``: NSD tolerance in spacing units.

    * Labels scored: every label ``1..max(gt)`` that occurs in ``gt`` (the challenge loops
      over ``range(1, gt.max() + 1)``; a label missing from ``gt`` would make its mean NaN).
    * Case DSC = mean of the per-label DSCs. NSD is computed only when the case DSC is
      ``> nsd_dsc_threshold``; otherwise every NSD is 0.0 (challenge rule, applied to the
      case mean, not per label). Case NSD = mean of the per-label NSDs.
    * 2D cases: with ``planar_as_slab`` (default, challenge behaviour) masks are scored as
      ``(H, W, 1)`` volumes with spacing ``(*spacing, 1.0)``, i.e. pixel units and a 2-pixel
      tolerance by default; otherwise with 2D contours.
    """
    seg = np.asarray(seg)
    gt = np.asarray(gt)
    sp = _check_pair(seg, gt, spacing)
    if not (np.issubdtype(gt.dtype, np.integer) or gt.dtype == bool):
        raise ValueError(f"gt must hold integer labels, got dtype {gt.dtype}")
    if not (np.issubdtype(seg.dtype, np.integer) or seg.dtype == bool):
        raise ValueError(f"seg must hold integer labels, got dtype {seg.dtype}")
    if gt.ndim == 2 and planar_as_slab:
        seg, gt, sp = seg[..., None], gt[..., None], (*sp, 1.0)

    if gt.dtype == bool:
        gt = gt.view(np.uint8)
    if seg.dtype == bool:
        seg = seg.view(np.uint8)
    max_label = int(gt.max(initial=0))
    if max_label <= 0:
        nan = float("nan")
        return CaseMetrics((), (), (), nan, nan, False)
    # Bounding boxes per label; labels < 1 or > max_label are ignored by find_objects.
    gt_boxes = ndimage.find_objects(gt, max_label)
    seg_boxes = ndimage.find_objects(seg, max_label)

    labels: list[int] = []
    crops: list[tuple[np.ndarray, np.ndarray]] = []
    for label, (g_box, s_box) in enumerate(zip(gt_boxes, seg_boxes, strict=True), start=1):
        if g_box is None:
            continue
        box = (
            g_box
            if s_box is None
            else tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(g_box, s_box, strict=True))
        )
        labels.append(label)
        crops.append((seg[box] == label, gt[box] == label))

    dscs = tuple(dice(p, g) for p, g in crops)
    case_dsc = float(np.mean(dscs))
    compute_nsd = case_dsc > nsd_dsc_threshold
    if compute_nsd:
        nsds = tuple(normalized_surface_dice(p, g, sp, tolerance) for p, g in crops)
    else:
        nsds = (0.0,) * len(labels)
    return CaseMetrics(tuple(labels), dscs, nsds, case_dsc, float(np.mean(nsds)), compute_nsd)
