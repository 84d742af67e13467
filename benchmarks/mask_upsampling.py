"""Logits -> image-frame masks, new vs old: only the rows/columns a positive logit reaches vs the whole frame.

For every 2D dev case, the student's logits for all its boxes (decoded once), then per box, interleaved:
old = ``upsample_logits(logits, frame) > 0`` (bilinear over the whole H x W frame), new =
``logits_to_masks`` (the same values, computed where a mask can be set). Checks the masks are identical and
prints median milliseconds per box by image size class, and last the overall ratio old / new.

    .venv/bin/python benchmarks/mask_upsampling.py [--data ../shared/data/eval/dev] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.core.inference.preprocess import logits_to_masks, upsample_logits
from medsam_desktop.io.challenge_npz import read_challenge_npz

try:
    from benchmarks._common import build_backend, machine_line
except ImportError:  # run as a script from benchmarks/
    from _common import build_backend, machine_line  # type: ignore[no-redef]

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "dev"


def size_class(shape: tuple[int, int]) -> str:
    side = max(shape)
    return "<= 512" if side <= 512 else "513-1024" if side <= 1024 else "> 1024"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    cases = sorted((args.data / "imgs").glob("2DBox_*.npz"))
    if not cases:
        raise SystemExit(f"no 2D cases in {args.data / 'imgs'} (is ../shared/data present?)")
    predictor = Predictor(build_backend("student-bf16", args.threads))
    old_ms: dict[str, list[float]] = defaultdict(list)
    new_ms: dict[str, list[float]] = defaultdict(list)
    area: dict[str, list[float]] = defaultdict(list)
    for path in cases:
        case = read_challenge_npz(path)
        image = case.volume.array[0] if case.volume.array.ndim == 4 else case.volume.array
        emb = predictor.encode(image)
        pred = predictor.decode(emb, case.boxes)
        cls = size_class(emb.frame.original_size)
        for logits in pred.logits:
            one = logits[None]
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                old = upsample_logits(one, emb.frame) > 0
                t1 = time.perf_counter()
                new = logits_to_masks(one, emb.frame)
                t2 = time.perf_counter()
                old_ms[cls].append((t1 - t0) * 1000)
                new_ms[cls].append((t2 - t1) * 1000)
            if not np.array_equal(old, new):
                raise SystemExit(f"{path.name}: masks differ")
            area[cls].append(float(new.mean()))
    print(machine_line(args.threads))
    print(f"{len(cases)} 2D dev cases; masks identical. Median ms per box:")
    print(f"{'longest side':<14}{'boxes':>7}{'mask area %':>13}{'old ms':>9}{'new ms':>9}{'old/new':>9}")
    for cls in ("<= 512", "513-1024", "> 1024"):
        if cls not in old_ms:
            continue
        o, n = statistics.median(old_ms[cls]), statistics.median(new_ms[cls])
        print(f"{cls:<14}{len(area[cls]):>7}{100 * statistics.median(area[cls]):>13.2f}{o:>9.2f}{n:>9.2f}{o / n:>9.1f}")
    total_old = sum(sum(v) for v in old_ms.values())
    total_new = sum(sum(v) for v in new_ms.values())
    print(f"all boxes, total time old / new: {total_old / total_new:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
