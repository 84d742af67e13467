"""The refiner's window: inside the frame, a whole number of steps, and the full-frame refiner's result inside the
region it redraws (the decoder's logits elsewhere), on torch and on the shipped runtime's IR at any window size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsam_desktop.core.backends.base import pad_clicks, refiner_input
from medsam_desktop.core.backends.refiner_window import (
    REFINER_RADIUS,
    REFINER_REACH,
    SIDE,
    WINDOW_STEP,
    refine_in_window,
    refiner_window,
)
from medsam_desktop.model.click_decoder import MAX_POINTS
from medsam_desktop.model.mask_refiner import RECEPTIVE_RADIUS, MaskRefiner


def _refiner() -> MaskRefiner:
    torch.manual_seed(0)
    net = MaskRefiner(6).eval()
    with torch.no_grad():
        net.head.weight.normal_(0, 2.0)  # a refiner that changes many pixels everywhere
    return net


def _torch_run(net: MaskRefiner):
    def run(image, logits, points, labels):
        with torch.no_grad():
            t = torch.from_numpy
            return net(t(image), t(logits), t(points), t(labels)).numpy()

    return run


def _case(y: int, x: int, r: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A uint8 image, logits of a disc of radius ``r`` at (y, x), one positive and one negative click by it."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    logits = (r - np.hypot(yy - y, xx - x)).astype(np.float32) * 2
    points = np.array([[x + 1, y], [min(x + r + 3, SIDE - 1), y]], np.float32)
    return image, logits, points, np.array([1, 0], np.float32)


def test_the_window_radius_is_the_refiners_receptive_field() -> None:
    assert REFINER_RADIUS == RECEPTIVE_RADIUS


@pytest.mark.parametrize("y, x, r", [(128, 128, 6), (3, 250, 5), (128, 128, 120), (200, 20, 30)])
def test_a_window_is_inside_the_frame_in_whole_steps_and_holds_the_region_with_its_margin(y, x, r) -> None:
    _, logits, points, _ = _case(y, x, r)
    win = refiner_window(logits, points)
    ys, xs = np.nonzero(logits > 0)
    ry0, ry1, rx0, rx1 = win.region
    wy0, wy1, wx0, wx1 = win.window
    assert ry0 == max(min(ys.min(), points[:, 1].min()) - REFINER_REACH, 0)
    assert rx1 == min(max(xs.max(), points[:, 0].max()) + 1 + REFINER_REACH, SIDE)
    for lo, hi, wlo, whi in ((ry0, ry1, wy0, wy1), (rx0, rx1, wx0, wx1)):
        assert 0 <= wlo <= lo < hi <= whi <= SIDE
        assert (whi - wlo) % WINDOW_STEP == 0 or whi - wlo == SIDE
        assert wlo == 0 or lo - wlo >= REFINER_RADIUS  # the whole receptive field, or the frame's own edge
        assert whi == SIDE or whi - hi >= REFINER_RADIUS
    if r < 10:
        assert (wy1 - wy0) * (wx1 - wx0) <= 64 * 64  # a cell costs a small window


@pytest.mark.parametrize("y, x, r", [(128, 128, 6), (3, 250, 5), (100, 90, 60)])
def test_the_window_gives_the_full_frame_result_inside_its_region_and_the_logits_outside(y, x, r) -> None:
    net = _refiner()
    image, logits, points, labels = _case(y, x, r)
    shown = refine_in_window(_torch_run(net), image, logits, points, labels, MAX_POINTS)
    p, lab = pad_clicks(points, labels, MAX_POINTS)
    with torch.no_grad():
        full = net(torch.from_numpy(refiner_input(image)), torch.from_numpy(logits[None, None]),
                   torch.from_numpy(p), torch.from_numpy(lab))[0, 0].numpy()  # fmt: skip
    ry0, ry1, rx0, rx1 = refiner_window(logits, points).region
    inside = np.zeros((SIDE, SIDE), bool)
    inside[ry0:ry1, rx0:rx1] = True
    assert np.abs(shown[inside] - full[inside]).max() < 1e-4
    assert np.array_equal(shown[~inside], logits[~inside])
    assert not np.allclose(shown[inside], logits[inside])  # the refiner did redraw the region


def test_no_mask_and_no_click_leave_the_logits_and_a_missing_image_is_refused() -> None:
    net = _refiner()
    image, _, _, _ = _case(100, 100, 5)
    empty = np.full((SIDE, SIDE), -5.0, np.float32)
    none = np.zeros((0, 2), np.float32)
    shown = refine_in_window(_torch_run(net), image, empty, none, np.zeros(0, np.float32), MAX_POINTS)
    assert np.array_equal(shown, empty)
    with pytest.raises(ValueError, match="pass the slice"):
        refine_in_window(_torch_run(net), None, empty, none, np.zeros(0, np.float32), MAX_POINTS)


def test_the_refiner_ir_runs_any_window_size_as_torch_does(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    from training.export_clicks import export_refiner_onnx
    from training.export_runtime import convert

    net = _refiner()
    onnx, xml = tmp_path / "refiner.onnx", tmp_path / "refiner.xml"
    export_refiner_onnx(net, onnx)
    convert(onnx, xml, fp16=False)
    request = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()

    def ov_run(image, logits, points, labels):
        return np.array(request.infer({"image": image, "logits": logits, "points": points, "labels": labels})["shown"])

    for y, x, r in ((128, 128, 6), (60, 200, 40)):  # two window sizes through one compiled network
        image, logits, points, labels = _case(y, x, r)
        ref = refine_in_window(_torch_run(net), image, logits, points, labels, MAX_POINTS)
        got = refine_in_window(ov_run, image, logits, points, labels, MAX_POINTS)
        assert np.abs(got - ref).max() < 1e-3


def test_only_the_clicks_the_network_sees_place_the_window() -> None:
    net = _refiner()
    image, logits, points, labels = _case(128, 128, 6)
    far = np.array([[5.0, 5.0]] * 3, np.float32)  # three early clicks in a corner, beyond the last MAX_POINTS
    many = np.concatenate([far, np.repeat(points, MAX_POINTS // 2, axis=0)])
    many_labels = np.concatenate([np.zeros(3, np.float32), np.repeat(labels, MAX_POINTS // 2)])
    assert len(many) > MAX_POINTS
    win = refiner_window(logits, many[-MAX_POINTS:])
    assert win.region == refiner_window(logits, points).region and win.region[0] > 5 + REFINER_REACH
    shown = refine_in_window(_torch_run(net), image, logits, many, many_labels, MAX_POINTS)
    assert np.array_equal(shown[:20, :20], logits[:20, :20])  # the corner is not redrawn
