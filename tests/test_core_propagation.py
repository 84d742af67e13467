"""3D propagation order, prompts, fallback, shared embeddings and cancellation (with a fake model)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from medsam_desktop.core.inference.boxes import mask_bbox_model
from medsam_desktop.core.inference.challenge import box_problem, segment_challenge_case
from medsam_desktop.core.inference.predictor import Embedding, Prediction, Predictor
from medsam_desktop.core.inference.preprocess import FrameInfo, resized_size
from medsam_desktop.core.inference.propagation import PropagationCancelled, propagate_boxes, segment_slice

H = W = 128  # model scale 2.0


class FakePredictor:
    """Masks are the prompt box itself (in the image frame), shrunk by ``shrink`` model pixels; slices listed
    in ``empty`` give empty masks. Records every encode and every prompt."""

    def __init__(self, empty: set[int] = frozenset(), shrink: float = 0.0) -> None:
        self.empty, self.shrink = set(empty), shrink
        self.encoded: list[int] = []
        self.prompts: list[tuple[int, np.ndarray]] = []

    def encode(self, image: np.ndarray, key=None) -> Embedding:
        z = int(image[0, 0])
        self.encoded.append(z)
        size = image.shape[:2]
        return Embedding(np.array([z]), FrameInfo(size, resized_size(size)))

    decode = Predictor.decode  # the real image-frame -> model-frame path, over the fake decoder below

    def decode_model_boxes(self, emb: Embedding, boxes: np.ndarray) -> Prediction:
        z = int(emb.array[0])
        scale = 256 / max(emb.frame.original_size)
        masks = np.zeros((len(boxes), *emb.frame.original_size), bool)
        for i, b in enumerate(boxes):
            self.prompts.append((z, np.array(b)))
            if z in self.empty:
                continue
            shrink = np.array([self.shrink, self.shrink, -self.shrink, -self.shrink])
            x0, y0, x1, y1 = (np.asarray(b, dtype=float) + shrink) / scale
            masks[i, int(np.ceil(y0)) : int(np.floor(y1)) + 1, int(np.ceil(x0)) : int(np.floor(x1)) + 1] = True
        return Prediction(masks, np.zeros((len(boxes), 256, 256)), np.ones(len(boxes)))


def volume(depth: int = 12) -> np.ndarray:
    vol = np.zeros((depth, H, W), np.uint8)
    vol[:, 0, 0] = np.arange(depth)  # the fake model reads the slice index here
    return vol


def test_order_middle_then_up_then_down() -> None:
    fake = FakePredictor(shrink=4.0)
    labels = propagate_boxes(fake, volume(), np.array([[20, 30, 2, 80, 90, 8]]))
    assert fake.encoded == [5, 6, 7, 8, 4, 3, 2]  # zm = int((8 - 2) / 2 + 2) = 5
    np.testing.assert_allclose(fake.prompts[0][1], [40, 60, 160, 180])  # the 2D box, scaled by 2
    assert labels[:2].max() == 0 and labels[9:].max() == 0
    assert all(labels[z].max() == 1 for z in range(2, 9))


def test_each_slice_is_prompted_by_the_previous_mask_bbox() -> None:
    fake = FakePredictor(shrink=4.0)
    vol = volume()
    seen: dict[int, np.ndarray] = {}
    box = np.array([[20, 30, 2, 80, 90, 8]])
    propagate_boxes(fake, vol, box, on_slice=lambda z, sl: seen.__setitem__(z, sl.copy()))
    prompts = dict((z, p) for z, p in fake.prompts)
    for z in (6, 7, 8):
        np.testing.assert_allclose(prompts[z], mask_bbox_model(seen[z - 1] > 0))
    for z in (4, 3, 2):  # downwards: the slice above
        np.testing.assert_allclose(prompts[z], mask_bbox_model(seen[z + 1] > 0))
    # shrinking masks: every prompt lies inside the previous one
    assert prompts[8][2] - prompts[8][0] < prompts[6][2] - prompts[6][0]


def test_fallback_to_original_box_after_an_empty_mask() -> None:
    fake = FakePredictor(empty={6, 3})
    labels = propagate_boxes(fake, volume(), np.array([[20, 30, 2, 80, 90, 8]]))
    prompts = dict((z, p) for z, p in fake.prompts)
    original = np.array([40, 60, 160, 180])
    np.testing.assert_allclose(prompts[7], original)  # slice 6 was empty
    np.testing.assert_allclose(prompts[2], original)  # slice 3 was empty
    assert labels[6].max() == 0 and labels[7].max() == 1


def test_embeddings_are_shared_by_all_boxes() -> None:
    fake = FakePredictor()
    boxes = np.array([[10, 10, 0, 40, 40, 9], [60, 60, 4, 100, 100, 11], [70, 10, 3, 120, 50, 5]])
    propagate_boxes(fake, volume(), boxes)
    assert sorted(fake.encoded) == list(range(12))  # every slice encoded exactly once
    assert len(fake.prompts) == 10 + 8 + 3  # one prompt per box per slice of its range


def test_later_box_wins_on_overlap_and_label_values() -> None:
    fake = FakePredictor()
    boxes = np.array([[10, 10, 0, 80, 80, 3], [40, 40, 0, 120, 120, 3]])
    labels = propagate_boxes(fake, volume(4), boxes)
    assert labels[1, 50, 50] == 2 and labels[1, 20, 20] == 1 and labels[1, 100, 100] == 2
    custom = propagate_boxes(FakePredictor(), volume(4), boxes[:1], label_values=[7])
    assert set(np.unique(custom)) == {0, 7}


def test_progress_and_cancel() -> None:
    fake = FakePredictor()
    cancel = threading.Event()
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 3:
            cancel.set()

    with pytest.raises(PropagationCancelled) as info:
        propagate_boxes(fake, volume(), np.array([[20, 30, 0, 80, 90, 11]]), progress=progress, cancel=cancel)
    assert calls == [(1, 12), (2, 12), (3, 12)]
    assert len(fake.encoded) == 3
    assert info.value.labels[5:8].max() == 1 and info.value.labels[8:].max() == 0


def test_box_outside_volume_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the volume"):
        propagate_boxes(FakePredictor(), volume(5), np.array([[1, 1, 7, 20, 20, 9]]))


def test_segment_slice_2d() -> None:
    fake = FakePredictor()
    img = np.zeros((H, W), np.uint8)
    labels = segment_slice(fake, img, np.array([[10, 10, 50, 50], [30, 30, 90, 90]]))
    assert labels.dtype == np.uint8 and labels[20, 20] == 1 and labels[40, 40] == 2 and labels[100, 100] == 0


def test_start_slice_replaces_the_middle() -> None:
    fake = FakePredictor()
    labels = propagate_boxes(fake, volume(), np.array([[20, 30, 1, 80, 90, 9]]), start_slices=[7])
    assert fake.encoded == [7, 8, 9, 6, 5, 4, 3, 2, 1]
    np.testing.assert_allclose(fake.prompts[0][1], [40, 60, 160, 180])
    assert all(labels[z].max() == 1 for z in range(1, 10))
    with pytest.raises(ValueError, match="start slice"):
        propagate_boxes(fake, volume(), np.array([[20, 30, 1, 80, 90, 9]]), start_slices=[11])


class _RecordingBackend:
    """Full-precision random embeddings (slice index in the pixels); decode records what it is given."""

    name = "recording"

    def __init__(self) -> None:
        self.encodes = 0
        self.seen: list[np.ndarray] = []

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.encodes += 1
        seed = round(float(images[0, 0, 0, 0]) * 255)
        return np.random.default_rng(seed).normal(size=(1, 256, 64, 64)).astype(np.float32)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.seen.append(np.array(embedding))
        logits = np.full((len(boxes), 256, 256), -1.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, int)):
            logits[i, y0 : y1 + 1, x0 : x1 + 1] = 1.0
        return logits, np.ones(len(boxes), np.float32)


def test_slices_kept_for_the_second_sweep_come_back_unchanged_with_a_float16_cache() -> None:
    """Embeddings of slices needed by both sweeps are held as float16 (half the memory) when the cache is
    float16: lossless, since the predictor already serves float16-rounded values; the decoder sees the same
    float32 array in both sweeps."""
    from medsam_desktop.core.inference.cache import EmbeddingCache

    vol = np.zeros((10, H, W), np.uint8)
    vol[:, 0, 0] = np.arange(1, 11) * 20  # distinct slices, distinct embeddings
    vol[:, 64, 64] = 255
    backend = _RecordingBackend()
    predictor = Predictor(backend, EmbeddingCache(max_bytes=0))  # nothing stays cached: only the kept copies
    boxes = np.array([[10, 10, 1, 60, 60, 3], [50, 50, 1, 100, 100, 9]])  # middles 2 and 5: 2, 3 visited twice
    propagate_boxes(predictor, vol, boxes, volume_key="v")
    assert backend.encodes == 9  # slices 1..9, each once, although the cache holds nothing
    by_slice: dict[bytes, list[np.ndarray]] = {}
    for arr in backend.seen:
        assert arr.dtype == np.float32
        by_slice.setdefault(arr[0, 0, :2, :2].tobytes(), []).append(arr)
    twice = [v for v in by_slice.values() if len(v) == 2]
    assert len(twice) == 2
    for first, second in twice:
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "values, message",
    [([1], "1 label values for 2 boxes"), ([1, 0], "1 to 65535"), ([2, 70000], "1 to 65535"), ([1, 2.5], "1 to 65535")],
)
def test_label_values_are_checked_before_any_work(values: list, message: str) -> None:
    fake = FakePredictor()
    boxes = np.array([[10, 10, 0, 40, 40, 9], [60, 60, 4, 100, 100, 11]])
    with pytest.raises(ValueError, match=message):
        propagate_boxes(fake, volume(), boxes, label_values=values)
    assert fake.encoded == []  # refused up front, not half-way through the volume


def test_label_values_above_255_widen_the_labels() -> None:
    boxes = np.array([[10, 10, 0, 40, 40, 9]])
    labels = propagate_boxes(FakePredictor(), volume(), boxes, label_values=[300])
    assert labels.dtype == np.uint16 and labels.max() == 300


# --- degenerate boxes (zero width / height / depth) and per-object failures --------------------------------


def test_a_zero_height_2d_box_on_the_last_row_is_segmented() -> None:
    """``[x0, y, x1, y]`` is a one-pixel-thin prompt: scaled to the model frame unchanged, as LiteMedSAM's
    ``resize_box_to_256`` does, and decoded."""
    fake = FakePredictor()
    labels = segment_slice(fake, np.zeros((H, W), np.uint8), np.array([[20, 127, 80, 127], [5, 5, 5, 40]]))
    np.testing.assert_allclose(fake.prompts[0][1], [40, 254, 160, 254])
    np.testing.assert_allclose(fake.prompts[1][1], [10, 10, 10, 80])
    assert labels[127, 20:81].min() == 1 and labels[:127].max() == 2 and labels[5:41, 5].min() == 2


def test_segment_slice_label_values() -> None:
    labels = segment_slice(FakePredictor(), np.zeros((H, W), np.uint8), np.array([[10, 10, 50, 50]]), label_values=[9])
    assert set(np.unique(labels)) == {0, 9}
    with pytest.raises(ValueError, match="1 label values for 2 boxes"):
        segment_slice(FakePredictor(), np.zeros((H, W), np.uint8), np.zeros((2, 4)), label_values=[1])


def test_a_zero_height_3d_box_propagates() -> None:
    """The middle slice gets the thin box itself; the others the +3 px bbox of the previous mask
    (``get_bbox256``: ``min(256, x_max + 3)``)."""
    fake = FakePredictor()
    vol = volume()
    seen: dict[int, np.ndarray] = {}
    labels = propagate_boxes(
        fake, vol, np.array([[20, 30, 2, 80, 30, 8]]), on_slice=lambda z, sl: seen.__setitem__(z, sl.copy())
    )
    prompts = dict((z, p) for z, p in fake.prompts)
    np.testing.assert_allclose(prompts[5], [40, 60, 160, 60])
    np.testing.assert_allclose(prompts[6], [37, 57, 164, 64])  # from the one-row mask of slice 5
    for z in (7, 8):
        np.testing.assert_allclose(prompts[z], mask_bbox_model(seen[z - 1] > 0))
    assert all(labels[z, 30, 20:81].min() == 1 for z in range(2, 9))
    assert labels[:2].max() == 0 and labels[9:].max() == 0


def test_a_one_slice_zero_width_3d_box_and_a_box_on_the_far_edge() -> None:
    fake = FakePredictor()
    labels = propagate_boxes(fake, volume(), np.array([[50, 10, 5, 50, 90, 5], [127, 0, 0, 127, 127, 1]]))
    prompts = [(z, list(p)) for z, p in fake.prompts]
    assert (5, [100, 20, 100, 180]) in prompts and (0, [254, 0, 254, 254]) in prompts
    assert labels[5, 10:91, 50].min() == 1 and labels[0, :, 127].min() == 2
    assert np.flatnonzero(labels.any(axis=(1, 2))).tolist() == [0, 1, 5]


@pytest.mark.parametrize("is_3d", [False, True], ids=["2d", "3d"])
def test_a_bad_object_costs_only_its_own_mask(is_3d: bool, caplog: pytest.LogCaptureFixture) -> None:
    """NaN, min > max and outside boxes: empty mask and one warning each; the other objects are segmented with
    their own label numbers; degenerate boxes are not bad."""
    boxes2d = [
        [10, 10, 50, 50],  # 1: fine
        [np.nan, 10, 50, 50],  # 2: NaN
        [50, 10, 10, 50],  # 3: min > max
        [10, 200, 50, 260],  # 4: below the 128x128 image
        [60, 127, 100, 127],  # 5: zero height, on the last row: fine
    ]
    if is_3d:
        boxes = np.array([[x0, y0, 1, x1, y1, 3] for x0, y0, x1, y1 in boxes2d] + [[10, 10, 9, 50, 50, 20]])
        imgs = volume(6)  # 6: slices 9..20 of a 6-slice volume
    else:
        boxes, imgs = np.array(boxes2d), np.zeros((H, W), np.uint8)
    with caplog.at_level(logging.WARNING, logger="medsam_desktop"):
        labels = segment_challenge_case(FakePredictor(), imgs, boxes, name="case.npz")
    assert set(np.unique(labels)) == {0, 1, 5}
    sl = labels[2] if is_3d else labels
    assert sl[30, 30] == 1 and sl[127, 60:101].min() == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    bad = [2, 3, 4, 6] if is_3d else [2, 3, 4]
    assert len(warnings) == len(bad), warnings
    for n, text, why in zip(bad, warnings, ["NaN", "min > max", "outside", "outside the 128x128x6 image"]):
        assert text.startswith(f"case.npz: object {n}: ") and why in text and "mask is left empty" in text, text


def test_box_problem_rules() -> None:
    assert box_problem(np.array([637, 521, 661, 521]), (1, 522, 700)) is None
    assert box_problem(np.array([0, 0, 700, 522]), (1, 522, 700)) is None  # x1 == W: allowed by the format
    assert box_problem(np.array([-5, 3, 10, 10]), (1, 522, 700)) is None  # partly outside: clipped later
    assert box_problem(np.array([4, 4, 2, 9, 9, 2]), (3, 10, 10)) is None  # one slice
    assert "min > max" in box_problem(np.array([4, 4, 3, 9, 9, 2]), (3, 10, 10))
    assert "outside the 10x10x3 image" in box_problem(np.array([4, 4, 3, 9, 9, 5]), (3, 10, 10))
    assert "NaN" in box_problem(np.array([4, np.inf, 9, 9]), (1, 10, 10))


def test_stop_when_empty_ends_each_direction_where_the_mask_disappears() -> None:
    """The app's "until the mask disappears": no slice past an empty one is visited (the challenge default
    re-prompts it with the original box)."""
    fake = FakePredictor(empty={8, 3})
    labels = propagate_boxes(fake, volume(), np.array([[20, 30, 0, 80, 90, 11]]), start_slices=[5],
                             stop_when_empty=True)  # fmt: skip
    assert fake.encoded == [5, 6, 7, 8, 4, 3]  # 8 and 3 came back empty: 9..11 and 2..0 are never visited
    assert [z for z in range(12) if labels[z].any()] == [4, 5, 6, 7]
    default = FakePredictor(empty={8, 3})
    propagate_boxes(default, volume(), np.array([[20, 30, 0, 80, 90, 11]]), start_slices=[5])
    assert default.encoded == [5, 6, 7, 8, 9, 10, 11, 4, 3, 2, 1, 0]


def test_stop_when_empty_with_an_empty_start_slice_stops_both_ways() -> None:
    fake = FakePredictor(empty={5})
    labels = propagate_boxes(fake, volume(), np.array([[20, 30, 0, 80, 90, 11]]), start_slices=[5],
                             stop_when_empty=True)  # fmt: skip
    assert fake.encoded == [5] and not labels.any()


def test_a_fixed_slice_is_kept_and_the_sweeps_continue_from_it() -> None:
    pred = FakePredictor()
    fixed = np.zeros((H, W), bool)
    fixed[40:60, 30:90] = True  # the corrected start slice: wider than the box
    labels = propagate_boxes(pred, volume(), np.array([[30, 40, 3, 50, 60, 7]]), start_slices=[5],
                             fixed_masks=[{5: fixed}])  # fmt: skip
    assert np.array_equal(labels[5] == 1, fixed)
    assert 5 not in pred.encoded  # nothing decoded on the fixed slice
    first_up = next(b for z, b in pred.prompts if z == 6)
    np.testing.assert_array_equal(first_up, mask_bbox_model(fixed))  # slice 6 is prompted by the fixed mask
    first_down = next(b for z, b in pred.prompts if z == 4)
    np.testing.assert_array_equal(first_down, mask_bbox_model(fixed))


def test_fixed_masks_must_match_the_boxes() -> None:
    with pytest.raises(ValueError, match="fixed-mask sets"):
        propagate_boxes(FakePredictor(), volume(), np.array([[30, 40, 3, 50, 60, 7]]), fixed_masks=[{}, {}])
