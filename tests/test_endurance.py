"""Endurance of the engine with a fast fake backend: once the embedding cache is full, many prompts and
propagations do not grow traced memory at all (a leak of 1 MiB over the whole loop fails)."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
from fakes import BoxBackend

from medsam_desktop.core.inference.cache import EmbeddingCache
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.core.inference.propagation import propagate_boxes

EMBEDDING_FP16 = 256 * 64 * 64 * 2  # bytes of one cached embedding
#: growth allowed after the warm-up (the cache is full then): interpreter noise measures ~2 KiB over the whole
#: loop, so a leak of 1 MiB in all (about 1 KiB per prompt) exceeds it 4x
MARGIN = 256 * 2**10


def _current(backend: BoxBackend) -> int:
    """Traced bytes now; the fake's own record of every decoded box is the test's memory, not the engine's."""
    backend.prompts.clear()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_thousand_prompts_and_hundred_propagations_stay_flat() -> None:
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (8, 48, 64), dtype=np.uint8)
    cache = EmbeddingCache(max_bytes=3 * EMBEDDING_FP16)  # holds 3 of the 8 slices: constant eviction
    backend = BoxBackend()
    predictor = Predictor(backend, cache)
    boxes = np.column_stack(
        [rng.integers(0, 30, 1000), rng.integers(0, 20, 1000), rng.integers(34, 64, 1000), rng.integers(28, 48, 1000)]
    ).astype(np.float64)
    boxes3d = np.array([[4, 4, 2, 40, 30, 4], [20, 10, 3, 60, 44, 4]], dtype=np.float64)  # 3 slices: cache hits

    def prompt(i: int) -> None:
        z = (i // 10) % 8  # ten prompts per slice, then the next slice (evicting the oldest)
        emb = predictor.encode(volume[z], key=("vol", z))
        pred = predictor.decode(emb, boxes[i])
        assert pred.masks.shape == (1, 48, 64) and pred.masks.any()

    tracemalloc.start()
    try:
        for i in range(50):  # warm-up: fills the cache and numpy/lru caches
            prompt(i)
        propagate_boxes(predictor, volume, boxes3d, volume_key="vol")
        assert cache.nbytes == cache.max_bytes  # full: from here on the cache may only replace entries
        baseline = _current(backend)
        for i in range(50, 1000):
            prompt(i)
        after_prompts = _current(backend)
        first = None
        for _ in range(100):
            labels = propagate_boxes(predictor, volume, boxes3d, volume_key="vol")
            first = labels if first is None else first
            assert np.array_equal(labels, first), "propagation is not deterministic"
        del labels, first
        after_propagations = _current(backend)
    finally:
        tracemalloc.stop()
    assert cache.nbytes <= cache.max_bytes and len(cache) <= 3
    assert backend.decodes >= 1000 + 100 * 3 and backend.encodes >= 100 and cache.hits > 1000
    # the baseline already holds a full cache: nothing is added on top of it, only interpreter noise is allowed
    grown = after_prompts - baseline
    assert grown <= MARGIN, f"950 prompts grew traced memory by {grown / 2**10:.0f} KiB"
    grown = after_propagations - baseline
    assert grown <= MARGIN, f"950 prompts and 100 propagations grew traced memory by {grown / 2**10:.0f} KiB"
