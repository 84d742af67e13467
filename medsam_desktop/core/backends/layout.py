"""The exported network: its files, the tensors between them, and the chunked decode every exported runtime runs.

An export is one encoder ((1, 3, 256, 256) image in [0, 1] -> (1, 256, 64, 64) embedding), ``prepare`` (the
decoder's box-independent image side: embedding -> keys (1, 4096, 256), keys_pe_t (1, 256, 4096)) and one
decoder per box count in :data:`DECODER_SIZES` (keys, keys_pe_t + boxes (K, 4) in the 256 model frame ->
logits (K, 256, 256), iou (K,)). The same stems serve ONNX files (``.onnx``, the cached export) and OpenVINO IR
(``.xml`` + ``.bin``, the shipped files); the int8 encoder is ``encoder-int8``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENCODER, ENCODER_INT8, PREPARE, DECODER = "encoder", "encoder-int8", "prepare", "decoder"
#: box counts with their own static decoder export, largest first. The decoder rewrite's branches depend on the
#: box count, so each count is its own trace. OpenVINO bf16 per box: 13.3 ms (1 box), 10.9 (2), 10.3 (4); each
#: compiled decoder holds ~100 MB of its own buffers (RSS with sizes 1 / 2,1 / 4,2,1: 257 / 355 / 471 MB), so
#: the 4-box one is not worth its memory (session 4, 2 threads, docs/performance.md)
DECODER_SIZES = (2, 1)
IMAGE_TENSORS = ("keys", "keys_pe_t")  # prepare's outputs = the decoders' first two inputs, by name


def decoder_stem(boxes: int) -> str:
    """Stem of the decoder exported for ``boxes`` boxes (one of :data:`DECODER_SIZES`)."""
    return DECODER if boxes == 1 else f"{DECODER}_b{boxes}"


def split_boxes(n: int) -> list[int]:
    """``n`` boxes as a sequence of :data:`DECODER_SIZES` chunks, largest first: 5 -> [2, 2, 1]."""
    sizes = []
    for size in DECODER_SIZES:
        k, n = divmod(n, size)
        sizes += [size] * k
    return sizes


@dataclass(frozen=True)
class NetworkFiles:
    """The files of one exported network: ``encoder``, ``prepare`` and ``decoders`` (box count -> file)."""

    encoder: Path
    prepare: Path
    decoders: dict[int, Path]

    @classmethod
    def in_folder(cls, folder: Path, suffix: str, encoder: Path | None = None) -> NetworkFiles:
        """The standard names in ``folder`` (``suffix`` ``.onnx`` or ``.xml``); ``encoder`` replaces the encoder."""
        folder = Path(folder)
        return cls(
            encoder=encoder or folder / f"{ENCODER}{suffix}",
            prepare=folder / f"{PREPARE}{suffix}",
            decoders={k: folder / f"{decoder_stem(k)}{suffix}" for k in DECODER_SIZES},
        )

    def all(self) -> tuple[Path, ...]:
        return (self.encoder, self.prepare, *self.decoders.values())


class ChunkedDecoder:
    """Prepares a call's image once, then decodes its boxes in chunks of :data:`DECODER_SIZES` (each size has
    its own static export), all under the backend's lock (a prepared image may live in the runtime's own
    buffers until the next call)."""

    fallback_reason: str | None = None  # set by the loader when it had to change what was asked for
    _lock: threading.Lock

    def _prepare(self, embedding: np.ndarray) -> tuple[Any, Any]:
        """embedding (1, 256, 64, 64) -> keys (1, 4096, 256), keys_pe_t (1, 256, 4096), in whatever form
        :meth:`_decode_chunk` takes them; called with the lock held."""
        raise NotImplementedError

    def _decode_chunk(self, image: tuple[Any, Any], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """prepared image, boxes (K, 4) with K in DECODER_SIZES -> logits (K, 256, 256), iou (K,); called with
        the lock held."""
        raise NotImplementedError

    def decode(self, embedding: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = np.ascontiguousarray(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        if not len(b):
            return np.zeros((0, 256, 256), np.float32), np.zeros((0,), np.float32)
        outs, start = [], 0
        with self._lock:
            image = self._prepare(np.ascontiguousarray(embedding, dtype=np.float32))
            for size in split_boxes(len(b)):
                outs.append(self._decode_chunk(image, b[start : start + size]))
                start += size
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
