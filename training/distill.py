"""Distil the student image encoder from the teacher's embeddings (MSE on 256x64x64).

The paper's recipe: AdamW (initial lr 5e-3), ReduceLROnPlateau (factor 0.9, patience 5) on validation MSE,
best-on-validation checkpoint; the student's prompt encoder and mask decoder are the teacher's, unchanged.
Made for a 2-core CPU: teacher targets come from the on-disk cache written by ``teacher_cache.py`` (new
items are picked up every epoch), a resumable ``last.pt`` is written at least every ``--checkpoint-minutes``,
memory stays bounded (memory-mapped shards, one batch at a time). Uses CUDA when present and runs under
``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).

``--flips``: each training sample is drawn uniformly among the variants cached for its item (identity, and
``hflip``/``vflip`` where ``teacher_cache.py --variants`` has computed them); the image is flipped by the same
``shards.apply_variant`` as the teacher's input. Off by default: identity only, as before.

``--mask-loss W``: adds W x the prompt-in-the-loop mask loss (``training/mask_distill.py``: the frozen decoder's
logits from the student's embedding against the teacher's, for boxes drawn from the teacher's own masks) to the
embedding MSE; ``train_mse`` in ``log.csv`` then logs the sum.

``--schedule cosine``: instead of the paper's ReduceLROnPlateau, a linear warm-up over ``--warmup`` steps and a
cosine from ``--lr`` down to 2 % of it over the budget (``--max-hours`` of the training loop's time, validation and
checkpoints included, summed over resumes; or ``--max-steps``; whichever ends first), as the GPU run did
(``distill_online.py``): the recipe for a continuation with a larger batch and a higher lr than the plateau schedule
reaches. Under torchrun every rank takes rank 0's fraction. A run resumes only with the schedule it was started with.

``--micro-batch M``: the batch is forwarded and backpropagated M samples at a time and updated once (gradient
accumulation: the MSE's gradient is the whole batch's; BatchNorm statistics are per micro-batch, or none with
``--freeze-bn``; ``--mask-loss`` is averaged over the prompted slices of each micro-batch, not of the batch).
On a CPU a batch of 32 in one piece cost about twice as much per sample as batches of 8 (docs/distillation.md,
session 17), so a large batch is cheapest as 8-sample micro-batches.

``--oversample ct=3``: every cached item of those modalities appears that many times per epoch (e.g. where the
student is weakest and the pool is thin); the validation set is unchanged.

Outputs in ``--out``: ``last.pt`` (resume state), ``best.pt`` (full network, our checkpoint format),
``log.csv`` (step, seconds, lr, train MSE, grad norm, val MSE).

Usage: python training/distill.py --data ~/.cache/medsam_desktop/distill --out runs/distill [--resume]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medsam_desktop.model import build_model, load_checkpoint
from training.mask_distill import mask_loss
from training.runtime import from_rank0, setup_runtime
from training.shards import (
    IDENTITY,
    VARIANTS,
    ShardImages,
    ShardItem,
    TeacherCache,
    apply_variant,
    model_input,
    read_manifest,
)
from training.teacher_cache import load_teacher_spec
from training.trainer import CsvLog, StepResult, Trainer, cosine_lr, optimizer_step

log = logging.getLogger("distill")
STUDENT_ARCH = "repvit_m0_6"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder from prepare_data.py (+ teacher cache)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--teacher", default="litemedsam", help="'litemedsam' or a teacher checkpoint path")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt when present")
    ap.add_argument("--init-from", type=Path, help="start the student from this checkpoint (e.g. the shipped one)")
    ap.add_argument("--no-neck-init", action="store_true", help="do not copy the teacher's neck into the student")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=0, help="samples per forward/backward (0: the whole batch)")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--schedule", choices=("plateau", "cosine"), default="plateau", help="lr schedule (see above)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up steps of the cosine schedule")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    ap.add_argument(
        "--flips",
        action="store_true",
        help="random flips: draw each sample among its cached variants (teacher_cache.py --variants)",
    )
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the student forward")
    ap.add_argument(
        "--freeze-bn",
        action="store_true",
        help="BatchNorm layers in eval mode while training (fine-tuning converged weights)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    ap.add_argument("--val-every", type=int, default=150, help="steps between validations")
    ap.add_argument("--val-items", type=int, default=64)
    ap.add_argument(
        "--checkpoint-minutes", type=float, default=10.0, help="minutes between last.pt writes (at most 15)"
    )
    ap.add_argument(
        "--max-hours", type=float, default=0.0, help="stop after this wall time (cosine: summed over resumes; 0: none)"
    )
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mask-loss", type=float, default=0.0, help="weight of the mask distillation loss (0: off)")
    ap.add_argument("--mask-boxes", type=int, default=2, help="seed boxes per slice for the mask loss")
    ap.add_argument(
        "--oversample",
        type=parse_repeats,
        default={},
        metavar="MOD=K[,MOD=K]",
        help="repeat each cached item of modality MOD K times per epoch (e.g. ct=3)",
    )
    args = ap.parse_args(argv)
    if args.schedule == "cosine" and not (args.max_hours or args.max_steps):
        ap.error("--schedule cosine needs a budget: --max-hours or --max-steps")
    return args


def budget_fraction(step: int, seconds: float, max_steps: int, max_hours: float) -> float:
    """How far a run is through its budget (0..1): the larger of steps / ``max_steps`` and training seconds /
    ``max_hours`` (a zero limit does not count)."""
    fracs = [step / max_steps if max_steps else 0.0, seconds / (max_hours * 3600) if max_hours else 0.0]
    return min(1.0, max(fracs))


def remaining_hours(max_hours: float, seconds: float) -> float:
    """What is left of a cosine run's ``max_hours`` after ``seconds`` of training in earlier sessions (<= 0: spent)."""
    return max_hours - seconds / 3600


