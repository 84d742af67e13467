"""Review: the embedding cache must never alias the caller's array (stale results, unbounded memory)."""

from __future__ import annotations

import numpy as np
import pytest

from medsam_desktop.core.inference.cache import EmbeddingCache


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
