"""Time each part of one online-distillation step (``training/distill_online.py``) on a GPU.

Random weights (timing only): augmentation, the teacher's forward (fp32/TF32 and bf16 autocast), the
student's forward + backward in several layouts and precisions. Prints a table of median milliseconds per
batch and images per second, and last the ratio of the slowest to the fastest student variant.

    python benchmarks/gpu_distill_step.py [--batch-size 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from medsam_desktop.model.registry import ENCODER_REGISTRY
from training.gpu_augment import AugmentConfig, augment


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``fn`` after two warm-up calls."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--benchmark-cudnn", action="store_true", help="torch.backends.cudnn.benchmark = True")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.benchmark_cudnn
    b = args.batch_size
    images = torch.randint(0, 256, (b, 256, 256, 3), dtype=torch.uint8, device=device)
    hw = torch.tensor([[256, 200]] * b, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    x = augment(images, hw, AugmentConfig(), gen)
    teacher = ENCODER_REGISTRY["litemedsam"]().to(device).eval().requires_grad_(False)
    rows: list[tuple[str, float]] = [
        ("augment", timed(lambda: augment(images, hw, AugmentConfig(), gen), args.repeats, device))
    ]

    def teacher_fwd(bf16: bool, cl: bool) -> Callable[[], object]:
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()

        def run() -> object:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return teacher(xi)

        return run

    for bf16 in (False, True):
        for cl in (False, True):
            rows.append(
                (
                    f"teacher fwd {'bf16' if bf16 else 'tf32'} {'NHWC' if cl else 'NCHW'}",
                    timed(teacher_fwd(bf16, cl), args.repeats, device),
                )
            )
    y = teacher(x).float()
    student_rows = []
    for bf16 in (True, False):
        for cl in (True, False):
            student = ENCODER_REGISTRY["repvit_m0_6"]().to(device).train()
            if cl:
                student = student.to(memory_format=torch.channels_last)
            xi = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
            opt = torch.optim.AdamW(student.parameters(), lr=1e-4)

            def step(
                student: torch.nn.Module = student,
                xi: torch.Tensor = xi,
                opt: torch.optim.Optimizer = opt,
                bf16: bool = bf16,
            ) -> object:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    pred = student(xi)
                loss = F.mse_loss(pred.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss

            name = f"student fwd+bwd+step {'bf16' if bf16 else 'tf32'} {'NHWC' if cl else 'NCHW'}"
            ms = timed(step, args.repeats, device)
            rows.append((name, ms))
            student_rows.append(ms)
    print(f"{f'part (batch {b})':<44} {'ms':>9} {'images/s':>9}")
    for name, ms in rows:
        print(f"{name:<44} {ms:9.1f} {b / ms * 1000:9.0f}")
    print(f"slowest / fastest student variant: {max(student_rows) / min(student_rows):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
