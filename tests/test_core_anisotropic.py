"""Anisotropic pixels (issue #4 follow-up): slices reach the model with their PHYSICAL aspect ratio.

Square pixels (or no spacing) must stay bit-identical to LiteMedSAM's formulas, re-implemented here from the
challenge code (longest side to 256 with ``s = 256 / max(H, W)``, rounding half up, uniform box scale).
Spacings are (column, row) mm, i.e. (x, y), as ``Plane.pixel_spacing`` returns them.
"""

from __future__ import annotations

import numpy as np
import pytest

from medsam_desktop.core.inference.boxes import box_from_model, box_to_model, mask_bbox, mask_bbox_model
from medsam_desktop.core.inference.cache import EmbeddingCache
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.core.inference.preprocess import (
    MODEL_SIZE,
    FrameInfo,
    logits_to_masks,
    model_scales,
    pixel_aspect,
    preprocess,
    resize_image,
    resized_size,
    upsample_logits,
)
from medsam_desktop.core.inference.propagation import propagate_boxes, segment_slice

SQUARE = [None, (1.0, 1.0), (0.7, 0.7), (2.5, 2.5), (0.703125, 0.703125 * (1 + 1e-9))]
SHAPES = [(200, 200), (300, 600), (1000, 333), (37, 300), (60, 200), (100, 50)]


# --- LiteMedSAM's formulas, as the code was before anisotropic pixels ---------------------------------------
def old_resized(size: tuple[int, int]) -> tuple[int, int]:
    s = 256 / max(size)
    return max(1, int(size[0] * s + 0.5)), max(1, int(size[1] * s + 0.5))


def old_preprocess(image: np.ndarray) -> np.ndarray:
    h, w = old_resized(image.shape[:2])
    if image.ndim == 2:
        small = np.repeat(resize_image(image, (h, w))[:, :, None], 3, axis=2)
    else:
        small = resize_image(image, (h, w))
    small = (small - small.min()) / max(float(small.max() - small.min()), 1e-8)
    out = np.zeros((3, 256, 256), np.float32)
    out[:, :h, :w] = small.transpose(2, 0, 1)
    return out


def old_mask_bbox_model(mask: np.ndarray, margin: int = 3) -> np.ndarray:
    bb = mask_bbox(mask)
    s = 256 / max(mask.shape)
    x0, y0 = np.floor(bb[0] * s), np.floor(bb[1] * s)
    x1, y1 = np.ceil((bb[2] + 1) * s) - 1, np.ceil((bb[3] + 1) * s) - 1
    return np.array([max(0, x0 - margin), max(0, y0 - margin), min(256, x1 + margin), min(256, y1 + margin)])


