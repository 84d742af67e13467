"""Distil on a lent GPU: the teacher runs online on augmented batches, from a bundle small enough to travel.

A lent GPU machine is bare, offline and receives at most 64 MiB. Three steps:

``bundle`` (here): the training slices as a lossless pack (``pack_shards.pack``: validation items first, then
by balanced rank up to ``--max-mb``) plus float16 copies of the teacher's and the student's image encoders
(``teacher_encoder.pt``, ``student_encoder.pt``; float16 weights move LiteMedSAM's embedding by MSE 4.5e-7,
the student's float16 copy is only a starting point: training continues in float32 from it).

``train`` (there): the pack is decoded onto the GPU once. Every step draws a batch, augments it on the GPU
(:func:`augment`: flips of the content region, a crop-zoom at the same aspect, gamma; re-quantised to uint8
levels, so inputs stay in the app's domain), computes the teacher's embedding of exactly that input (fp32,
TF32 matmuls) and trains each student against it: one student per ``--lr``, all sharing the teacher forward.
bf16 autocast for the students with the loss in fp32 and gradient clipping (the recipe of ``distill.py``); a
non-finite step is skipped, not applied. The lr follows a cosine over the wall-time budget ``--minutes``.
Every ``--val-seconds`` each student is scored on the pack's validation items, unaugmented (the first
``--val-items`` by id, as ``distill.py`` does: the numbers are comparable); ``best_<k>.pt`` and, at the end,
``final_<k>.pt`` hold encoder weights (+ step, val MSE, lr) and ``log.csv`` the curve.

``assemble`` (here): a trained encoder into a full student checkpoint (the prompt encoder and mask decoder of
``--base``, i.e. the teacher's), in ``medsam_desktop.model`` format.

More data than one transfer holds: a machine stays warm ~30 s between calls and keeps what a call left outside
``$OUT``. Call 1 carries the bundle and copies it aside (``cp -r .gpu /root/stage``); call 2, right after,
carries a second pack (``bundle --pack-only --exclude-pack .gpu/pack --out .gpu2``) and trains with
``--bundle /root/stage --extra-pack .gpu2/pack``.

    python training/distill_online.py bundle --data DIR --out .gpu [--max-mb 44]
    python training/distill_online.py train --bundle .gpu --out OUT --minutes 7 --lr 5e-4 1.5e-3 [--teacher-bf16]
    python training/distill_online.py assemble --encoder OUT/best_0.pt --base models/X.pt --out student.pt
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.distill import mse_to
from training.gpu_augment import NO_AUGMENT, AugmentConfig, augment
from training.online_bundle import PACK_DIR, STUDENT_FILE, TEACHER_FILE, assemble, bundle, load_encoder, load_pack
from training.runtime import save_atomic
from training.trainer import CsvLog, Trainer, cosine_lr

log = logging.getLogger("distill_online")


# ----------------------------------------------------------------------------------------------- bundle


# ------------------------------------------------------------------------------------------ augmentation


# ----------------------------------------------------------------------------------------------- train


@dataclass
class Student:
    """One student trained against the shared teacher targets: its :class:`Trainer` (bf16, clip, non-finite
    steps skipped) holds the encoder, the optimizer and the best validation value."""

    key: str
    trainer: Trainer
    peak_lr: float
    losses: list[float] = field(default_factory=list)

    @property
    def encoder(self) -> torch.nn.Module:
        return self.trainer.model

    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.trainer.opt

    @property
    def best_val(self) -> float:
        return float(self.trainer.state["best_val"])

    @property
    def skipped(self) -> int:
        return self.trainer.skipped


def validate(encoder: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 32) -> float:
    encoder.eval()
    total = 0.0
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16):
        for i in range(0, len(x), chunk):
            total += F.mse_loss(encoder(x[i : i + chunk]).float(), y[i : i + chunk], reduction="sum").item()
    encoder.train()
    return total / y.numel()


def save_student(st: Student, path: Path, arch: str, tag: str, info: dict[str, Any]) -> None:
    state = {
        k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in st.encoder.state_dict().items()
    }
    save_atomic({"arch": arch, "teacher": tag, "encoder": state, "peak_lr": st.peak_lr, **info}, path)


@dataclass
class Data:
    """The decoded packs on the training device, and the validation inputs and (fp32) teacher targets."""

    images: torch.Tensor  # (N, 256, 256, 3) uint8
    hw: torch.Tensor  # (N, 2) content sizes
    train_idx: torch.Tensor  # (T,) indices of training items
    val_x: torch.Tensor  # (V, 3, 256, 256) channels-last, unaugmented
    val_y: torch.Tensor  # (V, 256, 64, 64) teacher embeddings


def load_data(
    packs: list[Path], teacher: torch.nn.Module, val_items: int, device: torch.device, gen: torch.Generator
) -> Data:
    """Decode ``packs`` onto ``device``; validation = the first ``val_items`` validation items by id."""
    loaded = [load_pack(d) for d in packs]
    rows = [r for p in loaded for r in p[0]]
    images = torch.from_numpy(np.concatenate([p[1] for p in loaded])).to(device)
    hw = torch.from_numpy(np.concatenate([p[2] for p in loaded])).to(device)
    is_val = np.array([r["split"] == "val" for r in rows], dtype=bool)
    val_order = sorted(np.flatnonzero(is_val), key=lambda i: rows[i]["id"])[:val_items]
    vi = torch.as_tensor(val_order, dtype=torch.long, device=device)
    val_x = augment(images[vi], hw[vi], NO_AUGMENT, gen)
    with torch.no_grad():
        val_y = torch.cat([teacher(val_x[i : i + 32].contiguous()).float() for i in range(0, len(val_x), 32)])
    return Data(
        images,
        hw,
        torch.from_numpy(np.flatnonzero(~is_val)),
        val_x.contiguous(memory_format=torch.channels_last),
        val_y,
    )


def train_step(
    students: list[Student], teacher: torch.nn.Module, x: torch.Tensor, step: int, frac: float, args: argparse.Namespace
) -> None:
    """One teacher forward on the augmented batch ``x`` (NCHW), one optimiser step per student."""
    # NCHW: the teacher ran 1.4x slower on channels-last input (H200, batch 128)
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.teacher_bf16):
        y = teacher(x.contiguous()).float()
    x = x.contiguous(memory_format=torch.channels_last)  # the student's layout (1.8x faster than NCHW)
    for st in students:
        for group in st.opt.param_groups:
            group["lr"] = cosine_lr(st.peak_lr, step, frac, args.warmup)
        result = st.trainer.step((x,), mse_to(y))  # a non-finite step is skipped, not applied
        if result.applied:
            st.losses.append(result.loss)


def validate_all(
    students: list[Student],
    data: Data,
    info: dict[str, Any],
    out: Path,
    arch: str,
    tag: str,
    writer: CsvLog,
    final: bool,
) -> None:
    """Score every student; write ``best_<k>.pt`` on improvement (and ``final_<k>.pt`` when ``final``)."""
    for st in students:
        v = validate(st.encoder, data.val_x, data.val_y)
        info = {**info, "val_mse": v}
        if st.trainer.validated(v):
            save_student(st, out / f"best_{st.key}.pt", arch, tag, info)
        if final:
            save_student(st, out / f"final_{st.key}.pt", arch, tag, info)
        train_mse = float(np.mean(st.losses[-20:])) if st.losses else math.nan
        writer.row(
            [
                info["step"],
                f"{info['seconds']:.0f}",
                info["images"],
                st.key,
                f"{st.opt.param_groups[0]['lr']:.3e}",
                f"{train_mse:.6f}",
                f"{v:.6f}",
            ]
        )
        log.info(
            "step %d (%d images, %.0f s) student %s: val %.6f (best %.6f) train %.6f, skipped %d",
            info["step"],
            info["images"],
            info["seconds"],
            st.key,
            v,
            st.best_val,
            train_mse,
            st.skipped,
        )


def train(args: argparse.Namespace) -> int:
    t0 = time.time()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        log.info("device %s", torch.cuda.get_device_name(device))
    args.out.mkdir(parents=True, exist_ok=True)
    teacher, _, tag = load_encoder(args.bundle / TEACHER_FILE, device)
    teacher.eval().requires_grad_(False)
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    data = load_data([args.bundle / PACK_DIR, *args.extra_pack], teacher, args.val_items, device, gen)
    log.info(
        "pack: %d training, %d validation items (loaded in %.1f s)",
        len(data.train_idx),
        len(data.val_x),
        time.time() - t0,
    )

    students: list[Student] = []
    s_arch = ""
    for k, lr in enumerate(args.lr):
        enc, s_arch, _ = load_encoder(args.bundle / STUDENT_FILE, device)
        enc = enc.to(memory_format=torch.channels_last).train()
        opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=args.weight_decay)
        trainer = Trainer(enc, opt, clip=args.clip, bf16=True, skip_nonfinite=True, log=log)
        trainer.state["best_val"] = validate(enc, data.val_x, data.val_y)
        students.append(Student(str(k), trainer, lr))
    log.info(
        "start val MSE %.6f; %d student(s), lr %s, batch %d, budget %.1f min",
        students[0].best_val,
        len(students),
        args.lr,
        args.batch_size,
        args.minutes,
    )

    fields = ["step", "seconds", "images", "student", "lr", "train_mse", "val_mse"]
    with CsvLog(args.out / "log.csv", fields, append=False) as writer:
        for st in students:
            writer.row([0, 0, 0, st.key, 0, "", f"{st.best_val:.6f}"])
        cfg, budget = AugmentConfig(), args.minutes * 60.0
        t_train, t_val, step, seen, batch = time.time(), time.time(), 0, 0, args.batch_size
        order, pos = data.train_idx[torch.randperm(len(data.train_idx))], 0
        while True:
            frac = (time.time() - t_train) / budget
            done = frac >= 1.0
            if done or time.time() - t_val >= args.val_seconds:
                t_val = time.time()
                info = {"step": step, "seconds": time.time() - t_train, "images": seen}
                validate_all(students, data, info, args.out, s_arch, tag, writer, final=done)
            if done:
                break
            if pos + batch > len(order):
                order, pos = data.train_idx[torch.randperm(len(data.train_idx))], 0
            idx = order[pos : pos + batch].to(device)
            pos += batch
            try:
                train_step(students, teacher, augment(data.images[idx], data.hw[idx], cfg, gen), step, frac, args)
            except torch.cuda.OutOfMemoryError:
                if batch <= 8:
                    raise
                batch //= 2
                for st in students:
                    st.opt.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                log.warning("out of GPU memory: batch size now %d", batch)
                continue
            step += 1
            seen += len(idx)
            if step in (5, 20) or step % 100 == 0:
                log.info(
                    "step %d: %.1f images/s, train MSE %s",
                    step,
                    seen / (time.time() - t_train),
                    " ".join(f"{np.mean(st.losses[-20:]):.5f}" for st in students if st.losses),
                )
    log.info("done: %d steps, %d images in %.0f s (%.0f s in all)", step, seen, time.time() - t_train, time.time() - t0)
    return 0


# --------------------------------------------------------------------------------------------- assemble


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle", help="pack + float16 encoders, to travel")
    b.add_argument("--data", type=Path, required=True, help="prepare_data.py's folder")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--max-mb", type=float, default=44.0, help="pack size limit (MiB)")
    b.add_argument("--student", type=Path, default=Path("models/medsam_lite_repvit_m0_6.pt"))
    b.add_argument("--teacher", type=Path, help="teacher checkpoint (default: installed LiteMedSAM)")
    b.add_argument("--repack", action="store_true", help="rebuild the pack even when OUT/pack exists")
    b.add_argument(
        "--exclude-pack",
        type=Path,
        action="append",
        default=[],
        help="leave out the items of this earlier pack (a second transfer: more data)",
    )
    b.add_argument("--pack-only", action="store_true", help="only the pack (the encoders travelled already)")
    t = sub.add_parser("train", help="online distillation (GPU)")
    t.add_argument("--bundle", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--minutes", type=float, required=True, help="wall-time budget of the training loop")
    t.add_argument("--lr", type=float, nargs="+", default=[5e-4], help="peak lr; one student per value")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--clip", type=float, default=1.0)
    t.add_argument("--val-seconds", type=float, default=60.0)
    t.add_argument("--val-items", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", help="default: cuda when present")
    t.add_argument(
        "--extra-pack",
        type=Path,
        action="append",
        default=[],
        help="another pack (bundle --pack-only --exclude-pack ...) that travelled in an earlier call",
    )
    t.add_argument(
        "--teacher-bf16",
        action="store_true",
        help="training targets under bf16 autocast (1.5x faster teacher on an H200; target MSE vs "
        "fp32 3.5e-5, ~1 %% of the distillation error); validation targets stay fp32",
    )
    a = sub.add_parser("assemble", help="encoder weights -> full student checkpoint")
    a.add_argument("--encoder", type=Path, required=True)
    a.add_argument("--base", type=Path, default=Path("models/medsam_lite_repvit_m0_6.pt"))
    a.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "bundle":
        bundle(
            args.data, args.out, args.max_mb, args.student, args.teacher, args.repack, args.exclude_pack, args.pack_only
        )
    elif args.cmd == "train":
        return train(args)
    else:
        assemble(args.encoder, args.base, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
