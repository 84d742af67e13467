"""Box transforms and the byte-bounded embedding cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medsam_desktop.core.inference.boxes import (
    InvalidBoxError,
    box_from_model,
    box_to_model,
    mask_bbox,
    mask_bbox_model,
    validate_box,
)
from medsam_desktop.core.inference.cache import EmbeddingCache


def test_box_scaling_uses_longest_side() -> None:
    np.testing.assert_allclose(box_to_model([100, 50, 300, 200], (400, 800)), [32, 16, 96, 64])
    np.testing.assert_allclose(box_to_model([10, 10, 20, 30], (128, 64)), [20, 20, 40, 60])


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 4096),
    w=st.integers(1, 4096),
    box=st.lists(st.floats(0, 4096, allow_nan=False), min_size=4, max_size=4),
)
def test_box_round_trip(h: int, w: int, box: list[float]) -> None:
    back = box_from_model(box_to_model(np.array(box), (h, w)), (h, w))
    np.testing.assert_allclose(back, box, rtol=1e-9, atol=1e-9)


def test_validate_box_sorts_clips_and_rejects() -> None:
    np.testing.assert_allclose(validate_box([50, 60, 10, 5], (100, 100)), [10, 5, 50, 60])
    np.testing.assert_allclose(validate_box([-20, -5, 30, 500], (100, 80)), [0, 0, 30, 99])
    with pytest.raises(InvalidBoxError, match="outside"):
        validate_box([200, 200, 300, 300], (100, 100))
    with pytest.raises(InvalidBoxError, match="outside"):
        validate_box([10, 100, 40, 100], (100, 100))  # a zero-height box one row below the image
    with pytest.raises(InvalidBoxError, match="4 finite"):
        validate_box([1, 2, np.nan, 4], (100, 100))


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        ([637, 521, 661, 521], (522, 700), [637, 521, 661, 521]),  # a 1-px-thin target on the last row
        ([10, 10, 10, 40], (100, 100), [10, 10, 10, 40]),  # zero width
        ([0, 0, 0, 0], (100, 100), [0, 0, 0, 0]),  # one pixel, the corner
        ([99, -5, 99, 150], (100, 100), [99, 0, 99, 99]),  # zero width, clipped in y
        ([5, 0, 30, 0], (1, 700), [5, 0, 30, 0]),  # a one-row image
    ],
)
def test_validate_box_keeps_zero_width_or_height_boxes(
    box: list[float], size: tuple[int, int], expected: list[float]
) -> None:
    """Inclusive corners: x0 == x1 is a one-pixel-wide box, a valid prompt in the model frame (LiteMedSAM
    segments it); the model-frame box is the image box times 256 / max(H, W), as ``resize_box_to_256``."""
    out = validate_box(box, size)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(box_to_model(out, size), np.array(expected) * 256 / max(size))


def test_mask_bbox_and_challenge_prompt() -> None:
    mask = np.zeros((512, 512), bool)
    mask[100:201, 50:151] = True
    np.testing.assert_array_equal(mask_bbox(mask), [50, 100, 150, 200])
    # 256/512 = 0.5: x 25..75, y 50..100 in the model frame, +3 px margin
    np.testing.assert_array_equal(mask_bbox_model(mask), [22, 47, 78, 103])
    assert mask_bbox(np.zeros((4, 4), bool)) is None
    edge = np.zeros((256, 256), bool)
    edge[0:10, 250:256] = True
    np.testing.assert_array_equal(mask_bbox_model(edge), [247, 0, 256, 12])  # clipped at 256, as get_bbox256


def _emb(value: float) -> np.ndarray:
    return np.full((1, 256, 64, 64), value, dtype=np.float32)


def test_cache_evicts_least_recently_used_by_bytes() -> None:
    one = _emb(0).astype(np.float16).nbytes  # 2 MiB in fp16
    cache = EmbeddingCache(max_bytes=3 * one, fp16=True)
    for i in range(3):
        cache.put(i, _emb(i))
    assert cache.get(0) is not None  # 0 becomes most recent
    cache.put(3, _emb(3))
    assert 1 not in cache and {0, 2, 3} <= {k for k in range(4) if k in cache}
    assert cache.nbytes == 3 * one
    got = cache.get(3)
    assert got.dtype == np.float32 and got[0, 0, 0, 0] == 3.0


def test_cache_fp32_and_oversized_entries() -> None:
    cache = EmbeddingCache(max_bytes=_emb(0).nbytes - 1, fp16=False)
    cache.put("big", _emb(1))
    assert len(cache) == 0 and cache.nbytes == 0  # never above the bound
    cache.set_max_bytes(10 * _emb(0).nbytes)
    cache.put("a", _emb(1.2345678))
    assert cache.get("a")[0, 0, 0, 0] == np.float32(1.2345678)  # fp32 stored exactly


def test_cache_concurrent_use_keeps_the_bound() -> None:
    one = _emb(0).astype(np.float16).nbytes
    cache = EmbeddingCache(max_bytes=5 * one)
    errors: list[Exception] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(200):
                k = int(rng.integers(0, 20))
                if rng.random() < 0.5:
                    cache.put(k, _emb(k))
                else:
                    got = cache.get(k)
                    assert got is None or got[0, 0, 0, 0] == k
                assert cache.nbytes <= 5 * one
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.nbytes == len(cache) * one <= 5 * one


# the cache never aliases the caller's array (stale results, unbounded memory)


@pytest.mark.parametrize("fp16", [False, True])
def test_cached_entry_is_independent_of_the_callers_buffer(fp16: bool) -> None:
    """A view of a larger, writable buffer (e.g. one row of a batch) is stored as its own copy: later writes to
    the buffer never change what the cache serves, and the cache holds only the bytes it counts."""
    dtype = np.float16 if fp16 else np.float32
    batch = np.zeros((2, 256, 64, 64), dtype)
    cache = EmbeddingCache(max_bytes=64 * 2**20, fp16=fp16)
    cache.put("a", batch[:1])
    batch[:] = 7  # the caller reuses its buffer for the next batch
    got = cache.get("a")
    assert got is not None and float(np.abs(got).max()) == 0.0
    assert cache._data["a"].base is None or cache._data["a"].base.nbytes == cache._data["a"].nbytes


def test_put_leaves_the_callers_array_writable() -> None:
    emb = np.zeros((1, 256, 64, 64), np.float32)
    EmbeddingCache(fp16=False).put("a", emb)
    emb[0, 0, 0, 0] = 1.0  # raised "assignment destination is read-only" when the cache froze the caller's array


class _RandomEncoder:
    """Backend stub whose embeddings use the full float32 precision (not representable in float16)."""

    name = "random"

    def encode(self, images: np.ndarray) -> np.ndarray:
        return np.random.default_rng(int(images.sum()) % 1000).normal(size=(1, 256, 64, 64)).astype(np.float32)

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


@pytest.mark.parametrize("fp16", [True, False])
def test_a_cache_miss_gives_the_values_a_later_hit_gives(fp16: bool) -> None:
    """The first mask on a slice must not differ from the next one on the same slice (cached, fp16-rounded)."""
    from medsam_desktop.core.inference.predictor import Predictor

    cache = EmbeddingCache(fp16=fp16)
    predictor = Predictor(_RandomEncoder(), cache)  # type: ignore[arg-type]
    image = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48)
    first = predictor.encode(image, key=("vol", 3))
    assert cache.misses == 1 and len(cache) == 1
    second = predictor.encode(image, key=("vol", 3))
    assert cache.hits == 1
    np.testing.assert_array_equal(first.array, second.array)
    raw = predictor.encode(image)  # no key: no cache, the backend's own values
    assert np.array_equal(raw.array, first.array) == (not fp16)