def parse_repeats(spec: str) -> dict[str, int]:
    """``"ct=3,mr=2"`` -> {"ct": 3, "mr": 2}; each count an integer >= 1."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        mod, sep, count = part.partition("=")
        if not sep or not mod.strip() or not count.strip().isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"expected MODALITY=COUNT with COUNT >= 1, got {part!r}")
        out[mod.strip().lower()] = int(count)
    return out


class Batches:
    """Random mini-batches over the training items whose teacher embedding is cached (re-listed per epoch).

    With ``flips`` each item of the epoch gets one variant drawn uniformly among those cached for it (the
    ``has()`` checks happen at the refill only); without, every sample is the identity (no extra draws).
    """

    def __init__(
        self,
        items: list[ShardItem],
        cache: TeacherCache,
        images: ShardImages,
        batch_size: int,
        rank: int,
        world: int,
        rng: random.Random,
        flips: bool = False,
        repeats: dict[str, int] | None = None,
    ) -> None:
        self.items, self.cache, self.images = items, cache, images
        self.batch_size, self.rank, self.world, self.rng = batch_size, rank, world, rng
        self.flips = flips
        self.repeats = repeats or {}  # modality -> times each of its items appears per epoch (default 1)
        self.epoch = 0
        self._queue: list[tuple[ShardItem, str]] = []
        self.last: list[ShardItem] = []

    def _refill(self) -> None:
        ready = [it for it in self.items if self.cache.has(it.id)]
        if len(ready) < self.batch_size * self.world:
            raise RuntimeError(f"only {len(ready)} training items have teacher embeddings; run teacher_cache.py")
        ready = [it for it in ready for _ in range(self.repeats.get(it.modality, 1))]
        self.rng.shuffle(ready)
        if self.flips:  # drawn on every rank alike (same rng), before the rank::world split
            options = [[v for v in VARIANTS if v == IDENTITY or self.cache.has(it.id, v)] for it in ready]
            drawn = [self.rng.choice(opts) for opts in options]
            counts = {v: sum(v in opts for opts in options) for v in VARIANTS if v != IDENTITY}
            extra = ", flipped targets available: " + ", ".join(f"{v} {n}" for v, n in counts.items())
        else:
            drawn, extra = [IDENTITY] * len(ready), ""
        self._queue = list(zip(ready, drawn))[self.rank :: self.world]
        self.epoch += 1
        log.info("epoch %d: %d cached training samples%s", self.epoch, len(ready), extra)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self._queue) < self.batch_size:
            self._refill()
        batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        self.last = [it for it, _ in batch]  # the items of the batch just returned (their content sizes)
        return load_batch(self.last, self.images, self.cache, [v for _, v in batch])


def load_batch(
    batch: list[ShardItem], images: ShardImages, cache: TeacherCache, variants: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Student inputs (N, 3, 256, 256) and teacher targets (N, 256, 64, 64); ``variants`` per item (identity)."""
    variants = variants or [IDENTITY] * len(batch)
    arr = np.stack([apply_variant(images.get(it), it.h, it.w, v) for it, v in zip(batch, variants, strict=True)])
    x = model_input(arr)
    y = torch.from_numpy(np.stack([cache.get(it.id, v) for it, v in zip(batch, variants, strict=True)])).float()
    return x.contiguous(memory_format=torch.channels_last), y


