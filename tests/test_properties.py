"""Property-based tests (hypothesis) of the engine's geometry: box frames, pre/postprocessing, label values, and
the NIfTI writer's geometry round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes import BoxBackend
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medsam_desktop.core.inference.boxes import InvalidBoxError, box_from_model, box_to_model, validate_box
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.core.inference.preprocess import MODEL_SIZE, FrameInfo, resize_image, resized_size, upsample_logits
from medsam_desktop.core.inference.propagation import propagate_boxes, segment_slice
from medsam_desktop.io import Volume, read_image, write_labels_nifti

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: image sides, biased towards awkward ones (1-3 px thin, odd, larger than the model frame)
sides = st.one_of(st.integers(1, 4), st.integers(5, 300), st.sampled_from([255, 256, 257, 511, 900, 1023]))
coords = st.floats(-2000, 2000, allow_nan=False, allow_infinity=False)


@st.composite
def size_and_box(draw: st.DrawFn) -> tuple[tuple[int, int], np.ndarray]:
    h, w = draw(sides), draw(sides)
    return (h, w), np.array([draw(coords), draw(coords), draw(coords), draw(coords)])


@FAST
@given(size_and_box())
def test_box_model_frame_round_trip(case: tuple[tuple[int, int], np.ndarray]) -> None:
    size, box = case
    there = box_to_model(box, size)
    np.testing.assert_allclose(box_from_model(there, size), box, rtol=1e-12, atol=1e-9)
    inside = np.clip(box, 0, [size[1] - 1, size[0] - 1] * 2)
    assert np.all(box_to_model(inside, size) <= MODEL_SIZE)  # an in-image box stays in the 256 frame


@FAST
@given(size_and_box())
def test_validate_box_is_idempotent_and_inside(case: tuple[tuple[int, int], np.ndarray]) -> None:
    (h, w), box = case
    sx0, sx1 = sorted((box[0], box[2]))
    sy0, sy1 = sorted((box[1], box[3]))
    outside = sx1 < 0 or sy1 < 0 or sx0 > w - 1 or sy0 > h - 1
    try:
        out = validate_box(box, (h, w))
    except InvalidBoxError as exc:
        assert "\n" not in str(exc) and "outside" in str(exc) and outside, (box, (h, w))
        return
    assert not outside  # refused only when no pixel of the image is inside
    np.testing.assert_array_equal(validate_box(out, (h, w)), out)
    x0, y0, x1, y1 = out
    assert 0 <= x0 <= x1 <= w - 1 and 0 <= y0 <= y1 <= h - 1, (out, (h, w))  # zero width/height is valid


@FAST
@given(st.sampled_from([np.nan, np.inf, -np.inf]), st.sampled_from([0, 1, 2, 3]))
def test_validate_box_refuses_non_finite(value: float, index: int) -> None:
    box = np.array([1.0, 1.0, 10.0, 10.0])
    box[index] = value
    with pytest.raises(InvalidBoxError, match="finite"):
        validate_box(box, (20, 20))


@st.composite
def image_and_box(draw: st.DrawFn) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """An image size (incl. 3x900 / 900x3) and an inclusive box at least 4 model pixels wide, or full-size."""
    h, w = draw(st.one_of(st.tuples(sides, sides), st.sampled_from([(3, 900), (900, 3), (1, 700), (700, 1)])))
    scale = MODEL_SIZE / max(h, w)
    min_len = int(np.ceil(4 / scale)) + 1

    def span(n: int) -> tuple[int, int]:
        if n <= min_len:
            return 0, n - 1
        length = draw(st.integers(min_len, n))
        start = draw(st.integers(0, n - length))
        return start, start + length - 1

    (y0, y1), (x0, x1) = span(h), span(w)
    return (h, w), (x0, y0, x1, y1)


@FAST
@given(image_and_box())
def test_box_mask_survives_model_frame_round_trip(case: tuple[tuple[int, int], tuple[int, int, int, int]]) -> None:
    """A box mask taken into the model frame as preprocess does (resize, pad) and brought back through
    ``upsample_logits`` covers the same pixels within 1 px of the box edges.

    Exception, inherent to a model frame coarser than the image (``s = 256 / max(H, W) < 1``): an edge within
    half a model pixel of the image border may move by up to ``1 + 0.5 / s`` px, as bilinear upsampling holds
    the outermost model pixel's value up to the border. Corners may round off, so the inside is checked along
    the box's middle row and column.
    """
    (h, w), (x0, y0, x1, y1) = case
    mask = np.zeros((h, w), np.float32)
    mask[y0 : y1 + 1, x0 : x1 + 1] = 1.0
    frame = FrameInfo((h, w), resized_size((h, w)))
    rh, rw = frame.resized_size
    model = np.zeros((1, MODEL_SIZE, MODEL_SIZE), np.float32)
    model[0, :rh, :rw] = resize_image(mask, frame.resized_size)
    back = upsample_logits((model - 0.5) * 20.0, frame)[0] > 0
    assert back.shape == (h, w)
    s = MODEL_SIZE / max(h, w)
    border = 0.5 / s if s < 1 else 0.0

    def tolerance(edge: int, n: int) -> float:
        return 1 + border if min(edge, n - 1 - edge) < border + 1 else 1

    row, col = back[(y0 + y1) // 2], back[:, (x0 + x1) // 2]
    assert row.any() and col.any(), "the mask vanished"
    for got, want, n in (
        (np.flatnonzero(row)[[0, -1]], (x0, x1), w),
        (np.flatnonzero(col)[[0, -1]], (y0, y1), h),
    ):
        for g, e in zip(got, want):
            assert abs(int(g) - e) <= tolerance(e, n), (got, want, (h, w))
        assert row[x0 + 1 : x1].all() and col[y0 + 1 : y1].all(), "holes inside the box"
    ys, xs = np.nonzero(back)
    assert xs.min() >= x0 - tolerance(x0, w) and xs.max() <= x1 + tolerance(x1, w)
    assert ys.min() >= y0 - tolerance(y0, h) and ys.max() <= y1 + tolerance(y1, h)


@st.composite
def volume_and_boxes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[int]]:
    d, h, w = draw(st.integers(1, 5)), draw(st.integers(4, 48)), draw(st.integers(4, 48))
    n = draw(st.integers(1, 4))
    boxes = []
    for _ in range(n):
        x0, x1 = sorted(draw(st.lists(st.integers(0, w - 1), min_size=2, max_size=2, unique=True)))
        y0, y1 = sorted(draw(st.lists(st.integers(0, h - 1), min_size=2, max_size=2, unique=True)))
        z0, z1 = sorted(draw(st.lists(st.integers(0, d - 1), min_size=2, max_size=2)))
        boxes.append([x0, y0, z0, x1, y1, z1])
    values = draw(st.lists(st.integers(1, 65535), min_size=n, max_size=n))
    vol = np.random.default_rng(0).integers(0, 255, (d, h, w), dtype=np.uint8)
    return vol, np.array(boxes, dtype=np.float64), values


@FAST
@given(volume_and_boxes())
def test_labels_only_take_the_given_values(case: tuple[np.ndarray, np.ndarray, list[int]]) -> None:
    vol, boxes, values = case
    predictor = Predictor(BoxBackend())
    labels2d = segment_slice(predictor, vol[0], boxes[:, [0, 1, 3, 4]])
    assert set(np.unique(labels2d)) <= set(range(len(boxes) + 1))
    assert labels2d.dtype == np.uint8
    assert labels2d.max() == len(boxes)  # the fake mask is the box: the last box always shows
    labels3d = propagate_boxes(predictor, vol, boxes, label_values=values)
    assert labels3d.shape == vol.shape
    assert set(np.unique(labels3d)) <= {0, *values}
    assert labels3d.dtype == (np.uint8 if max(values) <= 255 else np.uint16)
    covered = np.zeros(len(vol), bool)
    for _, _, z0, _, _, z1 in boxes:
        covered[int(z0) : int(z1) + 1] = True
    assert not labels3d[~covered].any(), "labels outside every box's slices"


def _rotation(draw: st.DrawFn) -> np.ndarray:
    """A random orthonormal 3x3 matrix (rotation, or rotation with a reflection)."""
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
    assume(np.linalg.norm(q) > 0.1)
    a, b, c, d = q / np.linalg.norm(q)
    rot = np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ])  # fmt: skip
    if draw(st.booleans()):
        rot[:, 2] *= -1  # left-handed grid
    return rot


@st.composite
def geometry(draw: st.DrawFn) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    spacing = tuple(draw(st.floats(0.05, 20.0)) for _ in range(3))
    origin = tuple(draw(st.floats(-1000.0, 1000.0)) for _ in range(3))
    return spacing, origin, tuple(_rotation(draw).ravel())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geometry(), st.integers(1, 300))
def test_nifti_writer_keeps_labels_and_geometry(
    tmp_path_factory: pytest.TempPathFactory, geo: tuple[tuple[float, ...], ...], top: int
) -> None:
    spacing, origin, direction = geo
    rng = np.random.default_rng(top)
    labels = rng.integers(0, top + 1, (3, 5, 4)).astype(np.uint16)
    ref = Volume(np.zeros((3, 5, 4), np.int16), spacing=spacing, origin=origin, direction=direction)
    path = write_labels_nifti(labels, ref, Path(tmp_path_factory.mktemp("nii")) / "labels.nii.gz")
    back = read_image(path)
    np.testing.assert_array_equal(back.array, labels)
    assert back.array.dtype == (np.uint8 if labels.max() <= 255 else np.uint16)
    np.testing.assert_allclose(back.spacing, spacing, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(back.origin, origin, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(back.direction, direction, rtol=0, atol=1e-6)
