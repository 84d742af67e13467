"""Average click-path checkpoints weight by weight (a "model soup") into one checkpoint that ``export_clicks.py``
ships, optionally scored as the click trainer validates (``--data``: the 5-click protocol on the held-out slices of
``click_data.py``, from perturbed and tight boxes, the value the mean of both).

Every input must be a click checkpoint trained on the same student embeddings (the same ``student_sha256``) with
the same parameters; the float tensors are averaged in fp32 with the given weights, the output's config is the last
input's with ``made`` (how it was made, printed on the shipped card; ``--made`` says it in words) and its own
validation value with ``--data``, else none: the last input's value is never carried over to the average.
Session 12's shipped click path:

    python training/average_clicks.py <session-9 clicks.pt> runs/clicks_s12/best.pt --out runs/clicks_s12/soup.pt \\
        --data /work/cache/clicks/data
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("average_clicks")


def average_states(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """sum_i weights[i] * states[i] for float tensors (fp32), other tensors from the last state; same keys."""
    keys = set(states[-1])
    if any(set(s) != keys for s in states) or len(states) != len(weights):
        raise ValueError("the checkpoints hold different parameters (or the weights do not match them)")
    out = {}
    for k, last in states[-1].items():
        if last.is_floating_point():
            out[k] = sum(w * s[k].float() for w, s in zip(weights, states))
        else:
            out[k] = last
    return out


def read(path: Path) -> dict[str, Any]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("config", {}).get("arch") != "click_decoder":
        raise SystemExit(f"{path} is not a click checkpoint")
    return ckpt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", type=Path, nargs="+", help="click checkpoints (train_clicks.py best.pt, shipped)")
    ap.add_argument("--weights", type=float, nargs="+", default=None, help="one per checkpoint (default: equal)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None, help="click_data.py folder: score the average")
    ap.add_argument("--val-items", type=int, default=40, help="validation slices, as the trainer's --val-items")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--made", default=None, help="how the inputs were made, for the card (default: their file names)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from medsam_desktop.model.checkpoint import save_checkpoint_state

    torch.set_num_threads(args.threads)
    ckpts = [read(p) for p in args.checkpoints]
    weights = args.weights or [1.0 / len(ckpts)] * len(ckpts)
    if abs(sum(weights) - 1.0) > 1e-6:
        raise SystemExit("the weights must sum to 1")
    if len({c["config"].get("student_sha256") for c in ckpts}) != 1:
        raise SystemExit("the checkpoints were trained on the embeddings of different students")
    state = average_states([c["model"] for c in ckpts], weights)
    parts = " + ".join(f"{w:g} x {p.name}" for w, p in zip(weights, args.checkpoints))
    config = {k: v for k, v in ckpts[-1]["config"].items() if k not in ("val_1_minus_dsc", "seconds")}
    config["made"] = args.made or f"weight average {parts}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint_state(state, args.out, config)
    if args.data is not None:
        from medsam_desktop.model.checkpoint import load_checkpoint
        from medsam_desktop.model.click_decoder import load_click_decoder
        from medsam_desktop.model_files import student_checkpoint_path
        from training.train_clicks import BoxOnly, balanced, load_slices, validation_value

        box_only = BoxOnly(load_checkpoint(student_checkpoint_path()))
        val = balanced([s for s in load_slices(args.data) if s.split == "val"], args.val_items)
        config["val_1_minus_dsc"] = validation_value(load_click_decoder(args.out), box_only, val, tight_too=True)
        save_checkpoint_state(state, args.out, config)
    log.info("wrote %s (%s; validation %s)", args.out, parts, config.get("val_1_minus_dsc"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
