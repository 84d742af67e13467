"""The single preprocessing path: golden values, frames, and post-processing of logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsam_desktop.core.inference.preprocess import (
    FrameInfo,
    logits_to_masks,
    preprocess,
    preprocess_uint8,
    resize_image,
    resized_size,
    upsample_logits,
)


def test_resized_size_rounds_half_up_like_litemedsam() -> None:
    assert resized_size((512, 512)) == (256, 256)
    assert resized_size((300, 600)) == (128, 256)
    assert resized_size((1000, 333)) == (256, 85)  # 333 * 0.256 = 85.248
    assert resized_size((100, 50)) == (256, 128)  # small images are enlarged


def test_golden_values_integer_downscale() -> None:
    # 512x512 ramp: each output pixel is the mean of a 2x2 block, then min-max normalised
    img = np.arange(512 * 512, dtype=np.float64).reshape(512, 512)
    x, info = preprocess(img)
    assert info == FrameInfo((512, 512), (256, 256))
    block = img.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    expected = (block - block.min()) / (block.max() - block.min())
    assert x.shape == (3, 256, 256) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], expected, atol=1e-5)
    np.testing.assert_array_equal(x[0], x[2])  # grey -> 3 identical channels
    assert x[0, 0, 0] == 0.0 and x[0, -1, -1] == pytest.approx(1.0)


def test_padding_is_bottom_right_and_zero() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(10, 250, size=(300, 600, 3)).astype(np.uint8)
    x, info = preprocess(img)
    h, w = info.resized_size
    assert (h, w) == (128, 256)
    assert np.all(x[:, h:, :] == 0)
    assert x[:, :h, :w].min() == 0.0 and x[:, :h, :w].max() == pytest.approx(1.0)


def test_area_resize_is_exact_area_average() -> None:
    # reference by supersampling: repeat every pixel (new) times, then average blocks of (old) samples
    rng = np.random.default_rng(1)
    img = rng.random((37, 29))
    new = (11, 13)
    fine = np.repeat(np.repeat(img, new[0], axis=0), new[1], axis=1)
    ref = fine.reshape(new[0], 37, new[1], 29).mean(axis=(1, 3))
    np.testing.assert_allclose(resize_image(img, new), ref, atol=1e-5)
    # a 12 -> 5 ramp by hand: output 0 covers input [0, 2.4): (0 + 1 + 0.4 * 2) / 2.4
    ramp = np.arange(12, dtype=np.float32)[None].repeat(3, 0)
    assert resize_image(ramp, (3, 5))[0, 0] == pytest.approx(0.75, abs=1e-6)


def test_uint8_shards_match_float_path() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 4000, size=(200, 260)).astype(np.int16)
    x, _ = preprocess(img)
    u8, _ = preprocess_uint8(img)
    assert u8.shape == (256, 256, 3) and u8.dtype == np.uint8
    assert np.abs(u8.transpose(2, 0, 1) / 255.0 - x).max() <= 0.5 / 255 + 1e-7


def test_constant_image_does_not_divide_by_zero() -> None:
    x, _ = preprocess(np.full((64, 64), 7, dtype=np.uint8))
    assert np.all(np.isfinite(x)) and x.max() == 0.0


@pytest.mark.parametrize("shape", [(512, 384), (64, 64), (1000, 333), (37, 300)])
def test_upsampling_matches_torch_bilinear(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 256, 256)).astype(np.float32)
    frame = FrameInfo(shape, resized_size(shape))
    h, w = frame.resized_size
    ref = F.interpolate(torch.from_numpy(logits[:, None, :h, :w]), size=shape, mode="bilinear", align_corners=False)
    ours = upsample_logits(logits, frame)
    np.testing.assert_allclose(ours, ref[:, 0].numpy(), atol=1e-4)
    masks = logits_to_masks(logits, frame)
    assert masks.shape == (2, *shape) and masks.dtype == bool
    np.testing.assert_array_equal(masks, ref[:, 0].numpy() > 0)


@pytest.mark.parametrize("shape", [(512, 512), (2048, 1536), (300, 1000), (40, 30), (256, 256)])
@pytest.mark.parametrize("aspect", [1.0, 2.5])
def test_masks_equal_the_full_upsampling_wherever_the_structure_is(shape: tuple[int, int], aspect: float) -> None:
    """logits_to_masks only computes the rows/columns that read a positive logit: same masks as thresholding
    the whole upsampled frame, for structures in the middle, at every edge and corner, empty, or everywhere."""
    yy, xx = np.mgrid[:256, :256]
    centres = [(128, 128), (0, 0), (255, 255), (0, 200), (200, 0), (60, 250)]
    logits = np.stack(
        [(6.0 - np.hypot(yy - cy, xx - cx)).astype(np.float32) for cy, cx in centres]
        + [np.full((256, 256), -1.0, np.float32), np.full((256, 256), 1.0, np.float32)]
    )
    logits[0, 10, 10] = 0.5  # two separate blobs: one bounding region
    frame = FrameInfo.of(shape, (1.0, aspect))
    masks = logits_to_masks(logits, frame)
    np.testing.assert_array_equal(masks, upsample_logits(logits, frame) > 0)
    assert masks.shape == (len(logits), *shape) and not masks[-2].any() and masks[-1].all()
    assert masks[1].any()  # the blob at the (0, 0) corner is inside every frame


def test_rejects_non_slices() -> None:
    with pytest.raises(ValueError, match="2D slice"):
        preprocess(np.zeros((2, 3, 4, 5)))


def test_grey_fast_path_equals_per_channel_resize() -> None:
    """Grey slices are resized once and replicated: identical to resizing three equal channels."""
    from medsam_desktop.core.inference.preprocess import resize_image, resized_size, to_three_channels

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 255, (300, 170)).astype(np.uint8)
    x2, _ = preprocess(grey)
    x3, _ = preprocess(np.repeat(grey[:, :, None], 3, axis=2))
    h, w = resized_size(grey.shape)
    slow = resize_image(to_three_channels(grey), (h, w))
    slow = (slow - slow.min()) / (slow.max() - slow.min())
    np.testing.assert_array_equal(x2, x3)
    np.testing.assert_allclose(x2[:, :h, :w], slow.transpose(2, 0, 1), atol=1e-6)
    colour = np.stack([grey, grey, 255 - grey], axis=2)  # unequal channels take the per-channel path
    xc, _ = preprocess(colour)
    assert not np.allclose(xc[0], xc[2])
