"""Stage 1: train a MedSAMLite teacher (Swin-T encoder, prompt encoder, mask decoder) from scratch.

Box-prompted segmentation on labelled challenge-format folders (see ``labelled_data.py``): one random label
per image per step, perturbed boxes, random flips. Loss = Dice + BCE on the (B, 1, 256, 256) model-frame
logits + MSE between the predicted IoU and the IoU of the thresholded (logit > 0) mask. AdamW (lr 5e-3),
ReduceLROnPlateau (factor 0.9, patience 5) on validation loss, best-on-validation checkpoint. Uses CUDA when
present and runs unchanged under ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU; per-rank
data shards and seeds; only rank 0 writes).

Outputs in ``--out``: ``last.pt`` (resume state, at least every ``--checkpoint-minutes``), ``best.pt`` (our
checkpoint format, ``config.arch == "swin_t"``: usable as ``distill.py --teacher OUT/best.pt``), ``log.csv``.

Usage: python training/train_teacher.py --data LABELLED_DIR [LABELLED_DIR ...] --out runs/teacher [--resume]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medsam_desktop.model import MedSAMLite, build_model, save_checkpoint

try:
    from training.labelled_data import LabelledSlices, RankSampler, find_cases, split_cases
    from training.runtime import any_rank, save_atomic, setup_runtime
except ImportError:  # run as a script from training/
    from labelled_data import LabelledSlices, RankSampler, find_cases, split_cases  # type: ignore[no-redef]
    from runtime import any_rank, save_atomic, setup_runtime  # type: ignore[no-redef]

log = logging.getLogger("train_teacher")
ENCODER_CONFIGS = {"swin_t": "swin_t", "tiny": "swin_tiny_test"}  # --encoder-config -> registry arch
LOG_FIELDS = ["step", "seconds", "lr", "train_loss", "dice", "bce", "iou_mse", "grad_norm", "val_loss"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="labelled challenge-format folders")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--encoder-config",
        choices=sorted(ENCODER_CONFIGS),
        default="swin_t",
        help="'tiny' only for smoke tests (saved as arch swin_tiny_test)",
    )
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt when present")
    ap.add_argument("--batch-size", type=int, default=8, help="per process")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per rank")
    ap.add_argument("--val-fraction", type=float, default=0.05, help="cases held out (by name hash)")
    ap.add_argument("--val-every", type=int, default=200, help="steps between validations")
    ap.add_argument("--val-items", type=int, default=64, help="validation samples (fixed labels/slices/boxes)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--checkpoint-minutes", type=float, default=10.0)
    ap.add_argument("--max-hours", type=float, default=0.0, help="stop after this wall time (0: no limit)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop at this global step (0: no limit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--allow-eval-for-smoke-test",
        action="store_true",
        help="allow data under 'eval' folders (smoke tests only: the checkpoint must not ship)",
    )
    return ap.parse_args(argv)


def segmentation_losses(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dice + BCE on logits (B, 1, 256, 256) vs target in {0, 1}, + MSE of iou_pred (B, 1) vs the actual
    IoU of ``logits > 0``. Everything in fp32; returns (total, parts)."""
    logits, iou_pred, target = logits.float(), iou_pred.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    dice = 1.0 - ((2.0 * inter + 1e-5) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1e-5)).mean()
    with torch.no_grad():
        hard = logits > 0
        gt = target > 0.5
        union = (hard | gt).sum((1, 2, 3)).float()
        iou_true = torch.where(union > 0, (hard & gt).sum((1, 2, 3)).float() / union.clamp_min(1), 1.0)
    iou_mse = F.mse_loss(iou_pred.reshape(-1), iou_true)
    return dice + bce + iou_mse, {"dice": dice.detach(), "bce": bce.detach(), "iou_mse": iou_mse.detach()}


