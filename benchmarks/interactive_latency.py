"""Interactive latency through the code the app's worker runs: box -> mask on a 512x512 CT slice.

Per configuration: (a) box -> mask when the slice's embedding is cached (cache lookup, decoder,
postprocessing to a 512x512 mask), p50 and p95 over random boxes; (b) first mask on a new slice
(preprocessing + encoder + the same), p50 and p95 over distinct slices. The worker calls exactly
``Predictor.encode(slice, key)`` then ``Predictor.decode(embedding, box)``; so does this script.
Configurations are interleaved per repetition.

    .venv/bin/python benchmarks/interactive_latency.py [--configs teacher,student,student-bf16] [--repeats 40]
"""

from __future__ import annotations

import argparse

import numpy as np

from medsam_desktop.core.inference.cache import EmbeddingCache
from medsam_desktop.core.inference.intensity import to_display_uint8
from medsam_desktop.core.inference.predictor import Predictor

try:
    from benchmarks._common import build_backend, machine_line, parse_configs, percentile_ms, timed
    from benchmarks.synthetic_ct import synthetic_ct
except ImportError:  # run as a script from benchmarks/
    from _common import build_backend, machine_line, parse_configs, percentile_ms, timed  # type: ignore[no-redef]
    from synthetic_ct import synthetic_ct  # type: ignore[no-redef]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="teacher,student,student-bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40, help="cached-embedding prompts per configuration")
    ap.add_argument("--new-slices", type=int, default=10, help="first-mask measurements per configuration")
    args = ap.parse_args(argv)
    labels = parse_configs(args.configs)
    vol, boxes3d = synthetic_ct(depth=60)
    slices = to_display_uint8(vol, "CT", "soft tissue")
    predictors = {k: Predictor(build_backend(k, args.threads), EmbeddingCache()) for k in labels}
    rng = np.random.default_rng(0)
    z_cached = 30
    key = ("ct", z_cached)
    for p in predictors.values():  # warm-up, and the cached slice
        p.decode(p.encode(slices[z_cached], key=key), boxes3d[0, [0, 1, 3, 4]])

    cached = {k: [] for k in labels}
    first = {k: [] for k in labels}
    for _ in range(args.repeats):
        x0, y0 = rng.uniform(60, 300, 2)
        box = np.array([x0, y0, x0 + rng.uniform(15, 150), y0 + rng.uniform(15, 150)])
        for k, p in predictors.items():
            cached[k].append(timed(lambda p=p, box=box: p.decode(p.encode(slices[z_cached], key=key), box)))
    box = boxes3d[0, [0, 1, 3, 4]].astype(float)
    for i in range(args.new_slices):
        z = i * 2  # slices never seen before by any configuration
        for k, p in predictors.items():
            first[k].append(timed(lambda p=p, z=z: p.decode(p.encode(slices[z], key=("ct", z)), box)))

    print(machine_line(args.threads))
    print(f"512x512 CT slice; cached: {args.repeats} random boxes, first mask: {args.new_slices} new slices (ms)")
    print(f"{'configuration':<24}{'cached p50':>12}{'cached p95':>12}{'first p50':>12}{'first p95':>12}")
    for k in labels:
        print(
            f"{k:<24}{percentile_ms(cached[k], 50):>12.1f}{percentile_ms(cached[k], 95):>12.1f}"
            f"{percentile_ms(first[k], 50):>12.1f}{percentile_ms(first[k], 95):>12.1f}"
        )
    if "teacher" in labels:
        for k in labels:
            if k != "teacher":
                print(
                    f"first mask on a new slice, {k} vs teacher: "
                    f"{percentile_ms(first['teacher'], 50) / percentile_ms(first[k], 50):.1f}x"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
