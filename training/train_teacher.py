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
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medsam_desktop.model import MedSAMLite, build_model
from training.labelled_data import LabelledSlices, RankSampler, find_cases, split_cases
from training.runtime import setup_runtime
from training.trainer import CsvLog, StepResult, Trainer

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
    ap.add_argument(
        "--checkpoint-minutes", type=float, default=10.0, help="minutes between last.pt writes (at most 15)"
    )
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
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        model,
        opt,
        sched=sched,
        clip=args.clip,
        bf16=args.bf16,
        rt=rt,
        out=args.out,
        arch=arch,
        state={"epoch": 0, "arch": arch},
        best_info=extra,
        val_key="val_loss",
        val_label="val loss",
        val_every=args.val_every,
        validate_at_stop=True,
        max_steps=args.max_steps,
        max_hours=args.max_hours,
        checkpoint_minutes=args.checkpoint_minutes,
        log=log,
    )
    if args.resume and trainer.resume(
        lambda saved: None if saved.get("arch") == arch else f"holds arch {saved.get('arch')}, not {arch}"
    ):
        trainer.state["epoch"] += 1  # start a fresh data epoch
    state = trainer.state
    if args.max_steps and state["step"] >= args.max_steps:
        log.info("already at step %d >= --max-steps %d: nothing to do", state["step"], args.max_steps)
        if world > 1:
            dist.destroy_process_group()
        return 0
    torch.manual_seed(args.seed * 1_000 + rank + state["step"])  # per-rank stochastic depth
    # box-only prompts leave the point/mask prompt embeddings unused
    trainer.distribute(find_unused_parameters=True)
    csv_log = CsvLog(args.out / "log.csv", LOG_FIELDS, enabled=rank == 0)

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

    def step(batch: dict[str, torch.Tensor]) -> StepResult:
        x = batch["image"].to(device, non_blocking=True)
        boxes = batch["box"].to(device, non_blocking=True)
        target = batch["mask"].to(device, non_blocking=True)
        return trainer.step((x, boxes), lambda out: segmentation_losses(*out, target))

    def validation() -> float:
        if val_keys:
            return validate(model, val_ds, val_keys, device, args.bf16, rank, world, args.batch_size)
        # no validation cases: the recent training loss, averaged over ranks
        recent = [r.loss for r in trainer.recent[-args.val_every :]]
        t = torch.tensor([float(np.mean(recent))], dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(t)
        return t.item() / world

    def on_step(result: StepResult, val: str) -> None:
        if csv_log.enabled and (state["step"] % args.log_every == 0 or val):
            recent = trainer.recent[-args.log_every :]
            loss = np.mean([r.loss for r in recent])
            csv_log.row(
                [
                    state["step"],
                    f"{state['seconds']:.0f}",
                    f"{trainer.lr():.3e}",
                    f"{loss:.6f}",
                    *(f"{np.mean([r.parts[n] for r in recent]):.6f}" for n in ("dice", "bce", "iou_mse")),
                    f"{result.grad_norm:.3f}",
                    val,
                ]
            )
            log.info(
                "step %d loss %.4f grad %.2f (%.2f s/step)",
                state["step"],
                loss,
                result.grad_norm,
                trainer.seconds_per_step(),
            )

    trainer.run(batches(), step, validation, on_step)
    csv_log.close()
    trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
