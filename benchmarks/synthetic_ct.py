"""The slowest case's shape: a synthetic 512x512x300 CT with 6 objects, segmented by 3D propagation.

Total time and peak RSS (the whole process: volume, display copy, model, default 256 MB embedding cache,
labels) per configuration. Each configuration runs in its own child process, so peak RSS is its own.
The path is the app's: int16 HU volume -> soft-tissue window (``core.intensity``) -> ``propagate_boxes``
with the byte-bounded embedding cache keyed by volume and slice.

    .venv/bin/python benchmarks/synthetic_ct.py [--configs student,student-bf16] [--threads 2] [--depth 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

try:
    from benchmarks._common import build_backend, machine_line, parse_configs, peak_rss_mb
except ImportError:  # run as a script from benchmarks/
    from _common import build_backend, machine_line, parse_configs, peak_rss_mb  # type: ignore[no-redef]

# name, centre (z, y, x) as fractions of the volume, semi-axes (z, y, x) in voxels, HU
OBJECTS = [
    ("liver", (0.45, 0.45, 0.35), (60, 90, 80), 60),
    ("spleen", (0.45, 0.45, 0.75), (35, 40, 30), 45),
    ("kidney_left", (0.60, 0.60, 0.70), (30, 30, 22), 150),
    ("kidney_right", (0.60, 0.60, 0.30), (30, 30, 22), 150),
    ("aorta", (0.50, 0.58, 0.52), (140, 12, 12), 250),
    ("vertebrae", (0.50, 0.72, 0.50), (145, 25, 22), 500),
]


def synthetic_ct(depth: int = 300, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(D, H, W) int16 HU volume (air, body with noise, 6 ellipsoids) and tight 3D boxes (6, 6) [x0,y0,z0,x1,y1,z1]."""
    rng = np.random.default_rng(seed)
    vol = np.full((depth, size, size), -1000, dtype=np.int16)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size * 0.5) / (size * 0.38)) ** 2 + ((xx - size * 0.5) / (size * 0.45)) ** 2 <= 1
    boxes = []
    for z in range(depth):
        vol[z][body] = rng.normal(20, 15, int(body.sum())).astype(np.int16)
    zz = np.arange(depth)[:, None, None]
    for _, (cz, cy, cx), (az, ay, ax), hu in OBJECTS:
        c = np.array([cz * depth, cy * size, cx * size])
        z0, z1 = max(0, int(c[0] - az)), min(depth - 1, int(c[0] + az))
        inside = ((zz[z0 : z1 + 1] - c[0]) / az) ** 2 + ((yy - c[1]) / ay) ** 2 + ((xx - c[2]) / ax) ** 2 <= 1
        sub = vol[z0 : z1 + 1]
        sub[inside] = hu + rng.normal(0, 10, int(inside.sum())).astype(np.int16)
        zi, yi, xi = np.nonzero(inside)
        boxes.append([xi.min(), yi.min(), zi.min() + z0, xi.max(), yi.max(), zi.max() + z0])
    return vol, np.array(boxes, dtype=np.int64)


def run_one(label: str, threads: int, depth: int) -> dict[str, float]:
    from medsam_desktop.core.cache import EmbeddingCache
    from medsam_desktop.core.intensity import to_display_uint8
    from medsam_desktop.core.predictor import Predictor
    from medsam_desktop.core.propagation import propagate_boxes

    vol, boxes = synthetic_ct(depth)
    predictor = Predictor(build_backend(label, threads), EmbeddingCache())  # the app's default: 256 MB
    calls = {"encode": 0, "decoded boxes": 0}
    backend = predictor.backend
    enc, dec = backend.encode, backend.decode

    def counting_encode(x: np.ndarray) -> np.ndarray:
        calls["encode"] += 1
        return enc(x)

    def counting_decode(e: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls["decoded boxes"] += len(b)
        return dec(e, b)

    backend.encode, backend.decode = counting_encode, counting_decode  # type: ignore[method-assign]
    t0 = time.perf_counter()
    display = to_display_uint8(vol, "CT", "soft tissue")
    labels = propagate_boxes(predictor, display, boxes, volume_key="synthetic")
    seconds = time.perf_counter() - t0
    truth = np.zeros_like(labels)
    for i, (_, (cz, cy, cx), (az, ay, ax), _) in enumerate(OBJECTS):  # overlap rule: later label wins
        zz, yy, xx = np.ogrid[:depth, :512, :512]
        truth[((zz - cz * depth) / az) ** 2 + ((yy - cy * 512) / ay) ** 2 + ((xx - cx * 512) / ax) ** 2 <= 1] = i + 1
    dsc = [2 * np.sum((labels == v) & (truth == v)) / max(1, np.sum(labels == v) + np.sum(truth == v))
           for v in range(1, len(OBJECTS) + 1)]
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "slices_encoded": calls["encode"],
            "boxes_decoded": calls["decoded boxes"], "mean_dsc": float(np.mean(dsc)),
            "cache_mb": predictor.cache.nbytes / 2**20 if predictor.cache else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="student,student-bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=300)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.child, args.threads, args.depth)))
        return 0
    labels = parse_configs(args.configs)
    results = {}
    for label in labels:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", label, "--threads", str(args.threads),
               "--depth", str(args.depth)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{label} failed:\n{out.stderr[-2000:]}")
        results[label] = json.loads(out.stdout.strip().splitlines()[-1])
        print(label, results[label], flush=True)
    print()
    print(machine_line(args.threads))
    print(f"synthetic CT 512x512x{args.depth}, {len(OBJECTS)} objects, default cache 256 MB")
    print(f"{'configuration':<16}{'seconds':>9}{'peak RSS MB':>13}{'slices':>8}{'boxes':>7}{'DSC':>7}")
    for k, r in results.items():
        print(f"{k:<16}{r['seconds']:>9.1f}{r['peak_rss_mb']:>13.0f}{r['slices_encoded']:>8}{r['boxes_decoded']:>7}"
              f"{r['mean_dsc']:>7.3f}")
    if "teacher" in results:
        for k in results:
            if k != "teacher":
                print(f"speed-up {k} vs teacher: {results['teacher']['seconds'] / results[k]['seconds']:.1f}x")
    worst = max(r["peak_rss_mb"] for r in results.values())
    print(f"largest peak RSS: {worst:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
