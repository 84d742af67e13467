"""Turn a folder of medical images into 256x256 uint8 training shards for distillation.

Sources: ``../shared/data/pool`` (read through its ``manifest.csv``) or any folder of NIfTI/NRRD/MHA/DICOM/
PNG/JPG/TIFF/npz files. Volumes are cut into axial slices (array axis 0) with modality-aware intensities
(CT soft-tissue window, MR/PET/other 0.5-99.5 percentile of non-zero voxels), 2D images are used as they are;
near-constant slices are dropped. Every slice goes through ``medsam_desktop.core.inference.preprocess`` (the same path
the app uses) and is stored as (256, 256, 3) uint8.

Output folder: ``shard_XXXX.npy`` (N, 256, 256, 3) uint8 and ``manifest.csv`` with one row per item:
id, shard, row, group, modality, source, split, h, w, rank. ``group`` is the source file: all slices of a
volume share it, and both held-out splits are drawn by group: ``val`` (5 % of the groups by hash: the
distillation's validation MSE) and ``proxy`` (per modality, groups in hash order until 15 % of that modality's
items: the teacher-agreement proxy that selects checkpoints, ``agreement.py``; modalities with fewer than
``MIN_PROXY_GROUPS`` source files keep all theirs for training). Neither is ever trained on. ``rank``
interleaves modalities so that any prefix of the ranked items is balanced (the teacher cache is filled in rank
order).

``--resplit DIR`` recomputes the split column of an existing output folder (shards untouched), e.g. after a
change of ``--proxy-fraction``.

Usage: python training/prepare_data.py --pool ../shared/data/pool --out ~/.cache/medsam_desktop/distill
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam_desktop.core.inference.intensity import percentile_normalise, to_display_uint8, window
from medsam_desktop.core.inference.preprocess import preprocess_uint8
from medsam_desktop.io import read_image
from training.shards import SHARD_SIZE

log = logging.getLogger("prepare_data")

IMAGE_EXTS = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".nii",
    ".gz",
    ".nrrd",
    ".mha",
    ".mhd",
    ".mgz",
    ".dcm",
    ".npz",
}


@dataclass(frozen=True)
class SourceFile:
    path: Path
    modality: str
    source: str


@dataclass
class Item:
    image: np.ndarray  # (256, 256, 3) uint8
    group: str
    modality: str
    source: str
    h: int
    w: int


def is_forbidden(path: Path) -> bool:
    """Eval images are never used for training."""
    parts = {p.lower() for p in path.parts}
    return "eval" in parts or any("holdout" in p for p in parts)


def list_pool(pool: Path) -> list[SourceFile]:
    out = []
    with (pool / "manifest.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            path = pool.parent / row["path"]
            out.append(SourceFile(path, row["modality"].lower(), row["source"]))
    return out


def list_folder(folder: Path) -> list[SourceFile]:
    out = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTS:
            out.append(SourceFile(path, "unknown", folder.name))
    return out


def volume_to_uint8(array: np.ndarray, modality: str, raw_dtype: np.dtype, path: Path) -> np.ndarray:
    """Whole volume/image -> uint8 (D, H, W[, 3]) with the modality rule."""
    if array.dtype == np.uint8:
        return array
    if modality == "ct":
        data = array.astype(np.float32)
        if array.dtype == np.uint16 and path.suffix.lower() == ".png":
            data = data - 1024.0  # pool CT DICOM PNGs store HU + 1024
        if data.min() < -200 or data.max() > 400:
            return window(data, 40.0, 400.0)
        return percentile_normalise(data)
    if modality in ("mr", "pet", "unknown", "microscopy"):
        return percentile_normalise(array)
    return to_display_uint8(array, "unknown")


def slice_indices(n: int, max_slices: int) -> list[int]:
    if n <= max_slices:
        return list(range(n))
    return sorted({round(i) for i in np.linspace(0, n - 1, max_slices)})


def informative(slice_u8: np.ndarray, min_std: float = 3.0, min_fg: float = 0.02) -> bool:
    grey = slice_u8 if slice_u8.ndim == 2 else slice_u8.mean(axis=2)
    return float(grey.std()) >= min_std and float((grey > 5).mean()) >= min_fg


def items_from_file(src: SourceFile, root: Path, max_slices: int) -> Iterator[Item]:
    vol = read_image(src.path)
    modality = src.modality if src.modality != "unknown" else vol.modality.lower()
    data = volume_to_uint8(vol.array, modality, vol.array.dtype, src.path)
    group = str(src.path.relative_to(root)) if src.path.is_relative_to(root) else str(src.path)
    for z in slice_indices(data.shape[0], max_slices):
        sl = data[z]
        if not informative(sl):
            continue
        img, info = preprocess_uint8(sl)
        yield Item(img, group, modality, src.source, *info.resized_size)


MIN_PROXY_GROUPS = 4  # a modality needs this many source files to give some to the proxy split


def group_hash(group: str) -> float:
    """A stable number in [0, 1] per source file (the split draws)."""
    return int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def assign_splits(groups: list[tuple[str, str]], val_fraction: float, proxy_fraction: float) -> dict[str, str]:
    """``{group: "val" | "proxy" | "train"}`` for ``groups`` = one ``(group, modality)`` per item.

    ``val``: groups whose hash is below ``val_fraction`` (the split every earlier run used). ``proxy``: per
    modality, the other groups in hash order until at least ``proxy_fraction`` of the modality's items are in
    it (whole groups; none for a modality with fewer than MIN_PROXY_GROUPS groups), so every modality with
    enough sources is represented however its items are spread over volumes and images."""
    split = {g: "val" if group_hash(g) < val_fraction else "train" for g, _ in groups}
    by_modality: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for g, modality in groups:
        by_modality[modality][g] += 1
    for sizes in by_modality.values():
        if len(sizes) < MIN_PROXY_GROUPS or proxy_fraction <= 0:
            continue
        target, taken = proxy_fraction * sum(sizes.values()), 0
        for g in sorted((g for g in sizes if split[g] == "train"), key=group_hash):
            if taken >= target:
                break
            split[g], taken = "proxy", taken + sizes[g]
    return split


def balanced_ranks(items: list[Item], seed: int) -> list[int]:
    """Rank items by round-robin over modalities (then sources), shuffled within each bucket."""
    rng = random.Random(seed)
    buckets: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, it in enumerate(items):
        buckets[it.modality][it.source].append(i)
    queues = {}
    for mod, by_source in buckets.items():
        for lst in by_source.values():
            rng.shuffle(lst)
        # interleave the sources of one modality
        order, lists = [], [list(v) for v in by_source.values()]
        while any(lists):
            for lst in lists:
                if lst:
                    order.append(lst.pop())
        queues[mod] = order
    ranked: list[int] = []
    mods = sorted(queues)
    while any(queues[m] for m in mods):
        for m in mods:
            if queues[m]:
                ranked.append(queues[m].pop(0))
    ranks = [0] * len(items)
    for r, i in enumerate(ranked):
        ranks[i] = r
    return ranks


def write_shards(items: list[Item], out: Path, val_fraction: float, proxy_fraction: float, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ranks = balanced_ranks(items, seed)
    splits = assign_splits([(it.group, it.modality) for it in items], val_fraction, proxy_fraction)
    order = sorted(range(len(items)), key=lambda i: ranks[i])
    rows = []
    for start in range(0, len(order), SHARD_SIZE):
        idx = order[start : start + SHARD_SIZE]
        shard = start // SHARD_SIZE
        arr = np.stack([items[i].image for i in idx])
        tmp = out / f"shard_{shard:04d}.tmp.npy"
        np.save(tmp, arr)
        tmp.replace(out / f"shard_{shard:04d}.npy")
        for row, i in enumerate(idx):
            it = items[i]
            rows.append(
                {
                    "id": f"{shard:04d}_{row:04d}",
                    "shard": shard,
                    "row": row,
                    "group": it.group,
                    "modality": it.modality,
                    "source": it.source,
                    "split": splits[it.group],
                    "h": it.h,
                    "w": it.w,
                    "rank": ranks[i],
                }
            )
    write_manifest(out, rows)


def write_manifest(out: Path, rows: list[dict]) -> None:
    tmp = out / "manifest.tmp.csv"
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "manifest.csv")


def resplit(out: Path, val_fraction: float, proxy_fraction: float) -> dict[str, dict[str, int]]:
    """Recompute the split column of ``out/manifest.csv``; returns item counts per split and modality."""
    with (out / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    splits = assign_splits([(r["group"], r["modality"]) for r in rows], val_fraction, proxy_fraction)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        r["split"] = splits[r["group"]]
        counts[r["split"]][r["modality"]] += 1
    write_manifest(out, rows)
    return {k: dict(v) for k, v in counts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pool", type=Path, help="folder with manifest.csv (../shared/data/pool)")
    src.add_argument("--input", type=Path, help="any folder of images/volumes")
    src.add_argument("--resplit", type=Path, help="an output folder: recompute its split column only")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--max-slices-per-volume", type=int, default=40)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--proxy-fraction", type=float, default=0.15, help="per modality, held out for agreement")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.resplit:
        counts = resplit(args.resplit, args.val_fraction, args.proxy_fraction)
        log.info("split of %s: %s", args.resplit, counts)
        return 0
    if args.out is None:
        ap.error("--out is required with --pool/--input")

    root = (args.pool or args.input).resolve()
    files = list_pool(root) if args.pool else list_folder(root)
    items: list[Item] = []
    n_failed = 0
    for k, f in enumerate(files):
        if is_forbidden(f.path):
            log.warning("skipping %s: evaluation data is never used for training", f.path)
            continue
        try:
            items.extend(items_from_file(f, root.parent if args.pool else root, args.max_slices_per_volume))
        except Exception as exc:  # one bad file never stops the batch
            n_failed += 1
            log.warning("skipping %s: %s", f.path.name, exc)
        if k % 200 == 0:
            log.info("%d/%d files, %d items", k, len(files), len(items))
    if not items:
        log.error("no usable images found in %s", root)
        return 1
    write_shards(items, args.out, args.val_fraction, args.proxy_fraction, args.seed)
    counts: dict[str, int] = defaultdict(int)
    for it in items:
        counts[it.modality] += 1
    log.info("wrote %d items (%d files failed) to %s: %s", len(items), n_failed, args.out, dict(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