def student_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, clip: float, bf16: bool
) -> tuple[float, float, bool]:
    """One step of the distillation recipe (:func:`training.trainer.optimizer_step`): forward (bf16 autocast if
    asked), MSE against the teacher's ``y`` in fp32 whatever the forward precision, backward, gradient-norm clip
    (``clip`` <= 0: off); the update is applied only when the loss and the gradient norm are finite. Returns
    (loss, gradient norm, applied)."""
    r = optimizer_step(model, model.parameters(), opt, (x,), mse_to(y), clip, bf16)
    return r.loss, r.grad_norm, r.applied


def mse_to(y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The distillation loss against the teacher's embeddings ``y``, in fp32."""
    return lambda pred: F.mse_loss(pred.float(), y)


def train_mode(encoder: torch.nn.Module, freeze_bn: bool = False) -> torch.nn.Module:
    """``encoder.train()``; with ``freeze_bn`` its BatchNorm layers stay in eval mode (running statistics used
    and kept, as a fine-tune from converged weights wants with small batches: batch 8 re-estimates them noisily).
    Their affine parameters still train."""
    encoder.train()
    if freeze_bn:
        for m in encoder.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    return encoder


@torch.no_grad()
def validate(
    encoder: torch.nn.Module,
    items: list[ShardItem],
    images: ShardImages,
    cache: TeacherCache,
    device: torch.device,
    bf16: bool,
    freeze_bn: bool = False,
) -> float:
    encoder.eval()
    total, n = 0.0, 0
    for start in range(0, len(items), 8):
        x, y = load_batch(items[start : start + 8], images, cache)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = encoder(x.to(device))
        total += F.mse_loss(pred.float(), y.to(device), reduction="sum").item()
        n += y.numel()
    train_mode(encoder, freeze_bn)
    return total / max(n, 1)


def resume_mismatch(saved: dict[str, Any], tag: str, schedule: str) -> str | None:
    """Why a ``last.pt`` state cannot be continued by this run (another teacher or lr schedule), or None."""
    if saved.get("teacher") != tag:
        return f"was trained against teacher {saved.get('teacher')}, not {tag}"
    if saved.get("schedule", "plateau") != schedule:
        return f"was trained with --schedule {saved.get('schedule', 'plateau')}, not {schedule}"
    return None


def build_student(args: argparse.Namespace, teacher: torch.nn.Module) -> torch.nn.Module:
    """Student network: new RepViT encoder, the teacher's prompt encoder and mask decoder (frozen)."""
    if args.init_from is not None:
        student = load_checkpoint(args.init_from, arch=STUDENT_ARCH)
        log.info("student initialised from %s", args.init_from)
    else:
        student = build_model(STUDENT_ARCH)
        if not args.no_neck_init:
            t_neck, s_neck = teacher.image_encoder.neck.state_dict(), student.image_encoder.neck.state_dict()
            if {k: v.shape for k, v in t_neck.items()} == {k: v.shape for k, v in s_neck.items()}:
                student.image_encoder.neck.load_state_dict(t_neck)
            else:  # e.g. the Swin teacher's neck takes 256 FPN channels, the student's 320
                log.info("the teacher's neck does not fit the student's: the student neck starts random")
    student.prompt_encoder.load_state_dict(teacher.prompt_encoder.state_dict())
    student.mask_decoder.load_state_dict(teacher.mask_decoder.state_dict())
    for p in list(student.prompt_encoder.parameters()) + list(student.mask_decoder.parameters()):
        p.requires_grad_(False)
    return student


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rt = setup_runtime(args.threads)
    world, rank, device = rt.world, rt.rank, rt.device
    torch.manual_seed(args.seed + rank)
    rng = random.Random(args.seed)  # the same shuffle on every rank, so the rank::world shards are disjoint

    teacher, tag = load_teacher_spec(args.teacher)
    student = build_student(args, teacher)
    del teacher
    encoder = train_mode(student.image_encoder.to(device).to(memory_format=torch.channels_last), args.freeze_bn)
    opt = torch.optim.AdamW(encoder.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.9, patience=5)
        if args.schedule == "plateau"
        else None
    )
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        encoder,
        opt,
        sched=sched,
        clip=args.clip,
        bf16=args.bf16,
        rt=rt,
        out=args.out,
        saved=student,
        arch=STUDENT_ARCH,
        state={"teacher": tag, "schedule": args.schedule},
        best_info={"teacher": tag},
        val_key="val_mse",
        val_label="val MSE",
        val_every=args.val_every,
        validate_at_stop=args.schedule == "cosine",  # the end of the cosine is where its best weights are
        max_steps=args.max_steps,
        max_hours=args.max_hours,
        checkpoint_minutes=args.checkpoint_minutes,
        keep_rng=True,
        log=log,
    )
    if args.resume:
        trainer.resume(lambda saved: resume_mismatch(saved, tag, args.schedule))
    if args.schedule == "cosine" and args.max_hours:  # the budget is training time summed over resumes
        left = remaining_hours(args.max_hours, trainer.state["seconds"])
        if left <= 0:
            log.info(
                "the cosine budget of %.2f h is spent (step %d): nothing to do", args.max_hours, trainer.state["step"]
            )
            return 0
        trainer.max_hours = left
    trainer.distribute()

    items = read_manifest(args.data)
    cache, images = TeacherCache(args.data, tag), ShardImages(args.data)
    val_items = [it for it in items if it.split == "val" and cache.has(it.id)][: args.val_items]
    batches = Batches(
        [it for it in items if it.split == "train"],
        cache,
        images,
        args.batch_size,
        rank,
        world,
        rng,
        flips=args.flips,
        repeats=args.oversample,
    )
    log.info(
        "%d validation items cached; lr %.2e, batch %d x %d, bf16 %s, flips %s, oversample %s",
        len(val_items),
        trainer.lr(),
        args.batch_size,
        world,
        args.bf16,
        args.flips,
        args.oversample or "none",
    )
    csv_log = CsvLog(
        args.out / "log.csv", ["step", "seconds", "lr", "train_mse", "grad_norm", "val_mse"], enabled=rank == 0
    )

    def batch_stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            x, y = batches.next()
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    mask_rng = np.random.default_rng([args.seed, rank, trainer.state["step"]])

    def loss_for(y: torch.Tensor, content: list[tuple[int, int]]) -> Callable[[torch.Tensor], Any]:
        if not args.mask_loss:
            return mse_to(y)

        def loss(pred: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            mse = F.mse_loss(pred.float(), y)
            masks = mask_loss(student, pred, y, content, mask_rng, args.mask_boxes)
            return mse + args.mask_loss * masks, {"mse": mse.detach(), "mask": masks.detach()}

        return loss

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> StepResult:
        x, y = batch
        if args.schedule == "cosine":
            st = trainer.state
            frac = from_rank0(budget_fraction(st["step"], st["seconds"], args.max_steps, args.max_hours), rt)
            for group in opt.param_groups:
                group["lr"] = cosine_lr(args.lr, st["step"], frac, args.warmup)
        content = [(it.h, it.w) for it in batches.last]  # flips keep the content size
        size = args.micro_batch if 0 < args.micro_batch < len(x) else len(x)
        micro = [
            ((x[i : i + size],), loss_for(y[i : i + size], content[i : i + size]), len(x[i : i + size]) / len(x))
            for i in range(0, len(x), size)
        ]
        return trainer.step_micro(micro)

    def validation() -> float:
        return validate(encoder, val_items, images, cache, device, args.bf16, args.freeze_bn)

    def on_step(result: StepResult, val: str) -> None:
        step_no = trainer.state["step"]
        if csv_log.enabled and (step_no % 10 == 0 or val):
            train_mse = np.mean([r.loss for r in trainer.recent[-10:]])
            csv_log.row(
                [
                    step_no,
                    f"{trainer.state['seconds']:.0f}",
                    f"{trainer.lr():.3e}",
                    f"{train_mse:.6f}",
                    f"{result.grad_norm:.3f}",
                    val,
                ]
            )
            if not val:
                parts = "".join(
                    f" {k} {np.mean([r.parts.get(k, 0.0) for r in trainer.recent[-10:]]):.5f}" for k in result.parts
                )
                log.info(
                    "step %d train loss %.5f%s grad %.2f (%.2f s/step)",
                    step_no,
                    train_mse,
                    parts,
                    result.grad_norm,
                    trainer.seconds_per_step(),
                )

    trainer.run(batch_stream(), step, validation if val_items else None, on_step)
    csv_log.close()
    trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
