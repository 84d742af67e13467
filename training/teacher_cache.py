"""Compute the teacher's image embeddings once and store them (fp16) next to the shards.

The teacher costs ~2.5 s per slice on a 2-core CPU, so it must not run every epoch. Validation items are
cached first, then training items in ``rank`` order (modality-balanced), so a partial cache is usable.
Resumable: items already cached are skipped. Runs beside ``distill.py``, which picks up new items.

``--variants identity,hflip,vflip`` also caches the embeddings of flipped images (``shards.apply_variant``:
the content region flipped, padding kept bottom/right), one teacher forward each, for ``distill.py --flips``.
Order: validation items (identity only: validation is on unaugmented images), then the training items in
rank blocks of ``--block`` items (0: one block of all): within a block, every variant in turn in
``--variants`` order (identity always first). With the default block, all new items come before any flip.

``--modalities ct,mr`` restricts the training items to those modalities (e.g. to fill the cache where the
student is weakest first); validation items are always cached.

Usage: python training/teacher_cache.py --data ~/.cache/medsam_desktop/distill [--teacher litemedsam|CKPT]
       [--variants identity,hflip,vflip] [--block N] [--modalities ct,mr]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medsam_desktop.model import fuse_for_inference, load_checkpoint, load_teacher
from medsam_desktop.model.checkpoint import sha256_of
from training.shards import (
    IDENTITY,
    ShardImages,
    ShardItem,
    TeacherCache,
    apply_variant,
    model_input,
    parse_variants,
    read_manifest,
)

log = logging.getLogger("teacher_cache")


def load_teacher_spec(spec: str) -> tuple[torch.nn.Module, str]:
    """``litemedsam`` (installed checkpoint) or a path to a teacher checkpoint; returns (model, cache tag)."""
    if spec == "litemedsam":
        return load_teacher(), "litemedsam"
    path = Path(spec)
    return load_checkpoint(path), f"{path.stem}-{sha256_of(path)[:8]}"


def plan(
    items: list[ShardItem],
    cache: TeacherCache,
    variants: tuple[str, ...],
    limit: int = 0,
    block: int = 0,
    modalities: frozenset[str] | None = None,
) -> list[tuple[ShardItem, str]]:
    """The missing (item, variant) embeddings in computing order (see the module docstring)."""
    val = [it for it in items if it.split == "val"]
    train = sorted(
        (it for it in items if it.split == "train" and (not modalities or it.modality in modalities)),
        key=lambda it: it.rank,
    )
    if limit:
        train = train[:limit]
    block = block or max(1, len(train))
    jobs = [(it, IDENTITY) for it in val]
    for start in range(0, len(train), block):
        chunk = train[start : start + block]
        jobs += [(it, v) for v in variants for it in chunk]
    return [(it, v) for it, v in jobs if not cache.has(it.id, v)]


def fill(
    encoder: torch.nn.Module,
    todo: list[tuple[ShardItem, str]],
    images: ShardImages,
    cache: TeacherCache,
    device: torch.device,
    batch_size: int = 4,
    bf16: bool = False,
) -> None:
    """Run the teacher encoder on each (item, variant) image and store the embedding."""
    t0 = time.time()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        arr = np.stack([apply_variant(images.get(it), it.h, it.w, v) for it, v in batch])
        x = model_input(arr)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            emb = encoder(x.to(device)).float().cpu().numpy()
        for (it, v), e in zip(batch, emb):
            cache.put(it.id, e, v)
        done = start + len(batch)
        if done % (batch_size * 25) == 0 or done == len(todo):
            rate = (time.time() - t0) / done
            log.info("%d/%d cached, %.2f s/item, ~%.0f min left", done, len(todo), rate, rate * (len(todo) - done) / 60)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--teacher", default="litemedsam")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--limit", type=int, default=0, help="stop after this many train items (0: all)")
    ap.add_argument("--variants", default=IDENTITY, help="comma-separated: identity,hflip,vflip (identity always)")
    ap.add_argument("--block", type=int, default=0, help="rank-block size for the variant order (0: all items)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (MSE vs fp32 ~7e-5)")
    ap.add_argument("--modalities", default="", help="comma-separated: only training items of these (default all)")
    args = ap.parse_args(argv)
    try:
        variants = parse_variants(args.variants)
    except ValueError as exc:
        ap.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model, tag = load_teacher_spec(args.teacher)
    encoder = fuse_for_inference(model).image_encoder.to(device)
    cache = TeacherCache(args.data, tag)
    images = ShardImages(args.data)
    items = read_manifest(args.data)
    modalities = frozenset(m.strip().lower() for m in args.modalities.split(",") if m.strip())
    todo = plan(items, cache, variants, args.limit, args.block, modalities or None)
    counts = {v: sum(1 for _, w in todo if w == v) for v in variants}
    log.info(
        "teacher %s: %d embeddings to cache (%s)", tag, len(todo), ", ".join(f"{v} {n}" for v, n in counts.items())
    )
    fill(encoder, todo, images, cache, device, args.batch, args.bf16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
