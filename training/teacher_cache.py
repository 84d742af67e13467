"""Compute the teacher's image embeddings once and store them (fp16) next to the shards.

The teacher costs ~2.5 s per slice on a 2-core CPU, so it must not run every epoch. Validation items are
cached first, then training items in ``rank`` order (modality-balanced), so a partial cache is usable.
Resumable: items already cached are skipped. Runs beside ``distill.py``, which picks up new items.

Usage: python training/teacher_cache.py --data ~/.cache/medsam_desktop/distill [--teacher litemedsam|CKPT]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from medsam_desktop.model import fuse_for_inference, load_checkpoint, load_teacher
from medsam_desktop.model.checkpoint import sha256_of

try:
    from training.shards import ShardImages, TeacherCache, read_manifest
except ImportError:  # run as a script from training/
    from shards import ShardImages, TeacherCache, read_manifest  # type: ignore[no-redef]

log = logging.getLogger("teacher_cache")


def load_teacher_spec(spec: str) -> tuple[torch.nn.Module, str]:
    """``litemedsam`` (installed checkpoint) or a path to a teacher checkpoint; returns (model, cache tag)."""
    if spec == "litemedsam":
        return load_teacher(), "litemedsam"
    path = Path(spec)
    return load_checkpoint(path), f"{path.stem}-{sha256_of(path)[:8]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--teacher", default="litemedsam")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--limit", type=int, default=0, help="stop after this many train items (0: all)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (MSE vs fp32 ~7e-5)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model, tag = load_teacher_spec(args.teacher)
    encoder = fuse_for_inference(model).image_encoder.to(device)
    cache = TeacherCache(args.data, tag)
    images = ShardImages(args.data)
    items = read_manifest(args.data)
    val = [it for it in items if it.split == "val"]
    train = sorted((it for it in items if it.split == "train"), key=lambda it: it.rank)
    if args.limit:
        train = train[: args.limit]
    todo = [it for it in val + train if not cache.has(it.id)]
    log.info("teacher %s: %d items to cache (%d val, %d train total)", tag, len(todo), len(val), len(train))
    t0 = time.time()
    for start in range(0, len(todo), args.batch):
        batch = todo[start : start + args.batch]
        x = torch.stack([torch.from_numpy(images.get(it)).permute(2, 0, 1) for it in batch]).float() / 255.0
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            emb = encoder(x.to(device)).float().cpu().numpy()
        for it, e in zip(batch, emb):
            cache.put(it.id, e)
        done = start + len(batch)
        if done % (args.batch * 25) == 0 or done == len(todo):
            rate = (time.time() - t0) / done
            log.info("%d/%d cached, %.2f s/item, ~%.0f min left", done, len(todo), rate, rate * (len(todo) - done) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
