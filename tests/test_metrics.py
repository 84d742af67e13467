"""DSC / NSD against DeepMind's ``surface-distance`` (test-only reference) and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medsam_desktop.core.evaluation import metrics
from medsam_desktop.core.evaluation.metrics import (
    dice,
    evaluate_case,
    normalized_surface_dice,
    surface_distances,
)

# the reference still imports from deprecated scipy.ndimage sub-namespaces
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:surface_distance")

TOL = 1e-4  # required agreement with the reference (observed: ~1e-15)


@pytest.fixture(scope="module")
def ref():
    """The reference package; it still uses ``np.Inf``/``np.NaN`` (removed in numpy 2)."""
    module = pytest.importorskip("surface_distance")
    added = [name for name, value in (("Inf", np.inf), ("NaN", np.nan)) if name not in vars(np)]
    for name in added:
        setattr(np, name, np.inf if name == "Inf" else np.nan)
    yield module
    for name in added:
        delattr(np, name)


def ref_nsd(ref, pred: np.ndarray, gt: np.ndarray, spacing, tolerance: float) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = ref.compute_surface_distances(gt.astype(bool), pred.astype(bool), list(spacing))
        return float(ref.compute_surface_dice_at_tolerance(sd, tolerance))


def ref_dice(ref, pred: np.ndarray, gt: np.ndarray) -> float:
    return float(ref.compute_dice_coefficient(gt.astype(bool), pred.astype(bool)))


def assert_close(mine: float, theirs: float, tol: float = TOL) -> None:
    if math.isnan(theirs):
        assert math.isnan(mine), f"expected NaN, got {mine}"
    else:
        assert abs(mine - theirs) <= tol, f"{mine} vs reference {theirs}"


def sorted_pairs(distances: np.ndarray, areas: np.ndarray) -> np.ndarray:
    order = np.lexsort((areas, distances))
    return np.stack([distances[order], areas[order]]) if distances.size else np.zeros((2, 0))


def ball(shape, center, radii) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center, radii, strict=True)) <= 1.0


def random_blobs(rng: np.random.Generator, shape, fill: float) -> np.ndarray:
    """Random masks with both speckle and smooth parts (exercises every neighbour code)."""
    from scipy import ndimage

    noise = ndimage.uniform_filter(rng.random(shape), size=2)
    return noise > np.quantile(noise, 1 - fill)


# --------------------------------------------------------------------------------------
# The lookup tables we build vs the reference's tables
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9), (0.3, 4.1, 1.7), (6.5, 0.78125, 0.78125)])
def test_surfel_area_table_matches_reference(ref, spacing):
    ours = metrics._surfel_size_table(spacing)
    theirs = ref.lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    assert ours.shape == (256,)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert ours[0] == 0.0 and ours[255] == 0.0
    s0, s1, s2 = spacing  # one corner voxel: triangle through three edge midpoints
    assert ours[1] == pytest.approx(0.5 * np.linalg.norm([s1 * s2, s0 * s2, s0 * s1]) / 4)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (2.5, 0.7), (0.3, 4.1)])
def test_contour_length_table_matches_reference(ref, spacing):
    ours = metrics._surfel_size_table(spacing)
    theirs = ref.lookup_tables.create_table_neighbour_code_to_contour_length(spacing)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# Random masks
# --------------------------------------------------------------------------------------

RANDOM_CASES = [
    ((17, 23), (1.0, 1.0)),
    ((31, 12), (0.7, 0.9)),
    ((9, 40), (2.5, 0.3)),
    ((11, 13, 9), (1.0, 1.0, 1.0)),
    ((12, 15, 14), (2.5, 0.7, 0.9)),
    ((6, 20, 18), (5.0, 0.8, 0.8)),
    ((14, 9, 16), (0.4, 1.9, 1.1)),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("shape", "spacing"), RANDOM_CASES)
def test_random_masks_match_reference(ref, shape, spacing, seed):
    rng = np.random.default_rng(seed)
    pred = random_blobs(rng, shape, rng.uniform(0.1, 0.6))
    gt = random_blobs(rng, shape, rng.uniform(0.1, 0.6))
    # tolerances on and between lattice distances exercise the `<=` comparison
    for tolerance in (0.0, spacing[0], 2.0, float(np.hypot(spacing[0], spacing[-1])), 3.3):
        assert_close(normalized_surface_dice(pred, gt, spacing, tolerance), ref_nsd(ref, pred, gt, spacing, tolerance))
    assert_close(dice(pred, gt), ref_dice(ref, pred, gt))

    ours = surface_distances(pred, gt, spacing)
    with np.errstate(invalid="ignore"):
        theirs = ref.compute_surface_distances(gt, pred, list(spacing))
    np.testing.assert_allclose(
        sorted_pairs(ours.distances_gt_to_pred, ours.surfel_areas_gt),
        sorted_pairs(theirs["distances_gt_to_pred"], theirs["surfel_areas_gt"]),
        rtol=0,
        atol=1e-9,
    )
    np.testing.assert_allclose(
        sorted_pairs(ours.distances_pred_to_gt, ours.surfel_areas_pred),
        sorted_pairs(theirs["distances_pred_to_gt"], theirs["surfel_areas_pred"]),
        rtol=0,
        atol=1e-9,
    )


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    ndim=st.sampled_from([2, 3]),
    tolerance=st.floats(0.0, 4.0),
)
def test_hypothesis_masks_match_reference(ref, data, ndim, tolerance):
    shape = data.draw(st.tuples(*[st.integers(1, 7)] * ndim), label="shape")
    spacing = data.draw(st.tuples(*[st.floats(0.25, 3.0)] * ndim), label="spacing")
    pred = data.draw(hnp.arrays(bool, shape), label="pred")
    gt = data.draw(hnp.arrays(bool, shape), label="gt")
    assert_close(normalized_surface_dice(pred, gt, spacing, tolerance), ref_nsd(ref, pred, gt, spacing, tolerance))
    assert_close(dice(pred, gt), ref_dice(ref, pred, gt))


# --------------------------------------------------------------------------------------
# Analytic masks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0, 1, 2, 4])
def test_sphere_shifted_matches_reference(ref, shift):
    spacing = (2.5, 0.7, 0.9)
    gt = ball((16, 40, 36), (8, 20, 18), (5, 12, 10))
    pred = np.roll(gt, shift, axis=2)
    for tolerance in (1.0, 2.0, 3.5):
        assert_close(normalized_surface_dice(pred, gt, spacing, tolerance), ref_nsd(ref, pred, gt, spacing, tolerance))
    if shift == 0:
        assert normalized_surface_dice(pred, gt, spacing, 0.0) == 1.0


@pytest.mark.parametrize("shift", [1, 3])
def test_disc_and_cube_shifted_match_reference(ref, shift):
    disc = ball((40, 40), (20, 20), (11, 11))
    assert_close(
        normalized_surface_dice(np.roll(disc, shift, 0), disc, (0.8, 1.3), 2.0),
        ref_nsd(ref, np.roll(disc, shift, 0), disc, (0.8, 1.3), 2.0),
    )
    cube = np.zeros((12, 14, 16), bool)
    cube[3:9, 4:10, 5:11] = True
    moved = np.roll(cube, (shift, -shift), axis=(0, 2))
    assert_close(
        normalized_surface_dice(moved, cube, (2.5, 0.7, 0.9), 2.0),
        ref_nsd(ref, moved, cube, (2.5, 0.7, 0.9), 2.0),
    )


@pytest.mark.parametrize("shape", [(9, 11), (5, 7, 6)])
def test_empty_and_border_cases(ref, shape):
    spacing = (1.5,) + (0.7,) * (len(shape) - 1)
    full = np.ones(shape, bool)  # touches every border of the array
    half = np.zeros(shape, bool)
    half[: shape[0] // 2] = True
    empty = np.zeros(shape, bool)
    for pred, gt in [(full, half), (half, full), (empty, half), (half, empty), (full, full)]:
        assert_close(normalized_surface_dice(pred, gt, spacing, 2.0), ref_nsd(ref, pred, gt, spacing, 2.0))
        assert_close(dice(pred, gt), ref_dice(ref, pred, gt))
    assert normalized_surface_dice(empty, half, spacing, 2.0) == 0.0
    assert normalized_surface_dice(half, empty, spacing, 2.0) == 0.0
    assert math.isnan(normalized_surface_dice(empty, empty, spacing, 2.0))
    assert math.isnan(dice(empty, empty))  # as the reference's compute_dice_coefficient
    sd = surface_distances(empty, half, spacing)
    assert sd.surfel_areas_pred.size == 0 and np.all(np.isinf(sd.distances_gt_to_pred))


def test_square_shifted_by_three_hand_computed():
    """10x10 px square vs. the same square shifted 3 px along axis 1 (2D contours, 1 px, tol 2).

    Contour: 40 corner surfels, 36 straight (length 1) + 4 square corners (length sqrt(2)/2),
    total 36 + sqrt(2). GT surfels within 2 px of the prediction's contour: top and bottom
    rows except the outer corner at distance 3 (9 straight + 1 corner each), and on the far
    wall the 2 + 2 corners within 2 px of the prediction's top/bottom edge: 22 + sqrt(2).
    By symmetry the same holds for the prediction, so NSD = (22 + sqrt 2) / (36 + 2 sqrt 2).
    """
    gt = np.zeros((20, 24), bool)
    gt[5:15, 4:14] = True
    pred = np.roll(gt, 3, axis=1)
    expected = (22 + math.sqrt(2)) / (36 + 2 * math.sqrt(2))
    assert normalized_surface_dice(pred, gt, (1.0, 1.0), 2.0) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.6030173, abs=1e-7)
    assert dice(pred, gt) == pytest.approx(0.7, abs=1e-12)  # 2*70 / 200
    sd = surface_distances(pred, gt, (1.0, 1.0))
    assert sd.surfel_areas_gt.sum() == pytest.approx(36 + 2 * math.sqrt(2))
    assert sorted(sd.distances_gt_to_pred)[-1] == pytest.approx(3.0)
    # a 1 px tolerance keeps 8 + 2 corners on the rows and 2 on the far wall
    assert normalized_surface_dice(pred, gt, (1.0, 1.0), 1.0) == pytest.approx(
        (2 * (8 + math.sqrt(2) / 2) + 2) / (36 + 2 * math.sqrt(2)), abs=1e-12
    )


# --------------------------------------------------------------------------------------
# evaluate_case
# --------------------------------------------------------------------------------------


def test_evaluate_case_averages_labels_3d(ref):
    spacing = (2.5, 0.7, 0.9)
    gt = np.zeros((10, 30, 30), np.uint8)
    gt[ball(gt.shape, (5, 10, 10), (3, 6, 6))] = 1
    gt[2:8, 15:25, 15:27] = 2
    gt[ball(gt.shape, (5, 22, 6), (2, 4, 4))] = 4  # label 3 absent from gt
    seg = np.zeros_like(gt)
    seg[np.roll(gt == 1, 1, axis=1)] = 1
    seg[np.roll(gt == 2, 2, axis=2)] = 2
    seg[gt == 4] = 4
    seg[0, 0, 0] = 3  # label absent from gt: ignored
    seg[9, 29, 29] = 7  # label above max(gt): ignored
    result = evaluate_case(seg, gt, spacing)
    assert result.labels == (1, 2, 4)
    assert result.n_labels == 3
    assert result.nsd_computed
    for i, label in enumerate(result.labels):
        p, g = seg == label, gt == label
        assert_close(result.dsc_per_label[i], ref_dice(ref, p, g))
        assert_close(result.nsd_per_label[i], ref_nsd(ref, p, g, spacing, 2.0))
    assert result.dsc_per_label[2] == 1.0 and result.nsd_per_label[2] == 1.0
    assert result.dsc_per_label[1] == pytest.approx(2 * (6 * 10 * 10) / (2 * 6 * 10 * 12))
    assert result.dsc == pytest.approx(np.mean(result.dsc_per_label), abs=1e-12)
    assert result.nsd == pytest.approx(np.mean(result.nsd_per_label), abs=1e-12)


def test_evaluate_case_2d_matches_challenge_slab(ref):
    """Challenge: 2D cases are scored as (H, W, 1) volumes, spacing (1, 1, 1), tolerance 2."""
    rng = np.random.default_rng(7)
    gt = np.zeros((40, 50), np.uint8)
    gt[ball(gt.shape, (15, 15), (9, 12))] = 1
    gt[25:37, 30:46] = 2
    seg = np.where(random_blobs(rng, gt.shape, 0.08), 0, np.roll(gt, (2, -3), axis=(0, 1))).astype(np.uint8)
    result = evaluate_case(seg, gt)
    expected_nsd = [ref_nsd(ref, (seg == k)[..., None], (gt == k)[..., None], (1.0, 1.0, 1.0), 2.0) for k in (1, 2)]
    expected_dsc = [ref_dice(ref, seg == k, gt == k) for k in (1, 2)]
    for ours, theirs in zip(result.nsd_per_label + result.dsc_per_label, expected_nsd + expected_dsc, strict=True):
        assert_close(ours, theirs)
    contour = evaluate_case(seg, gt, planar_as_slab=False)
    for i, k in enumerate((1, 2)):
        assert_close(contour.nsd_per_label[i], ref_nsd(ref, seg == k, gt == k, (1.0, 1.0), 2.0))
    assert contour.nsd != pytest.approx(result.nsd, abs=1e-3)  # the two conventions differ


def test_nsd_gate_on_case_dsc():
    gt = np.zeros((20, 20), np.uint8)
    gt[2:7, 2:4] = 1  # 10 px
    seg = np.zeros_like(gt)
    seg[2:3, 2:4] = 1  # 2 px overlap
    seg[10:14, 10:12] = 1  # + 8 px elsewhere: DSC = 2*2 / (10 + 10) = 0.2 exactly
    gated = evaluate_case(seg, gt)
    assert gated.dsc == pytest.approx(0.2)
    assert not gated.nsd_computed
    assert gated.nsd == 0.0 and gated.nsd_per_label == (0.0,)
    # the same masks do have a positive NSD when the gate is lowered
    ungated = evaluate_case(seg, gt, nsd_dsc_threshold=0.1)
    assert ungated.nsd_computed and ungated.nsd > 0.1
    # the gate is the case mean, not per label: a 0-DSC label keeps its computed NSD
    gt[12:18, 12:18] = 2
    seg[12:18, 12:18] = 2
    mixed = evaluate_case(seg, gt)
    assert mixed.dsc == pytest.approx(0.6)
    assert mixed.nsd_computed and mixed.nsd_per_label[1] == 1.0 and mixed.nsd_per_label[0] > 0


def test_evaluate_case_edge_cases():
    empty_gt = evaluate_case(np.ones((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
    assert empty_gt.labels == () and math.isnan(empty_gt.dsc) and math.isnan(empty_gt.nsd)
    gt = np.zeros((6, 6, 6), np.int16)
    gt[1:4, 1:4, 1:4] = 1
    missed = evaluate_case(np.zeros_like(gt), gt, (1.0, 2.0, 3.0))
    assert missed.dsc == 0.0 and missed.nsd == 0.0 and not missed.nsd_computed
    perfect = evaluate_case(gt.astype(np.uint8), gt, (1.0, 2.0, 3.0))
    assert perfect.dsc == 1.0 and perfect.nsd == 1.0
    with pytest.raises(ValueError, match="shape mismatch"):
        evaluate_case(np.zeros((5, 6), np.uint8), np.zeros((6, 5), np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(gt, gt, (1.0, 2.0))
    with pytest.raises(ValueError, match="integer"):
        evaluate_case(gt.astype(float), gt)
