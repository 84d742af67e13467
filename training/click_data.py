"""Training data for the click path: the student's image embedding of a pool slice and target masks on it.

The image encoder stays frozen while the click path trains, so each slice is encoded once here (the student,
torch fp32: the embeddings the app's decoders see) and the trainer only runs decoders (tens of ms per step).
Targets, all in the 256 model frame of the prepared shards (``prepare_data.py``):

- ``gt``: the pool images with ground truth (``pool_labels/``: Kvasir-SEG, CVC-ClinicDB, DSB2018), one mask
  per labelled object (nearest resize to the slice's content size, padded bottom/right as the image);
- ``teacher``: every other slice whose teacher embedding is cached (``teacher_cache.py``): seeded random
  boxes are decoded by the teacher, the tight box around each mask is decoded again, and that mask is the
  "intended" one (as ``agreement.py`` makes its references) - so the clicks learn every modality.

Items keep the distillation split (``val`` items are the click path's validation, never trained on);
evaluation folders are never read. One ``<id>.npz`` per slice: ``embedding`` (256, 64, 64) fp16, ``masks``
(K, 256, 256) bit-packed, ``k``, ``h``, ``w``, ``modality``, ``split``, ``target``. Resumable.

    python training/click_data.py --data /work/cache/distill/data --labels ../shared/data/pool_labels \
        --out /work/cache/clicks/data [--threads 2] [--max-objects 12]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np

from medsam_desktop.atomic import atomic_write
from training.agreement import MIN_MASK_PX, teacher_prompts
from training.labelled_data import resize_mask_nearest
from training.shards import ShardImages, ShardItem, TeacherCache, model_input, read_manifest

log = logging.getLogger("click_data")

SIDE = 256


def label_paths(labels_dir: Path) -> dict[str, Path]:
    """Pool image path (``pool/...``, as in the shards' ``group``) -> its label map."""
    with (labels_dir / "manifest.csv").open(newline="") as fh:
        return {r["image"]: labels_dir.parent / r["labels"] for r in csv.DictReader(fh)}


def read_label_map(path: Path) -> np.ndarray:
    """A ``pool_labels`` label map as an (H, W) integer array (0 background, one value per object)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im)


def gt_masks(path: Path, h: int, w: int, max_objects: int, rng: np.random.Generator) -> np.ndarray:
    """The label map's objects as (K, 256, 256) bool masks in the model frame (at most ``max_objects``)."""
    labels = read_label_map(path)
    ids = [int(v) for v in np.unique(labels) if v != 0]
    rng.shuffle(ids)
    out = []
    for v in ids:
        m = np.zeros((SIDE, SIDE), bool)
        m[:h, :w] = resize_mask_nearest(labels == v, (h, w))
        if m.sum() >= MIN_MASK_PX:
            out.append(m)
        if len(out) == max_objects:
            break
    return np.stack(out) if out else np.zeros((0, SIDE, SIDE), bool)


def teacher_masks(emb: np.ndarray, decode, h: int, w: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The teacher's masks for the tight boxes around its masks of ``n`` random boxes, (K, 256, 256) bool."""
    prompts = teacher_prompts(lambda b: decode(emb, b), h, w, n, rng)
    if not len(prompts):
        return np.zeros((0, SIDE, SIDE), bool)
    masks = decode(emb, prompts) > 0
    masks[:, h:, :] = False
    masks[:, :, w:] = False
    return masks[masks.reshape(len(masks), -1).sum(1) >= MIN_MASK_PX]


def write_item(out: Path, item: ShardItem, emb: np.ndarray, masks: np.ndarray, target: str) -> None:
    with atomic_write(out / f"{item.id}.npz", suffix=".npz") as tmp:
        np.savez(
            tmp, embedding=emb.astype(np.float16), masks=np.packbits(masks.reshape(len(masks), -1), axis=1),
            k=len(masks), h=item.h, w=item.w, modality=item.modality, split=item.split, target=target,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder from prepare_data.py")
    ap.add_argument("--labels", type=Path, required=True, help="pool_labels folder (manifest.csv)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--student", type=Path, default=None, help="student weights (default: the bundled model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-objects", type=int, default=12)
    ap.add_argument("--teacher-boxes", type=int, default=6, help="random seed boxes per teacher-target slice")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from medsam_desktop.model_files import student_checkpoint_path
    from training.agreement import torch_model

    if "eval" in args.data.parts or "eval" in args.labels.parts:
        raise SystemExit("evaluation folders are never training data")
    args.out.mkdir(parents=True, exist_ok=True)
    labels = label_paths(args.labels)
    cache = TeacherCache(args.data, "litemedsam")
    items = [it for it in read_manifest(args.data) if it.group in labels or cache.has(it.id)]
    todo = [it for it in items if not (args.out / f"{it.id}.npz").is_file()]
    log.info(
        "%d slices (%d with ground truth), %d to do", len(items), sum(it.group in labels for it in items), len(todo)
    )
    s_enc, _ = torch_model(args.student or student_checkpoint_path(), args.threads)
    t_dec = None
    images = ShardImages(args.data)
    for n, item in enumerate(todo, 1):
        rng = np.random.default_rng([args.seed, item.rank])
        emb = s_enc(model_input(images.get(item)[None]).contiguous().numpy())[0]
        if item.group in labels:
            masks, target = gt_masks(labels[item.group], item.h, item.w, args.max_objects, rng), "gt"
        else:
            if t_dec is None:
                t_dec = torch_model(None, args.threads)[1]
            t_emb = cache.get(item.id).astype(np.float32)[None]
            masks, target = teacher_masks(t_emb, t_dec, item.h, item.w, args.teacher_boxes, rng), "teacher"
        write_item(args.out, item, emb, masks, target)
        if n % 50 == 0:
            log.info("%d / %d", n, len(todo))
    log.info("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
