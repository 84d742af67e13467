"""The refiner's training windows: placed where the refiner has work, inside the frame, and cut consistently from
the image, the frozen path's logits, its clicks and the target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
train_refiner = pytest.importorskip("training.train_refiner")


def test_windows_centre_small_objects_and_sit_on_a_large_ones_outline_inside_the_frame() -> None:
    rng = np.random.default_rng(0)
    small = np.zeros((256, 256), bool)
    small[250:255, 3:9] = True  # a cell in the corner: the window is pushed inside the frame
    y0, x0 = train_refiner.window_origin(small, rng)
    assert (y0, x0) == (256 - train_refiner.CROP, 0)
    assert small[y0 : y0 + train_refiner.CROP, x0 : x0 + train_refiner.CROP].sum() == small.sum()
    large = np.zeros((256, 256), bool)
    large[40:200, 30:220] = True
    for _ in range(20):
        y0, x0 = train_refiner.window_origin(large, rng)
        win = large[y0 : y0 + train_refiner.CROP, x0 : x0 + train_refiner.CROP]
        assert 0 <= y0 <= 256 - train_refiner.CROP and 0 <= x0 <= 256 - train_refiner.CROP
        assert win.any() and not win.all()  # the outline runs through every window


def test_windows_are_cut_from_the_frozen_paths_protocol(random_weights: Path) -> None:
    from medsam_desktop.model import load_checkpoint
    from medsam_desktop.model.click_decoder import ClickDecoder
    from training.train_clicks import BoxOnly, Slice

    student = load_checkpoint(random_weights)
    net = ClickDecoder.from_model(student).eval()
    rng = np.random.default_rng(1)
    masks = np.zeros((2, 256, 256), bool)
    masks[0, 60:70, 80:95] = True
    masks[1, 100:220, 20:200] = True
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    s = Slice("a", rng.normal(0, 0.1, (256, 64, 64)).astype(np.float16), masks, 240, 230, "mr", "train", image)
    w = train_refiner.make_windows(net, BoxOnly(student), [s], masks=4, draws=2, seed=0)
    c = train_refiner.CROP
    assert len(w) == 4 and w.image.shape == (4, 3, c, c) and w.logits.shape == (4, 1, c, c)
    assert w.points.shape == (4, 8, 2) and w.labels.shape == (4, 8) and w.area.tolist() == [150, 150, 21600, 21600]
    for k in range(4):  # each window's target is its object's crop, and its image the slice's same crop
        obj = masks[0] if w.area[k] == 150 else masks[1]
        hits = [
            (y, x) for y in range(0, 256 - c + 1) for x in range(0, 256 - c + 1)
            if np.array_equal(obj[y : y + c, x : x + c], w.targets[k].numpy())
            and np.array_equal(image[y : y + c, x : x + c].transpose(2, 0, 1), w.image[k].numpy())
        ]  # fmt: skip
        assert hits
    assert (w.labels[:, 0] >= 0).all() and (w.labels[:, 5:] == -1).all()  # 1-5 clicks, the other slots unused
    dsc = train_refiner.window_dsc(None, w)
    assert dsc.shape == (4,) and ((dsc >= 0) & (dsc <= 1)).all()


def test_a_slice_gives_its_first_objects_or_a_seeded_draw_of_them() -> None:
    rng = np.random.default_rng(0)
    assert train_refiner.slice_objects(3, 4, "random", rng).tolist() == [0, 1, 2]  # all of them, no draw spent
    assert rng.bit_generator.state == np.random.default_rng(0).bit_generator.state
    assert train_refiner.slice_objects(10, 4, "first", rng).tolist() == [0, 1, 2, 3]
    drawn = train_refiner.slice_objects(40, 12, "random", rng)
    assert len(set(drawn.tolist())) == 12 and (np.diff(drawn) > 0).all() and drawn.max() < 40
    assert drawn.tolist() != list(range(12))
    seeded = [train_refiner.slice_objects(40, 12, "random", np.random.default_rng(k)).tolist() for k in (5, 5, 6)]
    assert seeded[0] == seeded[1] != seeded[2]  # reproducible from the seed, and the seed matters
