"""The click path's pixel refiner: click maps where the clicks are, an untrained refiner that changes nothing, and
a refining path that needs (and gets) the slice's model-frame image through every runtime."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsam_desktop.core.backends.base import refiner_input
from medsam_desktop.model.click_decoder import (
    ClickDecoder,
    build_click_decoder,
    load_click_decoder,
    saved_refiner_width,
)
from medsam_desktop.model.mask_refiner import CLICK_SIGMA, MaskRefiner, click_maps


def test_click_maps_peak_at_each_click_by_label_and_ignore_unused_slots() -> None:
    points = torch.tensor([[[10.0, 20.0], [30.0, 5.0], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    maps = click_maps(points, labels, 40, 50)
    assert maps.shape == (1, 2, 40, 50)
    assert maps[0, 0, 20, 10] == 1.0 and maps[0, 1, 5, 30] == 1.0
    assert maps[0, 0, 5, 30] < 1e-6 and maps[0, 1, 20, 10] < 1e-6  # each map holds its own label only
    assert maps[0, 0, 0, 0] < 1e-6  # the unused slot at (0, 0) draws nothing
    assert math.isclose(float(maps[0, 0, 20, 10 + 3]), math.exp(-9 / (2 * CLICK_SIGMA**2)), rel_tol=1e-6)


def test_an_untrained_refiner_returns_the_logits_unchanged_and_a_trained_one_does_not() -> None:
    refiner = MaskRefiner(8)
    logits = torch.randn(2, 1, 64, 48)
    image = torch.rand(1, 3, 64, 48)  # one image for both prompts
    points, labels = torch.tensor([[[5.0, 6.0]], [[20.0, 30.0]]]), torch.tensor([[1.0], [0.0]])
    assert torch.equal(refiner(image, logits, points, labels), logits)
    with torch.no_grad():
        refiner.head.weight.fill_(0.1)
    assert not torch.equal(refiner(image, logits, points, labels), logits)


def test_a_refining_path_redraws_only_the_shown_mask_and_round_trips_through_its_checkpoint(tmp_path: Path) -> None:
    from medsam_desktop.model import save_checkpoint
    from medsam_desktop.model.click_decoder import CLICK_ARCH, MAX_POINTS

    torch.manual_seed(0)
    plain = build_click_decoder().eval()
    net = build_click_decoder(refiner_width=6).eval()
    net.load_state_dict({**plain.state_dict(), **{k: v for k, v in net.state_dict().items() if "refiner" in k}})
    with torch.no_grad():
        net.refiner.head.weight.normal_()
    args = (torch.randn(1, 256, 64, 64), torch.tensor([[40.0, 40.0, 160.0, 150.0]]),
            torch.tensor([[[100.0, 90.0]] * MAX_POINTS]), torch.tensor([[1.0] + [-1.0] * (MAX_POINTS - 1)]),
            torch.zeros(1, 1, 256, 256))  # fmt: skip
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        logits, _ = net(*args)
        assert torch.equal(logits, plain(*args)[0])  # the chain's logits are the decoder's own
        shown = net.shown_logits(image, logits, args[2], args[3])
        assert not torch.equal(shown, logits)
        with pytest.raises(ValueError, match="refines with the image"):
            net.shown_logits(None, logits, args[2], args[3])
        assert torch.equal(plain.shown_logits(None, logits, args[2], args[3]), logits)
    path = tmp_path / "x.clicks.pt"
    save_checkpoint(net, path, CLICK_ARCH, {"max_points": MAX_POINTS})
    loaded = load_click_decoder(path)
    assert isinstance(loaded, ClickDecoder) and loaded.refiner is not None and loaded.refiner.width == 6
    with torch.no_grad():
        assert torch.allclose(loaded.shown_logits(image, loaded(*args)[0], args[2], args[3]), shown, atol=1e-5)
    assert saved_refiner_width(plain.state_dict()) == 0  # the kind shipped before: no refiner


def test_refiner_input_is_the_training_conversion_and_refuses_other_images() -> None:
    from training.shards import model_input

    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert np.array_equal(refiner_input(image), model_input(image[None]).contiguous().numpy())
    with pytest.raises(ValueError, match="pass the slice"):
        refiner_input(None)
    with pytest.raises(ValueError, match="uint8"):
        refiner_input(image.astype(np.float32))
