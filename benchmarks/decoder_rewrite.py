"""Decoder per box, new vs old: SAM's decoder as written vs its single-mask inference rewrite, and malloc tuning.

Old and new run in one process, interleaved, on the same backend (the rewrite is switched with
``mask_decoder.single_mask_rewrite``); the glibc malloc tuning of ``core/allocator.py`` is process-wide, so the
untuned rows come from a child process started with ``MEDSAM_MALLOC_TUNING=0``. With ``--dev-cases N`` the
first N dev cases are also segmented both ways and the label IoU of the rewrite against the reference path is
reported (the rewrite is exact algebra; only summation order differs).

    .venv/bin/python benchmarks/decoder_rewrite.py [--threads 2] [--repeats 15] [--dev-cases 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

try:
    from benchmarks._common import build_backend, machine_line, median_ms, random_boxes, run_child, timed
    from benchmarks.backend_candidates import label_iou
    from benchmarks.dev_end_to_end import DEFAULT_DATA
except ImportError:  # run as a script from benchmarks/
    from _common import (  # type: ignore[no-redef]
        build_backend,
        machine_line,
        median_ms,
        random_boxes,
        run_child,
        timed,
    )
    from backend_candidates import label_iou  # type: ignore[no-redef]
    from dev_end_to_end import DEFAULT_DATA  # type: ignore[no-redef]

CONFIGS = ("student", "student-bf16")


def time_decoders(threads: int, repeats: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """{config: {"old 1", "new 1", "old 8", "new 8"}} median ms per box (1 box; per box in a batch of 8)."""
    backends = {k: build_backend(k, threads) for k in CONFIGS}
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    embs = {k: b.encode(x) for k, b in backends.items()}
    box1, box8 = random_boxes(np.random.default_rng(0), 1), random_boxes(np.random.default_rng(0), 8)
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in CONFIGS}
    for i in range(warmup + repeats):
        for k, b in backends.items():
            for rewrite in (False, True):
                b.model.mask_decoder.single_mask_rewrite = rewrite
                tag = "new" if rewrite else "old"
                t1 = timed(lambda b=b, k=k: b.decode(embs[k], box1))
                t8 = timed(lambda b=b, k=k: b.decode(embs[k], box8)) / len(box8)
                if i >= warmup:
                    samples[k].setdefault(f"{tag} 1", []).append(t1)
                    samples[k].setdefault(f"{tag} 8", []).append(t8)
    for b in backends.values():
        b.model.mask_decoder.single_mask_rewrite = True
    return {k: {tag: median_ms(v) for tag, v in s.items()} for k, s in samples.items()}


def dev_agreement(data: Path, limit: int, threads: int) -> None:
    from medsam_desktop.core.inference.challenge import segment_challenge_case
    from medsam_desktop.core.inference.predictor import Predictor
    from medsam_desktop.io.challenge_npz import read_challenge_npz

    cases = sorted((data / "imgs").glob("*.npz"))[:limit]
    for k in CONFIGS:
        backend = build_backend(k, threads)
        ious = []
        for path in cases:
            case = read_challenge_npz(path)
            segs = []
            for rewrite in (False, True):
                backend.model.mask_decoder.single_mask_rewrite = rewrite
                segs.append(segment_challenge_case(Predictor(backend), case.volume.array, case.boxes))
            ious.append(label_iou(segs[1], segs[0]))
        print(
            f"{k}: rewrite vs reference on {len(cases)} dev cases: label IoU mean {np.mean(ious):.5f}, "
            f"min {min(ious):.5f} ({cases[int(np.argmin(ious))].name})"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dev-cases", type=int, default=0)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # timings only, as JSON, for the parent
        print(json.dumps(time_decoders(args.threads, args.repeats)))
        return 0
    tuned = time_decoders(args.threads, args.repeats)
    untuned = run_child(
        __file__, ["--threads", str(args.threads), "--repeats", str(args.repeats)], env={"MEDSAM_MALLOC_TUNING": "0"}
    )
    print(machine_line(args.threads))
    print(f"repeats {args.repeats}; median ms per box (1 box alone; per box in a batch of 8)")
    print(f"{'configuration':<14}{'malloc':>9}{'old 1':>9}{'new 1':>9}{'old 8':>9}{'new 8':>9}")
    for k in CONFIGS:
        for label, rows in (("default", untuned), ("tuned", tuned)):
            r = rows[k]
            print(f"{k:<14}{label:>9}{r['old 1']:>9.1f}{r['new 1']:>9.1f}{r['old 8']:>9.1f}{r['new 8']:>9.1f}")
    if args.dev_cases:
        dev_agreement(args.data, args.dev_cases, args.threads)
    for k in CONFIGS:
        old, new = untuned[k], tuned[k]
        print(
            f"decoder speed-up {k}, new (rewrite + tuned malloc) vs old: 1 box {old['old 1'] / new['new 1']:.2f}x, "
            f"per box of 8 {old['old 8'] / new['new 8']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