@torch.no_grad()
def validate(
    model: MedSAMLite,
    dataset: LabelledSlices,
    keys: list[tuple[int, int]],
    device: torch.device,
    bf16: bool,
    rank: int,
    world: int,
    batch_size: int,
) -> float:
    """Mean loss over this rank's share of ``keys``, summed over ranks (same value on every rank)."""
    model.eval()
    total, n = 0.0, 0
    mine = keys[rank::world]
    for start in range(0, len(mine), batch_size):
        batch = [dataset[k] for k in mine[start : start + batch_size]]
        x = torch.stack([b["image"] for b in batch]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits, iou = model(x, torch.stack([b["box"] for b in batch]).to(device))
        loss, _ = segmentation_losses(logits, iou, torch.stack([b["mask"] for b in batch]).to(device))
        total += loss.item() * len(batch)
        n += len(batch)
    model.train()
    if world > 1:
        t = torch.tensor([total, float(n)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, n = t[0].item(), int(t[1].item())
    return total / max(n, 1)


def save_state(path: Path, model: MedSAMLite, opt: torch.optim.Optimizer, sched: Any, state: dict[str, Any]) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "state": state,
        "format_version": 1,
    }
    save_atomic(payload, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rt = setup_runtime(args.threads)
    world, rank, device = rt.world, rt.rank, rt.device
    torch.manual_seed(args.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    arch = ENCODER_CONFIGS[args.encoder_config]
    extra: dict[str, Any] = {}
    if args.allow_eval_for_smoke_test:
        log.warning("!" * 100)
        log.warning(
            "--allow-eval-for-smoke-test: evaluation data may be used for TRAINING. The checkpoints "
            "written by this run are for smoke tests only and MUST NOT be used for shipping."
        )
        log.warning("!" * 100)
        extra["smoke_test_eval_data"] = True

    cases = find_cases(args.data, allow_eval=args.allow_eval_for_smoke_test)
    train_cases, val_cases = split_cases(cases, args.val_fraction)
    if not train_cases:
        raise SystemExit(f"no labelled training cases found under {', '.join(map(str, args.data))}")
    train_ds, val_ds = LabelledSlices(train_cases, augment=True), LabelledSlices(val_cases, augment=False)
    val_keys = (
        [(j % len(val_cases), 7_919 * j + 1) for j in range(max(len(val_cases), args.val_items))] if val_cases else []
    )
    sampler = RankSampler(len(train_ds), args.batch_size, rank, world, args.seed)
    log.info(
        "%d training cases, %d validation cases (%d val samples); arch %s, batch %d x %d, lr %.2e",
        len(train_cases),
        len(val_cases),
        len(val_keys),
        arch,
        args.batch_size,
        world,
        args.lr,
    )

    model = build_model(arch).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.9, patience=5)
    state: dict[str, Any] = {"step": 0, "seconds": 0.0, "best_val": math.inf, "epoch": 0, "arch": arch}

    args.out.mkdir(parents=True, exist_ok=True)
    last = args.out / "last.pt"
    if args.resume and last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if ckpt["state"].get("arch") != arch:
            raise SystemExit(f"{last} holds arch {ckpt['state'].get('arch')}, not {arch}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        state["epoch"] += 1  # start a fresh data epoch
        log.info("resumed at step %d (best val %.5f)", state["step"], state["best_val"])
    if args.max_steps and state["step"] >= args.max_steps:
        log.info("already at step %d >= --max-steps %d: nothing to do", state["step"], args.max_steps)
        if world > 1:
            dist.destroy_process_group()
        return 0
    torch.manual_seed(args.seed * 1_000 + rank + state["step"])  # per-rank stochastic depth
    net: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        # box-only prompts leave the point/mask prompt embeddings unused
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    log_path = args.out / "log.csv"
    log_fh = None
    writer = None
    if rank == 0:
        new_log = not log_path.exists()
        log_fh = log_path.open("a", newline="")
        writer = csv.writer(log_fh)
        if new_log:
            writer.writerow(LOG_FIELDS)

    def batches() -> Any:
        while True:
            sampler.epoch = state["epoch"]
            loader = DataLoader(
                train_ds,
                batch_size=args.batch_size,
                sampler=sampler,
                num_workers=args.workers,
                drop_last=True,
                pin_memory=device.type == "cuda",
            )
            yield from loader
            state["epoch"] += 1

    def run_validation(recent: list[float]) -> float:
        if val_keys:
            v = validate(model, val_ds, val_keys, device, args.bf16, rank, world, args.batch_size)
        else:  # no validation cases: the recent training loss, averaged over ranks
            t = torch.tensor([float(np.mean(recent))], dtype=torch.float64, device=device)
            if world > 1:
                dist.all_reduce(t)
            v = t.item() / world
        sched.step(v)
        if rank == 0 and v < state["best_val"]:
            state["best_val"] = v
            save_checkpoint(
                model,
                args.out / "best.pt",
                arch,
                {**extra, "step": state["step"], "val_loss": v, "seconds": state["seconds"]},
            )
        log.info(
            "step %d val loss %.5f (best %.5f) lr %.2e", state["step"], v, state["best_val"], opt.param_groups[0]["lr"]
        )
        return v

    t_start = t_ckpt = time.time()
    seconds0 = state["seconds"]
    recent: list[float] = []
    parts_hist: list[dict[str, float]] = []
    for n_steps, batch in enumerate(batches(), start=1):
        x = batch["image"].to(device, non_blocking=True)
        boxes = batch["box"].to(device, non_blocking=True)
        target = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits, iou = net(x, boxes)
        loss, parts = segmentation_losses(logits, iou, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip if args.clip > 0 else float("inf"))
        if not torch.isfinite(loss) or not torch.isfinite(gnorm):
            raise SystemExit(f"non-finite loss/gradient at step {state['step']}: stop and inspect (no update made)")
        opt.step()
        state["step"] += 1
        recent.append(loss.item())
        parts_hist.append({k: v.item() for k, v in parts.items()})
        state["seconds"] = seconds0 + time.time() - t_start
        stop = bool(args.max_steps and state["step"] >= args.max_steps) or bool(
            args.max_hours and time.time() - t_start >= args.max_hours * 3600
        )
        stop = any_rank(stop, rt)  # wall-time limits may trip on one rank first
        val = ""
        if state["step"] % args.val_every == 0 or stop:
            val = f"{run_validation(recent[-args.val_every :]):.6f}"
        if writer is not None and log_fh is not None and (state["step"] % args.log_every == 0 or val):
            k = args.log_every
            writer.writerow(
                [
                    state["step"],
                    f"{state['seconds']:.0f}",
                    f"{opt.param_groups[0]['lr']:.3e}",
                    f"{np.mean(recent[-k:]):.6f}",
                    *(f"{np.mean([p[n] for p in parts_hist[-k:]]):.6f}" for n in ("dice", "bce", "iou_mse")),
                    f"{float(gnorm):.3f}",
                    val,
                ]
            )
            log_fh.flush()
            log.info(
                "step %d loss %.4f grad %.2f (%.2f s/step)",
                state["step"],
                np.mean(recent[-k:]),
                float(gnorm),
                (time.time() - t_start) / n_steps,
            )
        recent, parts_hist = recent[-1000:], parts_hist[-1000:]
        if rank == 0 and (stop or time.time() - t_ckpt >= args.checkpoint_minutes * 60):
            save_state(last, model, opt, sched, state)
            t_ckpt = time.time()
        if stop:
            break
    if log_fh is not None:
        log_fh.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
