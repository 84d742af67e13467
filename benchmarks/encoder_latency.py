"""Encoder latency per slice and decoder latency per box: student vs teacher, one process, interleaved.

Each configuration (see ``benchmarks/_common.py``) runs through the backend the app uses. Runs are
interleaved (teacher, student, student-bf16, teacher, ...) so machine noise hits all alike; medians are
reported. The decoder is timed for one box and per box in a batch of 8 (boxes of one slice share the
embedding and the decoder's first-layer image projections).

    .venv/bin/python benchmarks/encoder_latency.py [--threads 2] [--repeats 20] [--configs teacher,student,student-bf16]
"""

from __future__ import annotations

import argparse

import numpy as np

try:
    from benchmarks._common import build_backend, machine_line, median_ms, parse_configs, random_boxes, timed
except ImportError:  # run as a script from benchmarks/
    from _common import (  # type: ignore[no-redef]
        build_backend,
        machine_line,
        median_ms,
        parse_configs,
        random_boxes,
        timed,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--configs", default="teacher,student,student-bf16")
    args = ap.parse_args(argv)
    labels = parse_configs(args.configs)
    backends = {k: build_backend(k, args.threads) for k in labels}
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 256, 256), dtype=np.float32)
    box1 = np.array([[60.0, 70.0, 180.0, 200.0]], dtype=np.float32)
    box8 = random_boxes(rng, 8)
    embs = {k: b.encode(x) for k, b in backends.items()}
    enc: dict[str, list[float]] = {k: [] for k in labels}
    dec1: dict[str, list[float]] = {k: [] for k in labels}
    dec8: dict[str, list[float]] = {k: [] for k in labels}
    for i in range(args.warmup + args.repeats):
        for k, b in backends.items():
            te = timed(lambda b=b: b.encode(x))
            t1 = timed(lambda b=b, k=k: b.decode(embs[k], box1))
            t8 = timed(lambda b=b, k=k: b.decode(embs[k], box8)) / len(box8)
            if i >= args.warmup:
                enc[k].append(te)
                dec1[k].append(t1)
                dec8[k].append(t8)
    print(machine_line(args.threads))
    print(f"repeats {args.repeats} (medians, ms)")
    print(f"{'configuration':<24}{'encoder':>10}{'decoder 1 box':>15}{'decoder/box of 8':>18}")
    for k in labels:
        print(f"{k:<24}{median_ms(enc[k]):>10.1f}{median_ms(dec1[k]):>15.1f}{median_ms(dec8[k]):>18.1f}")
    if "teacher" in labels:
        t = median_ms(enc["teacher"])
        for k in labels:
            if k.startswith("student"):
                print(f"encoder speed-up {k} vs teacher: {t / median_ms(enc[k]):.1f}x")


if __name__ == "__main__":
    main()