class RecordingBackend:
    """Encoder: stores the model input in the embedding; decoder: logits = (input > 0.5) & inside the box.

    The box region is the model-frame pixels whose centres lie in [x0, x1 + ``pad``] (model coordinates).
    """

    name = "recording"

    def __init__(self, pad: float = 0.0) -> None:
        self.pad = pad
        self.inputs: list[np.ndarray] = []
        self.prompts: list[np.ndarray] = []

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.inputs.append(images[0].copy())
        out = np.zeros((1, 256, 64, 64), np.float32)
        out[0, :16] = images[0, 0].reshape(16, 64, 64)
        return out

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(embedding[0, :16]).reshape(256, 256)
        centres = np.arange(256) + 0.5
        logits = np.full((len(boxes), 256, 256), -10.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
            self.prompts.append(np.array([x0, y0, x1, y1]))
            rows = (centres >= y0) & (centres <= y1 + self.pad)
            cols = (centres >= x0) & (centres <= x1 + self.pad)
            logits[i][np.outer(rows, cols) & (image > 0.5)] = 10.0
        return logits, np.ones(len(boxes), np.float32)


# --- square pixels: exactly as before -------------------------------------------------------------------
@pytest.mark.parametrize("spacing", SQUARE)
@pytest.mark.parametrize("shape", SHAPES)
def test_square_pixels_are_bit_identical_to_litemedsam(shape: tuple[int, int], spacing) -> None:
    rng = np.random.default_rng(sum(shape))
    assert pixel_aspect(spacing) == 1.0
    frame = FrameInfo.of(shape, spacing)
    assert frame == FrameInfo(shape, old_resized(shape)) and frame.resized_size == resized_size(shape)
    assert resized_size(shape, pixel_aspect=pixel_aspect(spacing)) == old_resized(shape)
    s = 256 / max(shape)
    assert model_scales(shape, pixel_aspect(spacing)) == (s, s) and frame.scales == (s, s) and frame.scale == s

    grey = rng.integers(0, 4000, size=shape).astype(np.int16)
    colour = rng.integers(0, 255, size=(*shape, 3)).astype(np.uint8)
    for image in (grey, colour):
        x, info = preprocess(image, spacing)
        np.testing.assert_array_equal(x, old_preprocess(image))
        np.testing.assert_array_equal(x, preprocess(image)[0])
        assert info == FrameInfo(shape, old_resized(shape))

    boxes = rng.uniform(0, max(shape), size=(5, 4))
    aspect = pixel_aspect(spacing)
    np.testing.assert_array_equal(box_to_model(boxes, shape, aspect), boxes * s)
    np.testing.assert_array_equal(box_from_model(boxes, shape, aspect), boxes / s)
    mask = np.zeros(shape, bool)
    mask[shape[0] // 4 : shape[0] // 2 + 1, shape[1] // 3 : shape[1] - 2] = True
    np.testing.assert_array_equal(mask_bbox_model(mask, pixel_aspect=aspect), old_mask_bbox_model(mask))
    logits = rng.normal(size=(2, 256, 256)).astype(np.float32)
    old_frame = FrameInfo(shape, old_resized(shape))
    np.testing.assert_array_equal(upsample_logits(logits, frame), upsample_logits(logits, old_frame))
    np.testing.assert_array_equal(logits_to_masks(logits, frame), logits_to_masks(logits, old_frame))


def test_predictor_with_square_spacing_gives_the_same_inputs_prompts_and_masks() -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 255, size=(120, 300)).astype(np.uint8)
    box = np.array([30.5, 20.0, 250.0, 90.0])
    results = []
    for spacing in (None, (0.8, 0.8)):
        backend = RecordingBackend()
        p = Predictor(backend)
        pred = p.decode(p.encode(image, pixel_spacing=spacing), box)
        results.append((backend.inputs[0], backend.prompts[0], pred.masks))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][1], (box * (256 / 300)).astype(np.float32))  # backends get float32


# --- anisotropic pixels ---------------------------------------------------------------------------------
def test_resized_size_of_an_anisotropic_slice_by_hand() -> None:
    # (60, 200) with 2.5 mm rows and 0.7 mm columns: 150 mm x 140 mm, rows are the longer physical side
    assert pixel_aspect((0.7, 2.5)) == pytest.approx(2.5 / 0.7)
    frame = FrameInfo.of((60, 200), (0.7, 2.5))
    assert frame.resized_size == (256, 239)  # 256 * 140 / 150 = 238.9
    sx, sy = frame.scales
    assert sx == pytest.approx(256 * 0.7 / 150) and sy == pytest.approx(256 * 2.5 / 150)
    # the same slice transposed, and a coronal slice of 512 x 0.7 mm columns and 120 x 2.5 mm rows
    assert FrameInfo.of((200, 60), (2.5, 0.7)).resized_size == (239, 256)
    assert FrameInfo.of((120, 512), (0.7, 2.5)).resized_size == (214, 256)  # 256 * 300 / 358.4 = 214.3
    # only the ratio matters; missing or unusable spacings mean square pixels
    assert FrameInfo.of((60, 200), (1.4, 5.0)) == frame
    for bad in [(0.0, 1.0), (float("nan"), 1.0), (-1.0, 2.0)]:
        assert FrameInfo.of((60, 200), bad) == FrameInfo((60, 200), (77, 256))
    with pytest.raises(ValueError, match="per axis"):
        _ = frame.scale


