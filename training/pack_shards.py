"""Pack training shards into a small transferable folder (compressed images + manifest), and unpack them.

A lent GPU machine receives at most 64 MiB with the working tree, while the uint8 shards are ~200 KB per
slice. Packing stores each slice's content region (``h`` x ``w``; the padding is zeros by construction) as one
image file, grey when its channels are equal, concatenated in ``images.bin`` with ``offsets.npy`` and the
manifest rows of the kept items (validation items first, then by balanced rank, until ``--max-mb``).

Codecs: ``webp`` (default) is lossless, ~31 KB per slice. ``jpeg`` is ~3x smaller but NOT neutral for
distillation: LiteMedSAM's embedding moves by MSE 0.0019 (quality 90) / 0.0007 (95) under JPEG artifacts,
as much as the student's whole distillation error (~0.003), while the student barely reacts; targets computed
on decoded JPEGs would teach the teacher's artifact response instead of its response to clean images.

    python training/pack_shards.py pack --data DIR --out pack/ [--max-mb 56] [--codec webp|jpeg] [--quality 92]
    python training/pack_shards.py unpack --pack pack/ --out DIR
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from training.shards import SHARD_SIZE, ShardImages, read_manifest

log = logging.getLogger("pack_shards")


CODECS = ("webp", "jpeg")


def encode(img: np.ndarray, codec: str = "webp", quality: int = 92) -> bytes:
    """One (H, W, 3) uint8 image as WebP-lossless or JPEG bytes (one grey channel when all three agree)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    grey = bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]))
    pil = Image.fromarray(np.ascontiguousarray(img[..., 0] if grey else img))
    buf = io.BytesIO()
    if codec == "webp":
        pil.save(buf, format="WEBP", lossless=True, quality=100, method=4)  # method 6: 20x slower, 1 % smaller
    else:
        pil.save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Bytes from :func:`encode` -> (H, W, 3) uint8."""
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return np.ascontiguousarray(img)


def decode_item(data: bytes, h: int, w: int) -> np.ndarray:
    """Packed content region -> the (256, 256, 3) shard image (content top-left, zero padding)."""
    content = decode(data)
    if content.shape[:2] != (h, w):
        raise ValueError(f"packed image is {content.shape[:2]}, the manifest says ({h}, {w})")
    out = np.zeros((256, 256, 3), np.uint8)
    out[:h, :w] = content
    return out


def pack(
    data: Path,
    out: Path,
    max_mb: float,
    codec: str = "webp",
    quality: int = 92,
    exclude_ids: frozenset[str] = frozenset(),
) -> int:
    """Pack the items of ``data`` (validation first, then by rank; none of ``exclude_ids`` and none of the
    ``proxy`` split) until ``max_mb`` MiB of image bytes; returns how many were packed."""
    items = sorted(read_manifest(data), key=lambda it: (it.split != "val", it.rank))  # val first, then rank
    items = [it for it in items if it.id not in exclude_ids and it.split != "proxy"]  # the proxy is never trained on
    images = ShardImages(data)
    out.mkdir(parents=True, exist_ok=True)
    blobs, kept, total = [], [], 0
    for it in items:
        blob = encode(images.get(it)[: it.h, : it.w], codec, quality)
        if (total + len(blob)) / 2**20 > max_mb:
            break
        blobs.append(blob)
        kept.append(it)
        total += len(blob)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    (out / "images.bin").write_bytes(b"".join(blobs))
    np.save(out / "offsets.npy", offsets)
    with (data / "manifest.csv").open(newline="") as fh:
        fields = csv.DictReader(fh).fieldnames
    with (out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for it in kept:
            writer.writerow({k: getattr(it, k) for k in fields})
    log.info(
        "packed %d of %d items in %.1f MiB (%s)",
        len(kept),
        len(items),
        total / 2**20,
        codec if codec == "webp" else f"jpeg quality {quality}",
    )
    return len(kept)


def packed_ids(pack_dirs: list[Path]) -> frozenset[str]:
    """The item ids (of the source data) held by earlier packs."""
    return frozenset(it.id for d in pack_dirs for it in read_manifest(d))


def unpack(pack_dir: Path, out: Path) -> int:
    """Rebuild shards + manifest (rows renumbered into new shards) from a pack."""
    blob = (pack_dir / "images.bin").read_bytes()
    offsets = np.load(pack_dir / "offsets.npy")
    with (pack_dir / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(rows), SHARD_SIZE):
        shard = start // SHARD_SIZE
        idx = range(start, min(start + SHARD_SIZE, len(rows)))
        arr = np.stack(
            [decode_item(blob[offsets[i] : offsets[i + 1]], int(rows[i]["h"]), int(rows[i]["w"])) for i in idx]
        )
        np.save(out / f"shard_{shard:04d}.npy", arr)
        for row_in_shard, i in enumerate(idx):
            rows[i]["shard"], rows[i]["row"] = shard, row_in_shard
            rows[i]["id"] = f"{shard:04d}_{row_in_shard:04d}"
    tmp = out / "manifest.tmp.csv"
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shutil.move(tmp, out / "manifest.csv")
    log.info("unpacked %d items into %s", len(rows), out)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-mb", type=float, default=56.0)
    p.add_argument("--codec", choices=CODECS, default="webp", help="webp: lossless (default); jpeg: lossy")
    p.add_argument("--quality", type=int, default=92, help="JPEG quality")
    p.add_argument(
        "--exclude-pack",
        type=Path,
        action="append",
        default=[],
        help="leave out the items of this earlier pack (a second pack for a second transfer)",
    )
    u = sub.add_parser("unpack")
    u.add_argument("--pack", type=Path, required=True)
    u.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "pack":
        pack(args.data, args.out, args.max_mb, args.codec, args.quality, packed_ids(args.exclude_pack))
    else:
        unpack(args.pack, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
