"""Encoder and decoder latency per slice: student (RepViT-M0.6) vs teacher (LiteMedSAM TinyViT), one process.

Both networks are fused for inference and run under ``torch.inference_mode`` with the same thread count.
Runs are interleaved (student, teacher, student, ...) so machine noise hits both alike; medians are reported.
Weights do not change latency, so the student runs with random weights when none are bundled.

    .venv/bin/python benchmarks/encoder_latency.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medsam_desktop.model import build_model, fuse_for_inference, load_teacher
from medsam_desktop.model.checkpoint import student_checkpoint_path


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from medsam_desktop.model import load_checkpoint

    path = student_checkpoint_path()
    student = load_checkpoint(path) if path else build_model("repvit_m0_6")
    nets = {
        "student repvit_m0_6": fuse_for_inference(student),
        "teacher litemedsam": fuse_for_inference(load_teacher()),
    }
    for net in nets.values():
        net.image_encoder.to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    box = torch.tensor([[60.0, 70.0, 180.0, 200.0]])
    enc: dict[str, list[float]] = {k: [] for k in nets}
    dec: dict[str, list[float]] = {k: [] for k in nets}
    with torch.inference_mode():
        embs = {k: n.encode(x) for k, n in nets.items()}
        for i in range(args.warmup + args.repeats):
            for k, n in nets.items():
                te = timed(n.encode, x)
                td = timed(n.decode, embs[k], box)
                if i >= args.warmup:
                    enc[k].append(te)
                    dec[k].append(td)
    print(f"threads={args.threads} repeats={args.repeats} (median, ms)  student weights: {path or 'random'}")
    print(f"{'model':<22}{'encoder':>10}{'decoder/box':>14}")
    for k in nets:
        print(f"{k:<22}{1e3 * statistics.median(enc[k]):>10.1f}{1e3 * statistics.median(dec[k]):>14.1f}")
    s, t = (statistics.median(enc[k]) for k in nets)
    print(f"encoder speed-up student vs teacher: {t / s:.1f}x")


if __name__ == "__main__":
    main()
