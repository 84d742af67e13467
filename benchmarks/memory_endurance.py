"""Resident memory over a long session with the real model: does it stay flat, with and without malloc tuning?

One child process per setting (glibc malloc tuned, as the app runs, and ``MEDSAM_MALLOC_TUNING=0``) drives the
bundled student through the app's core path on a synthetic 512x512 CT: rounds of prompts on changing slices
(through the default 256 MB embedding cache) and a 3D propagation per round. RSS is sampled after every
round; reported: RSS after the first round, at the end, the growth in between, and the peak. The engine's
Python-level leaks are tested in tests/test_endurance.py (fake backend); this script watches the process.

    .venv/bin/python benchmarks/memory_endurance.py [--rounds 12] [--prompts 40] [--threads 2] [--config LABEL]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

try:
    from benchmarks._common import build_backend, current_rss_mb, machine_line, peak_rss_mb, run_child
    from benchmarks.synthetic_ct import synthetic_ct
except ImportError:  # run as a script from benchmarks/
    from _common import (  # type: ignore[no-redef]
        build_backend,
        current_rss_mb,
        machine_line,
        peak_rss_mb,
        run_child,
    )
    from synthetic_ct import synthetic_ct  # type: ignore[no-redef]


def session(rounds: int, prompts: int, threads: int, config: str = "student-bf16") -> dict[str, object]:
    from medsam_desktop.core.inference.cache import EmbeddingCache
    from medsam_desktop.core.inference.model_input import ModelInput
    from medsam_desktop.core.inference.predictor import Predictor
    from medsam_desktop.core.inference.propagation import propagate_boxes
    from medsam_desktop.io import Volume

    vol, boxes3d = synthetic_ct(60)
    stack = ModelInput(Volume(vol, modality="CT"))
    predictor = Predictor(build_backend(config, threads), EmbeddingCache())
    rng = np.random.default_rng(0)
    samples = []
    t0 = time.perf_counter()
    for r in range(rounds):
        for _ in range(prompts):
            z = int(rng.integers(0, len(stack)))
            emb = predictor.encode(stack[z], key=("synthetic", z), pixel_spacing=stack.pixel_spacing)
            lo = rng.uniform(50, 350, 2)
            predictor.decode(emb, np.concatenate([lo, lo + rng.uniform(20, 150, 2)]))
        sel = boxes3d[r % len(boxes3d) : r % len(boxes3d) + 2]
        propagate_boxes(
            predictor,
            stack,
            sel,
            volume_key="synthetic",  # type: ignore[arg-type]
            pixel_spacing=stack.pixel_spacing,
        )
        samples.append(current_rss_mb())
    return {"rss": samples, "peak": peak_rss_mb(), "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default="student-bf16", help="a configuration of benchmarks/_common.py")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(session(args.rounds, args.prompts, args.threads, args.config)))
        return 0
    child_args = [
        "--rounds",
        str(args.rounds),
        "--prompts",
        str(args.prompts),
        "--threads",
        str(args.threads),
        "--config",
        args.config,
    ]
    results = {
        label: run_child(__file__, child_args, env={"MEDSAM_MALLOC_TUNING": tuning})
        for label, tuning in (("tuned (default)", "1"), ("untuned", "0"))
    }
    print(machine_line(args.threads))
    print(f"{args.config}, synthetic 512x512x60 CT, {args.rounds} rounds of {args.prompts} prompts + 1 propagation")
    print(f"{'malloc':<18}{'RSS round 1':>12}{'RSS end':>10}{'growth':>9}{'peak':>8}{'seconds':>9}")
    for label, r in results.items():
        first, last = r["rss"][0], r["rss"][-1]
        print(f"{label:<18}{first:>12.0f}{last:>10.0f}{last - first:>+9.0f}{r['peak']:>8.0f}{r['seconds']:>9.1f}")
    print("RSS per round (MB), tuned: " + " ".join(f"{v:.0f}" for v in results["tuned (default)"]["rss"]))
    tuned, untuned = results["tuned (default)"], results["untuned"]
    print(
        f"tuned vs untuned: growth {tuned['rss'][-1] - tuned['rss'][0]:+.0f} vs "
        f"{untuned['rss'][-1] - untuned['rss'][0]:+.0f} MB, peak {tuned['peak']:.0f} vs {untuned['peak']:.0f} MB, "
        f"time {untuned['seconds'] / tuned['seconds']:.2f}x faster"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
