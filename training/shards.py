"""Reading the training shards written by ``prepare_data.py`` and the teacher-embedding cache."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsam_desktop.atomic import atomic_write

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
            ShardItem(
                r["id"],
                int(r["shard"]),
                int(r["row"]),
                r["group"],
                r["modality"],
                r["source"],
                r["split"],
                int(r["h"]),
                int(r["w"]),
                int(r["rank"]),
            )
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


def model_input(images: np.ndarray) -> torch.Tensor:
    """Shard images (N, 256, 256, 3) uint8 -> encoder input (N, 3, 256, 256) float32 in [0, 1].

    The one conversion of the stored ``core.preprocess.preprocess_uint8`` images for every training script
    (teacher cache, distillation, int8 calibration); the result is channels-last in memory (a permuted view).
    """
    return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0


IDENTITY = "identity"
VARIANTS = (IDENTITY, "hflip", "vflip")  # augmentations with their own teacher embedding


def apply_variant(image: np.ndarray, h: int, w: int, variant: str) -> np.ndarray:
    """Shard image (256, 256, C) as if the original had been flipped before preprocessing.

    Only the content region ``[0:h, 0:w]`` is flipped; the padding stays bottom/right. ``identity`` returns
    the input itself (no copy); the flips return a new array. The single definition shared by
    ``teacher_cache.py`` (which computes the target) and ``distill.py`` (which feeds the student).
    """
    if variant == IDENTITY:
        return image
    out = np.array(image, copy=True)
    if variant == "hflip":
        out[:h, :w] = image[:h, :w][:, ::-1]
    elif variant == "vflip":
        out[:h, :w] = image[:h, :w][::-1]
    else:
        raise ValueError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    return out


def parse_variants(spec: str) -> tuple[str, ...]:
    """``"identity,hflip"`` -> ("identity", "hflip"): identity always first, duplicates dropped, flips in order."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    return tuple(dict.fromkeys([IDENTITY, *names]))


class TeacherCache:
    """Teacher embeddings, one fp16 (256, 64, 64) ``.npy`` per item and variant, written atomically.

    ``<id>.npy`` holds the unaugmented (identity) embedding, ``<id>.<variant>.npy`` a flipped one.
    """

    def __init__(self, data_dir: Path, tag: str) -> None:
        self.dir = Path(data_dir) / f"teacher_{tag}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, item_id: str, variant: str = IDENTITY) -> Path:
        if variant == IDENTITY:
            return self.dir / f"{item_id}.npy"
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        return self.dir / f"{item_id}.{variant}.npy"

    def has(self, item_id: str, variant: str = IDENTITY) -> bool:
        return self.path(item_id, variant).is_file()

    def put(self, item_id: str, embedding: np.ndarray, variant: str = IDENTITY) -> None:
        final = self.path(item_id, variant)
        with atomic_write(final, suffix=".npy") as tmp:  # a .npy temp name: np.save appends .npy otherwise
            np.save(tmp, embedding.astype(np.float16))

    def get(self, item_id: str, variant: str = IDENTITY) -> np.ndarray:
        return np.load(self.path(item_id, variant))
