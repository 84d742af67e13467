"""Compare click checkpoints on every held-out pool slice (the distillation split's ``val`` items in the click data):
DSC after the box and after each of 5 clicks, per modality and as the mean over modalities - the selector for the
click path (the dev set is a report, never a selector).

Same protocol as ``train_clicks.py``'s validation (fixed seeded start boxes, first 3 masks per slice), on all
validation slices instead of the trainer's balanced subset; ``--splits val,proxy --masks 12 --tight`` widens it to
every held-out object with the challenge's tight boxes, and a per-object table by model-frame area follows. A path
with a refiner needs ``--images`` (the prepared shards).

    python training/heldout_clicks.py --data /work/cache/clicks/data [--images SHARDS] CKPT [CKPT ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from medsam_desktop.model.checkpoint import load_checkpoint
from medsam_desktop.model.click_decoder import load_click_decoder
from medsam_desktop.model_files import student_checkpoint_path
from training.train_clicks import EVAL_CLICKS, BoxOnly, load_slices, object_curves

log = logging.getLogger("heldout_clicks")

#: per-object rows by model-frame (256) area in px: [lo, hi)
AREA_BANDS = ((0, 100), (100, 300), (300, 1000), (1000, None))


AREA_NAMES = tuple(f"{lo}+ px" if hi is None else f"{lo}-{hi} px" for lo, hi in AREA_BANDS)
ALL_OBJECTS = "all objects"


def area_band(area: int) -> str:
    """The :data:`AREA_NAMES` row of an object of ``area`` model-frame pixels."""
    return next(name for (lo, hi), name in zip(AREA_BANDS, AREA_NAMES) if area >= lo and (hi is None or area < hi))


def table(rows: dict[str, dict[str, list[float]]]) -> str:
    """Markdown: one row per (checkpoint, modality) and the mean over modalities per checkpoint."""
    head = ["checkpoint", "modality", "DSC box", *(f"DSC {k}" for k in range(1, EVAL_CLICKS + 1))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, per_mod in rows.items():
        for mod, means in sorted(per_mod.items()):
            lines.append(f"| {name} | {mod} | " + " | ".join(f"{v:.4f}" for v in means) + " |")
        mean = np.mean(list(per_mod.values()), axis=0)
        lines.append(f"| **{name}** | **mean over modalities** | " + " | ".join(f"**{v:.4f}**" for v in mean) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder from click_data.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=Path, default=None, help="prepared shards (for a path with a refiner)")
    ap.add_argument("--splits", default="val", help="comma-separated click-data splits (default val)")
    ap.add_argument("--masks", type=int, default=3, help="masks per slice (default 3)")
    ap.add_argument("--tight", action="store_true", help="tight start boxes (default: seeded perturbed ones)")
    ap.add_argument("checkpoints", type=Path, nargs="+", help="click checkpoints (train_clicks.py best.pt, ...)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    box_only = BoxOnly(load_checkpoint(student_checkpoint_path()))
    splits = set(args.splits.split(","))
    val = [s for s in load_slices(args.data, args.images) if s.split in splits]
    by_mod: dict[str, list] = {}
    for s in val:
        by_mod.setdefault(s.modality, []).append(s)
    log.info("%d held-out slices: %s", len(val), {m: len(v) for m, v in sorted(by_mod.items())})
    rows: dict[str, dict[str, list[float]]] = {}
    bands: dict[str, dict[str, np.ndarray]] = {}
    for path in args.checkpoints:
        net = load_click_decoder(path)
        if net.refiner is not None and args.images is None:
            raise SystemExit(f"{path} has a pixel refiner: pass --images (the prepared shards)")
        name = f"{path.parent.name}/{path.name}"
        rows[name], per_band = {}, {}
        for mod, slices in by_mod.items():
            curves = object_curves(net, box_only, slices, args.masks, tight=args.tight)
            rows[name][mod] = [float(v) for v in curves.mean(axis=0)]
            areas = [int(m.sum()) for s in slices for m in s.masks[: args.masks]]
            for area, c in zip(areas, curves):
                per_band.setdefault(area_band(area), []).append(c)
            per_band.setdefault(ALL_OBJECTS, []).extend(curves)
        bands[name] = {k: np.array(v) for k, v in per_band.items()}
        log.info("%s done", name)
    print(table(rows))
    print()
    head = [
        "checkpoint",
        "objects (model-frame area)",
        "n",
        "DSC box",
        *(f"DSC {k}" for k in range(1, EVAL_CLICKS + 1)),
    ]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, per_band in bands.items():
        for band in (b for b in (*AREA_NAMES, ALL_OBJECTS) if b in per_band):
            c = per_band[band]
            print(f"| {name} | {band} | {len(c)} | " + " | ".join(f"{v:.4f}" for v in c.mean(axis=0)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
