"""The slowest case's shape: a synthetic 512x512x300 CT with 6 objects, segmented by 3D propagation.

Total time and peak RSS per configuration, each in its own child process. Peak RSS is the process's
high-water mark during the segmentation (reset after building the volume, where the kernel allows):
the resident int16 volume, the model, the default 256 MB embedding cache, the labels and all temporaries.
The path is the app's: int16 HU volume -> soft-tissue window applied per slice when the model asks for
it (as the app's worker does) -> ``propagate_boxes`` with the byte-bounded embedding cache.

    .venv/bin/python benchmarks/synthetic_ct.py [--configs student,student-bf16] [--threads 2] [--depth 300]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

try:
    from benchmarks._common import build_backend, machine_line, parse_configs, peak_rss_mb, reset_peak_rss, run_child
except ImportError:  # run as a script from benchmarks/
    from _common import (  # type: ignore[no-redef]
        build_backend,
        machine_line,
        parse_configs,
        peak_rss_mb,
        reset_peak_rss,
        run_child,
    )

# name, centre (z, y, x) as fractions of the volume, semi-axes (z, y, x) in voxels, HU
OBJECTS = [
    ("liver", (0.45, 0.45, 0.35), (60, 90, 80), 60),
    ("spleen", (0.45, 0.45, 0.75), (35, 40, 30), 45),
    ("kidney_left", (0.60, 0.60, 0.70), (30, 30, 22), 150),
    ("kidney_right", (0.60, 0.60, 0.30), (30, 30, 22), 150),
    ("aorta", (0.50, 0.58, 0.52), (140, 12, 12), 250),
    ("vertebrae", (0.50, 0.72, 0.50), (145, 25, 22), 500),
]


def _ellipse_slices(depth: int, size: int) -> list[tuple[int, int, slice, slice, np.ndarray]]:
    """Per object and slice: (object index, z, row slice, column slice, boolean cross-section) - small arrays."""
    out = []
    for i, (_, (cz, cy, cx), (az, ay, ax), _) in enumerate(OBJECTS):
        c = (cz * depth, cy * size, cx * size)
        for z in range(max(0, int(c[0] - az)), min(depth - 1, int(c[0] + az)) + 1):
            f = 1 - ((z - c[0]) / az) ** 2
            if f <= 0:
                continue
            ry, rx = ay * np.sqrt(f), ax * np.sqrt(f)
            y0, y1 = max(0, int(c[1] - ry)), min(size, int(c[1] + ry) + 2)
            x0, x1 = max(0, int(c[2] - rx)), min(size, int(c[2] + rx) + 2)
            yy, xx = np.ogrid[y0:y1, x0:x1]
            disc = ((yy - c[1]) / ay) ** 2 + ((xx - c[2]) / ax) ** 2 <= f
            if disc.any():
                out.append((i, z, slice(y0, y1), slice(x0, x1), disc))
    return out


def synthetic_ct(depth: int = 300, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(D, H, W) int16 HU volume (air, body with noise, 6 ellipsoids) and tight 3D boxes (6, 6) [x0,y0,z0,x1,y1,z1].

    Built slice by slice, so generating it costs little more memory than the volume itself.
    """
    rng = np.random.default_rng(seed)
    vol = np.full((depth, size, size), -1000, dtype=np.int16)
    yy, xx = np.ogrid[:size, :size]
    body = ((yy - size * 0.5) / (size * 0.38)) ** 2 + ((xx - size * 0.5) / (size * 0.45)) ** 2 <= 1
    n_body = int(body.sum())
    for z in range(depth):
        vol[z][body] = rng.normal(20, 15, n_body).astype(np.int16)
    lo = np.full((len(OBJECTS), 3), np.iinfo(np.int64).max)
    hi = np.full((len(OBJECTS), 3), -1)
    for i, z, rows, cols, disc in _ellipse_slices(depth, size):
        hu = OBJECTS[i][3]
        vol[z, rows, cols][disc] = hu + rng.normal(0, 10, int(disc.sum())).astype(np.int16)
        r, c = np.nonzero(disc)
        lo[i] = np.minimum(lo[i], (c.min() + cols.start, r.min() + rows.start, z))
        hi[i] = np.maximum(hi[i], (c.max() + cols.start, r.max() + rows.start, z))
    return vol, np.hstack([lo, hi]).astype(np.int64)


def run_one(label: str, threads: int, depth: int) -> dict[str, float]:
    from medsam_desktop.core.inference.cache import EmbeddingCache
    from medsam_desktop.core.inference.model_input import ModelInput
    from medsam_desktop.core.inference.predictor import Predictor
    from medsam_desktop.core.inference.propagation import propagate_boxes
    from medsam_desktop.io import Volume

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
    reset = reset_peak_rss()  # from here: volume + model resident, peak of the segmentation itself
    t0 = time.perf_counter()
    stack = ModelInput(Volume(vol, modality="CT"))  # the app's model input: soft-tissue window, slice by slice
    labels = propagate_boxes(
        predictor,
        stack,
        boxes,
        volume_key="synthetic",  # type: ignore[arg-type]
        pixel_spacing=stack.pixel_spacing,
    )
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    inter = np.zeros(len(OBJECTS))
    pred_n = np.array([np.sum(labels == v + 1) for v in range(len(OBJECTS))], dtype=float)
    truth_n = np.zeros(len(OBJECTS))
    truth = np.zeros_like(labels)
    for i, z, rows, cols, disc in _ellipse_slices(depth, 512):  # later objects win overlaps, as in labels
        truth[z, rows, cols][disc] = i + 1
    for v in range(len(OBJECTS)):
        t = truth == v + 1
        truth_n[v] = t.sum()
        inter[v] = np.sum(t & (labels == v + 1))
    dsc = 2 * inter / np.maximum(1, pred_n + truth_n)
    return {
        "seconds": seconds,
        "peak_rss_mb": peak,
        "peak_is_segmentation_only": reset,
        "volume_mb": vol.nbytes / 2**20,
        "slices_encoded": calls["encode"],
        "boxes_decoded": calls["decoded boxes"],
        "mean_dsc": float(np.mean(dsc)),
        "cache_mb": predictor.cache.nbytes / 2**20 if predictor.cache else 0.0,
    }


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
        results[label] = run_child(__file__, [label, "--threads", str(args.threads), "--depth", str(args.depth)])
        print(label, results[label], flush=True)
    print()
    print(machine_line(args.threads))
    print(
        f"synthetic CT 512x512x{args.depth} int16 ({next(iter(results.values()))['volume_mb']:.0f} MB), "
        f"{len(OBJECTS)} objects, default cache 256 MB"
    )
    print(f"{'configuration':<24}{'seconds':>9}{'peak RSS MB':>13}{'slices':>8}{'boxes':>7}{'DSC':>7}")
    for k, r in results.items():
        print(
            f"{k:<24}{r['seconds']:>9.1f}{r['peak_rss_mb']:>13.0f}{r['slices_encoded']:>8}{r['boxes_decoded']:>7}"
            f"{r['mean_dsc']:>7.3f}"
        )
    if "teacher" in results:
        for k in results:
            if k != "teacher":
                print(f"speed-up {k} vs teacher: {results['teacher']['seconds'] / results[k]['seconds']:.1f}x")
    worst = max(r["peak_rss_mb"] for r in results.values())
    print(f"largest peak RSS: {worst:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
