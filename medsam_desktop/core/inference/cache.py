"""Thread-safe LRU cache of slice embeddings, bounded in bytes, optionally storing fp16."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np


class EmbeddingCache:
    """Maps a key (e.g. ``(volume_id, axis, index)``) to an embedding array.

    ``max_bytes`` bounds the stored bytes; the least recently used entries are evicted first. With
    ``fp16=True`` arrays are stored as float16 (half the memory) and returned as float32.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, fp16: bool = True) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.fp16 = fp16
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            arr = self._data.get(key)
            if arr is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
        return arr.astype(np.float32) if arr.dtype != np.float32 else arr

    def as_served(self, value: np.ndarray) -> np.ndarray:
        """``value`` as a later :meth:`get` of it would return (float16-rounded when the cache stores float16):
        the caller of a miss uses these values too, so a result never depends on whether a slice was cached."""
        if self.fp16:
            return np.asarray(value, dtype=np.float16).astype(np.float32)
        return np.asarray(value, dtype=np.float32)

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Store a private, read-only copy of ``value`` (never a view of the caller's buffer: a later write to
        that buffer must not change what is served, and the bytes held must be the bytes counted)."""
        arr = np.ascontiguousarray(value, dtype=np.float16 if self.fp16 else np.float32)
        if arr is value or not arr.flags.owndata:  # no conversion happened: ``arr`` shares the caller's memory
            arr = arr.copy()
        arr.setflags(write=False)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if arr.nbytes > self.max_bytes:
                return  # never holds more than the bound, even for one entry
            self._data[key] = arr
            self._bytes += arr.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.nbytes

    def discard(self, predicate: object = None) -> None:
        """Drop every entry (or those whose key satisfies ``predicate(key)``)."""
        with self._lock:
            for key in [k for k in self._data if predicate is None or predicate(k)]:  # type: ignore[operator]
                self._bytes -= self._data.pop(key).nbytes

    def set_max_bytes(self, max_bytes: int) -> None:
        with self._lock:
            self.max_bytes = max_bytes
            while self._bytes > self.max_bytes and self._data:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.nbytes
