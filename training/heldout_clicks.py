"""Compare click checkpoints on every held-out pool slice (the distillation split's ``val`` items in the click data):
DSC after the box and after each of 5 clicks, per modality and as the mean over modalities - the selector for the
click path (the dev set is a report, never a selector).

Same protocol as ``train_clicks.py``'s validation (fixed seeded start boxes, first 3 masks per slice), on all
validation slices instead of the trainer's balanced subset. A path with a pixel refiner is scored on the masks it
shows and needs ``--images`` (the prepared shards).

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
from training.train_clicks import EVAL_CLICKS, BoxOnly, load_slices, validate

log = logging.getLogger("heldout_clicks")


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
    ap.add_argument("checkpoints", type=Path, nargs="+", help="click checkpoints (train_clicks.py best.pt, ...)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    box_only = BoxOnly(load_checkpoint(student_checkpoint_path()))
    val = [s for s in load_slices(args.data, args.images) if s.split == "val"]
    by_mod: dict[str, list] = {}
    for s in val:
        by_mod.setdefault(s.modality, []).append(s)
    log.info("%d held-out slices: %s", len(val), {m: len(v) for m, v in sorted(by_mod.items())})
    rows: dict[str, dict[str, list[float]]] = {}
    for path in args.checkpoints:
        net = load_click_decoder(path)
        if net.refiner is not None and args.images is None:
            raise SystemExit(f"{path} has a pixel refiner: pass --images (the prepared shards)")
        name = f"{path.parent.name}/{path.name}"
        rows[name] = {mod: validate(net, box_only, slices)[1] for mod, slices in by_mod.items()}
        log.info("%s done", name)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