def test_preprocess_fills_the_physical_aspect_and_pads_the_rest() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(10, 250, size=(60, 200)).astype(np.uint8)
    x, frame = preprocess(image, (0.7, 2.5))
    assert frame.resized_size == (256, 239)
    assert np.all(x[:, :, 239:] == 0) and np.any(x[:, :, 238] > 0) and np.any(x[:, 255, :239] > 0)
    small = resize_image(image, (256, 239))
    np.testing.assert_allclose(x[0, :, :239], (small - small.min()) / (small.max() - small.min()), atol=1e-6)
    np.testing.assert_array_equal(x[0], x[2])


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((60, 200), (0.7, 2.5)), ((200, 60), (2.5, 0.7)), ((37, 120), (0.7, 2.5)), ((100, 150), (1.0, 1.3))],
)
def test_box_round_trip_through_the_model_frame_within_one_pixel(shape, spacing) -> None:
    """Slices enlarged along both axes (sx, sy >= 1): a box drawn, mapped, decoded and mapped back."""
    rng = np.random.default_rng(2)
    frame = FrameInfo.of(shape, spacing)
    sx, sy = frame.scales
    assert sx >= 1 and sy >= 1 and sx != pytest.approx(sy, rel=0.05)
    for _ in range(20):
        x0, x1 = sorted(rng.integers(0, shape[1], 2))
        y0, y1 = sorted(rng.integers(0, shape[0], 2))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        box = np.array([x0, y0, x1, y1], float)
        there = box_to_model(box, shape, frame.pixel_aspect)
        np.testing.assert_allclose(there, box * [sx, sy, sx, sy])
        np.testing.assert_allclose(box_from_model(there, shape, frame.pixel_aspect), box, atol=1e-9)
        # the model-frame box as a mask (pixels covering image pixels x0..x1 inclusive) -> back to pixels
        logits = np.full((1, 256, 256), -10.0, np.float32)
        logits[0, int(y0 * sy) : int(np.ceil((y1 + 1) * sy)), int(x0 * sx) : int(np.ceil((x1 + 1) * sx))] = 10
        back = mask_bbox(logits_to_masks(logits, frame)[0])
        assert back is not None
        assert np.all(np.abs(back - box) <= 1), (shape, spacing, box, back)


@pytest.mark.parametrize("spacing", [(0.7, 2.5), (2.5, 0.7), (0.5, 3.0), (1.0, 1.3)])
def test_box_coordinates_round_trip_exactly(spacing) -> None:
    rng = np.random.default_rng(5)
    for shape in [(60, 200), (120, 512), (200, 60), (1, 300)]:
        aspect = pixel_aspect(spacing)
        boxes = rng.uniform(0, 600, size=(10, 4))
        there = box_to_model(boxes, shape, aspect)
        np.testing.assert_allclose(box_from_model(there, shape, aspect), boxes, rtol=1e-12, atol=1e-9)
        inside = np.clip(boxes, 0, [shape[1] - 1, shape[0] - 1] * 2)
        assert np.all(box_to_model(inside, shape, aspect) <= MODEL_SIZE)


def test_a_physical_disc_is_round_for_the_model_and_an_ellipse_in_slice_pixels() -> None:
    # a disc of radius 60 mm on (60, 200) pixels of 2.5 mm rows x 0.7 mm columns: an ellipse of semi-axes
    # 24 rows and 85.7 columns in the slice
    spacing = (0.7, 2.5)
    rows, cols = np.mgrid[0:60, 0:200]
    centre_mm = (30 * 2.5, 100 * 0.7)
    disc = ((rows + 0.5) * 2.5 - centre_mm[0]) ** 2 + ((cols + 0.5) * 0.7 - centre_mm[1]) ** 2 <= 60.0**2
    image = np.where(disc, 200, 20).astype(np.uint8)
    backend = RecordingBackend()
    predictor = Predictor(backend)
    emb = predictor.encode(image, pixel_spacing=spacing)
    # the model sees a circle: equal extents along rows and columns (256 / 150 mm model px per mm)
    seen = backend.inputs[0][0] > 0.5
    bb = mask_bbox(seen)
    height, width = bb[3] - bb[1] + 1, bb[2] - bb[0] + 1
    assert height == pytest.approx(120 * 256 / 150, abs=2) and width == pytest.approx(height, abs=2)
    # the mask comes back in slice pixels: the ellipse, with the spacing ratio between its extents
    mask = predictor.decode(emb, np.array([0, 0, 199, 59])).masks[0]
    assert mask.shape == (60, 200)
    mb = mask_bbox(mask)
    extent_rows, extent_cols = mb[3] - mb[1] + 1, mb[2] - mb[0] + 1
    assert extent_rows == pytest.approx(48, abs=1) and extent_cols == pytest.approx(171.4, abs=2)
    assert extent_cols / extent_rows == pytest.approx(2.5 / 0.7, rel=0.05)
    assert (mask & disc).sum() / (mask | disc).sum() > 0.97
    # without the spacing the model would see the squashed ellipse (the behaviour this change replaces)
    raw = RecordingBackend()
    Predictor(raw).encode(image)
    rb = mask_bbox(raw.inputs[0][0] > 0.5)
    assert (rb[2] - rb[0]) / (rb[3] - rb[1]) > 3


