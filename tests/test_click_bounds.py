"""Limits of the click protocol (``training/click_bounds.py``): best of the clicks per object, and the ground
truth's DSC through a 256x256 logit map and the app's upsampling."""

from __future__ import annotations

import numpy as np
import pytest

click_bounds = pytest.importorskip("training.click_bounds")


def _rows(kind: str, image: str, label: str, dsc: list[float]) -> list[dict[str, str]]:
    return [
        {"boxes": kind, "image": image, "label": label, "click": str(k), "dsc": str(d), "nsd": "0"}
        for k, d in enumerate(dsc)
    ]


def test_best_of_clicks_ignores_the_box_and_counts_objects_that_fall_back() -> None:
    rows = (
        _rows("tight", "a", "1", [0.99, 0.6, 0.9, 0.7])  # box best, then peak at click 2, ends 0.2 below it
        + _rows("tight", "a", "2", [0.5, 0.8, 0.8, 0.8])  # flat: ends at its best
        + _rows("perturbed", "a", "1", [0.5, 0.4, 0.5, 0.6])
    )
    out = click_bounds.best_of_clicks(rows)
    n, last, best, share = out["tight"]
    assert n == 2
    assert last == pytest.approx((0.7 + 0.8) / 2)
    assert best == pytest.approx((0.9 + 0.8) / 2)  # the box's 0.99 is not a click
    assert share == pytest.approx(0.5)
    assert out["perturbed"] == pytest.approx((1, 0.6, 0.6, 0.0))


def test_frame_ceiling_is_exact_at_native_scale_and_loses_small_objects_at_four_times() -> None:
    small = np.zeros((256, 256), np.uint8)  # one image pixel per model pixel: the frame loses nothing
    small[100:107, 50:58] = 3
    [(area, dsc)] = click_bounds.frame_ceiling(small)
    assert area == 56 and dsc == pytest.approx(1.0)

    big = np.zeros((1024, 1024), np.uint8)  # four image pixels per model pixel
    big[101:108, 50:58] = 1  # 56 px, off the 4-px grid: the logit map cannot draw its edges
    big[400:800, 300:700] = 2  # 160,000 px on the grid
    (a1, d1), (a2, d2) = click_bounds.frame_ceiling(big)
    assert (a1, a2) == (56, 160_000)
    assert d1 < 0.95
    assert d2 > 0.999
