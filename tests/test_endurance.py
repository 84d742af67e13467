"""Endurance of the engine with a fast fake backend: many prompts and propagations do not leak memory
beyond the embedding cache's bound."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
from fakes import BoxBackend

from medsam_desktop.core.inference.cache import EmbeddingCache
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.core.inference.propagation import propagate_boxes

EMBEDDING_FP16 = 256 * 64 * 64 * 2  # bytes of one cached embedding
MARGIN = 1 * 2**20  # allowed drift on top of the cache bound (interpreter noise, lru_cache'd matrices)


def _current() -> int:
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
        baseline = _current()
        for i in range(50, 1000):
            prompt(i)
        after_prompts = _current()
        first = None
        for _ in range(100):
            labels = propagate_boxes(predictor, volume, boxes3d, volume_key="vol")
            first = labels if first is None else first
            assert np.array_equal(labels, first), "propagation is not deterministic"
        del labels, first
        after_propagations = _current()
    finally:
        tracemalloc.stop()
    assert cache.nbytes <= cache.max_bytes and len(cache) <= 3
    assert backend.decodes >= 1000 + 100 * 3 and backend.encodes >= 100 and cache.hits > 1000
    limit = baseline + cache.max_bytes + MARGIN
    assert after_prompts <= limit, f"1000 prompts grew memory by {(after_prompts - baseline) / 2**20:.1f} MiB"
    assert after_propagations <= limit, (
        f"100 propagations grew memory by {(after_propagations - baseline) / 2**20:.1f} MiB"
    )