def test_the_cache_key_holds_the_pixel_aspect() -> None:
    backend = RecordingBackend()
    predictor = Predictor(backend, EmbeddingCache(64 * 2**20))
    image = np.random.default_rng(4).integers(0, 255, size=(30, 90)).astype(np.uint8)
    square = predictor.encode(image, key=("vol", 3))
    thick = predictor.encode(image, key=("vol", 3), pixel_spacing=(0.7, 2.5))
    assert len(backend.inputs) == 2 and square.frame.pixel_aspect == 1.0
    assert thick.frame == FrameInfo.of((30, 90), (0.7, 2.5)) and thick.frame.resized_size == (256, 215)
    again = predictor.encode(image, key=("vol", 3), pixel_spacing=(1.4, 5.0))  # same aspect: a cache hit
    assert len(backend.inputs) == 2 and again.frame == thick.frame
    assert predictor.encode(image, key=("vol", 3), pixel_spacing=(1.0, 1.0)).frame == square.frame
    assert len(backend.inputs) == 2
    hit = predictor.cached(image.shape, ("vol", 3), (0.7, 2.5))
    assert hit is not None and hit.frame == thick.frame
    assert predictor.cached(image.shape, ("vol", 3), (0.7, 1.5)) is None


def test_propagation_with_pixel_spacing_prompts_per_axis_and_fills_the_object() -> None:
    # 10 coronal-like slices of 24 rows x 128 columns, 2.5 mm rows and 0.7 mm columns: 60 mm x 89.6 mm, so
    # sx = 256 / 128 = 2 and sy = 2 * 2.5 / 0.7 = 7.142857 model px per pixel; a bright block in slices 2..7
    spacing = (0.7, 2.5)
    vol = np.full((10, 24, 128), 20, np.uint8)
    vol[2:8, 6:16, 30:81] = 200
    backend = RecordingBackend(pad=2.0)
    labels = propagate_boxes(Predictor(backend), vol, np.array([[25, 4, 1, 90, 18, 8]]), pixel_spacing=spacing)
    expected = np.zeros(vol.shape, np.uint8)
    expected[2:8, 6:16, 30:81] = 1
    np.testing.assert_array_equal(labels, expected)
    sy = 2 * 2.5 / 0.7
    assert all(x.shape == (3, 256, 256) and np.all(x[:, 171:] == 0) for x in backend.inputs)
    order = [4, 5, 6, 7, 8, 3, 2, 1]  # start slice, up, then down
    assert len(backend.inputs) == len(order)
    for z, x in zip(order, backend.inputs):  # the block's 10 rows span 10 * 171 / 24 model rows (no spacing: 20)
        if 2 <= z <= 7:
            bright = np.flatnonzero((x[0] > 0.5).any(axis=1))
            assert (bright[0], bright[-1]) == (43, 113)
    np.testing.assert_allclose(backend.prompts[0], [50, 4 * sy, 180, 18 * sy])  # the 2D box on the start slice
    # the next slice is prompted by the block's bbox (cols 30..80, rows 6..15) + 3 MODEL px: by hand
    np.testing.assert_array_equal(backend.prompts[1], [60 - 3, 42 - 3, 162 - 1 + 3, 115 - 1 + 3])
    # 2D helper: the same geometry
    single = segment_slice(Predictor(RecordingBackend(pad=2.0)), vol[4], np.array([[25, 4, 90, 18]]), None, spacing)
    np.testing.assert_array_equal(single, expected[4])


def test_model_frame_stays_inside_256_for_extreme_aspects() -> None:
    for shape, spacing in [((1, 512), (0.5, 10.0)), ((512, 1), (10.0, 0.5)), ((3, 3), (0.1, 50.0))]:
        frame = FrameInfo.of(shape, spacing)
        h, w = frame.resized_size
        assert 1 <= h <= MODEL_SIZE and 1 <= w <= MODEL_SIZE and max(h, w) == MODEL_SIZE
        x, _ = preprocess(np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape), spacing)
        assert np.all(np.isfinite(x))
