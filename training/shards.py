"""Reading the training shards written by ``prepare_data.py`` and the teacher-embedding cache."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_SIZE = 512  # items per shard file


@dataclass(frozen=True)
class ShardItem:
    id: str
    shard: int
    row: int
    group: str
    modality: str
    source: str
    split: str
    h: int
    w: int
    rank: int


def read_manifest(data_dir: Path) -> list[ShardItem]:
    with (Path(data_dir) / "manifest.csv").open(newline="") as fh:
        return [
            ShardItem(r["id"], int(r["shard"]), int(r["row"]), r["group"], r["modality"], r["source"],
                      r["split"], int(r["h"]), int(r["w"]), int(r["rank"]))
            for r in csv.DictReader(fh)
        ]


class ShardImages:
    """Memory-mapped access to the (256, 256, 3) uint8 images (bounded memory: pages come from disk)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._shards: dict[int, np.ndarray] = {}

    def get(self, item: ShardItem) -> np.ndarray:
        arr = self._shards.get(item.shard)
        if arr is None:
            arr = np.load(self.data_dir / f"shard_{item.shard:04d}.npy", mmap_mode="r")
            self._shards[item.shard] = arr
        return np.array(arr[item.row])  # a private, writable copy


class TeacherCache:
    """Teacher embeddings, one fp16 (256, 64, 64) ``.npy`` per item, written atomically."""

    def __init__(self, data_dir: Path, tag: str) -> None:
        self.dir = Path(data_dir) / f"teacher_{tag}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, item_id: str) -> Path:
        return self.dir / f"{item_id}.npy"

    def has(self, item_id: str) -> bool:
        return self.path(item_id).is_file()

    def put(self, item_id: str, embedding: np.ndarray) -> None:
        tmp = self.dir / f"{item_id}.tmp.npy"
        np.save(tmp, embedding.astype(np.float16))
        os.replace(tmp, self.path(item_id))

    def get(self, item_id: str) -> np.ndarray:
        return np.load(self.path(item_id))
