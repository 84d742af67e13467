"""The challenge's click simulation (core.evaluation.clicks) and the box-then-clicks protocol on challenge cases."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_desktop.core.evaluation.click_protocol import ClickCurve, clicks_2d, clicks_3d
from medsam_desktop.core.evaluation.clicks import largest_error_slice, next_click
from medsam_desktop.core.inference.challenge import segment_challenge_case
from medsam_desktop.core.inference.clicks import ClickPoint, ClickRefiner, points_to_model
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.core.inference.propagation import Box3D, propagate_boxes
from tests.fakes import BoxBackend, SquareClickBackend


def test_missed_foreground_gets_a_positive_click_at_its_centre() -> None:
    gt = np.zeros((40, 40), bool)
    gt[10:21, 5:16] = True  # 11x11: centre (15, 10)
    assert next_click(np.zeros_like(gt), gt) == ClickPoint(10, 15, True)


def test_taken_background_gets_a_negative_click_and_the_larger_error_wins() -> None:
    gt = np.zeros((50, 50), bool)
    gt[0:5, 0:5] = True  # 25 px missed
    pred = np.zeros_like(gt)
    pred[20:29, 20:29] = True  # 81 px taken
    click = next_click(pred, gt)
    assert click == ClickPoint(24, 24, False)


def test_equal_errors_prefer_the_missed_foreground_and_agreement_gives_none() -> None:
    gt = np.zeros((30, 30), bool)
    gt[2:5, 2:5] = True
    pred = np.zeros_like(gt)
    pred[20:23, 20:23] = True
    assert next_click(pred, gt) == ClickPoint(3, 3, True)
    assert next_click(gt, gt) is None


def test_the_image_edge_counts_as_border() -> None:
    gt = np.zeros((20, 20), bool)
    gt[0:3, :] = True  # a band along the top edge: the deepest pixel is row 1, not row 0
    assert next_click(np.zeros_like(gt), gt).y == 1


def test_largest_error_slice() -> None:
    gt = np.zeros((4, 10, 10), bool)
    gt[1, :3, :3] = True
    gt[2, :5, :5] = True
    assert largest_error_slice(np.zeros_like(gt), gt) == 2
    assert largest_error_slice(gt, gt) is None
    with pytest.raises(ValueError):
        largest_error_slice(gt[0], gt[0])


def test_points_map_by_pixel_centre() -> None:
    # a 512-pixel image: pixel 0's centre (0.5 px) is 0.25 model px, i.e. index -0.25 before the +0.5 of the encoder
    pts = points_to_model([ClickPoint(0, 0, True), ClickPoint(511, 100, False)], (512, 512))
    np.testing.assert_allclose(pts, [[-0.25, -0.25], [255.25, 49.75]])


def test_auc_is_the_mean_over_click_intervals() -> None:
    curve = ClickCurve(dsc=[0.5, 0.6, 0.8], nsd=[0.1, 0.2, 0.2])
    assert curve.dsc_auc == pytest.approx(0.7)
    assert curve.nsd_auc == pytest.approx(0.2)


def _case_2d() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.zeros((256, 256, 3), np.uint8)
    gts = np.zeros((256, 256), np.uint8)
    gts[40:120, 40:120] = 1  # the box [40, 40, 100, 100] misses 20 px on two sides
    gts[150:200, 150:230] = 2
    boxes = np.array([[40, 40, 100, 100], [150, 150, 229, 199]])
    return image, boxes, gts


def test_2d_protocol_starts_from_the_box_only_result_and_clicks_improve_it() -> None:
    image, boxes, gts = _case_2d()
    predictor = Predictor(BoxBackend())
    clicks = SquareClickBackend()
    segs, curve = clicks_2d(predictor, ClickRefiner(lambda: clicks), image, boxes, gts, 5)
    box_only = segment_challenge_case(predictor, image, boxes)
    _, curve0 = clicks_2d(predictor, ClickRefiner(lambda: clicks), image, boxes, gts, 0)
    assert len(curve.dsc) == 6 and len(curve0.dsc) == 1
    assert curve.dsc[0] == curve0.dsc[0]
    assert np.array_equal(box_only == 2, gts == 2)  # object 2's box is exact: never clicked
    assert curve.dsc[5] > curve.dsc[1] > curve.dsc[0]
    assert clicks.calls == 5  # object 1 only, one click per round
    assert (segs == 1).sum() > (box_only == 1).sum()


def test_a_refining_click_path_gets_each_slice_image_and_the_clicks_follow_the_shown_mask() -> None:
    from medsam_desktop.core.inference.clicks import model_image

    image, boxes, gts = _case_2d()
    image[30:130, 30:130] = 200  # something to see
    clicks = SquareClickBackend(needs_image=True)
    clicks_2d(Predictor(BoxBackend()), ClickRefiner(lambda: clicks), image, boxes, gts, 2)
    assert clicks.calls == 2 and all(np.array_equal(im, model_image(image)) for im in clicks.images)
    assert np.array_equal(clicks.prompts[1], clicks.outputs[0][0])  # the decoder's own logits are the next prompt
    vol = np.zeros((9, 64, 64), np.uint8)
    vol[:, 10:40, 10:40] = 150
    gts3 = np.zeros((9, 64, 64), np.uint8)
    gts3[2:7, 10:40, 10:40] = 1
    clicks3 = SquareClickBackend(needs_image=True)
    clicks_3d(Predictor(BoxBackend()), ClickRefiner(lambda: clicks3), vol, np.array([[10, 10, 2, 30, 30, 6]]), gts3,
              (1.0, 1.0, 1.0), 2)  # fmt: skip
    assert clicks3.calls == 2 and all(np.array_equal(im, model_image(vol[4])) for im in clicks3.images)


def test_the_curve_holds_each_object_whose_mean_is_the_case() -> None:
    image, boxes, gts = _case_2d()
    _, curve = clicks_2d(Predictor(BoxBackend()), ClickRefiner(SquareClickBackend), image, boxes, gts, 3)
    assert curve.objects == (1, 2)
    assert len(curve.object_dsc) == len(curve.object_nsd) == 4
    for k in range(4):
        assert np.mean(curve.object_dsc[k]) == pytest.approx(curve.dsc[k])
        assert np.mean(curve.object_nsd[k]) == pytest.approx(curve.nsd[k])
    assert [r[2] for r in curve.object_rows() if r[0] == 2] == [1.0] * 4  # object 2's box is exact
    first = [r[2] for r in curve.object_rows() if r[0] == 1]
    assert first[3] > first[0] and [r[1] for r in curve.object_rows()] == [0, 1, 2, 3] * 2


def test_protocol_without_clicks_never_loads_the_click_path() -> None:
    image, boxes, gts = _case_2d()

    def refuse():
        raise AssertionError("the click path was loaded")

    clicks_2d(Predictor(BoxBackend()), ClickRefiner(refuse), image, boxes, gts, 0)


def test_3d_protocol_corrects_the_worst_slice_and_repropagates() -> None:
    vol = np.zeros((9, 64, 64), np.uint8)
    gts = np.zeros((9, 64, 64), np.uint8)
    gts[2:7, 10:40, 10:40] = 1
    boxes = np.array([[10, 10, 2, 30, 30, 6]])  # too small in x and y: every slice misses foreground
    predictor = Predictor(BoxBackend())
    clicks = SquareClickBackend()
    segs, curve = clicks_3d(predictor, ClickRefiner(lambda: clicks), vol, boxes, gts, (1.0, 1.0, 1.0), 3)
    box_only = segment_challenge_case(predictor, vol, boxes)
    assert curve.dsc[0] == pytest.approx(_dsc(box_only == 1, gts == 1))
    assert curve.dsc[3] > curve.dsc[0]
    assert clicks.calls == 3
    assert segs.shape == gts.shape and segs.dtype == box_only.dtype


def test_a_clicked_slice_starts_from_the_prompt_propagation_gave_it() -> None:
    vol = np.zeros((9, 64, 64), np.uint8)
    gts = np.zeros((9, 64, 64), np.uint8)
    gts[2:7, 10:40, 10:40] = 1
    boxes = np.array([[10, 10, 2, 30, 30, 6]])
    backend = BoxBackend()
    predictor = Predictor(backend)
    box_only = propagate_boxes(predictor, vol, boxes)
    b = Box3D.from_array(boxes[0], 9)
    order = [*range(b.zmid, b.z1 + 1), *range(b.zmid - 1, b.z0 - 1, -1)]  # upwards from the start, then down
    by_slice = dict(zip(order, backend.prompts, strict=True))
    assert len({tuple(p) for p in by_slice.values()}) > 2  # the prompts differ from slice to slice
    z = b.z0 + largest_error_slice(box_only[b.z0 : b.z1 + 1] == 1, gts[b.z0 : b.z1 + 1] == 1)
    backend.prompts.clear()
    clicks_3d(predictor, ClickRefiner(SquareClickBackend), vol, boxes, gts, (1.0, 1.0, 1.0), 1)
    # the protocol's own box-only propagation, then the clicked slice's box-only decode
    np.testing.assert_allclose(backend.prompts[len(order)], by_slice[z])


def _dsc(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())
