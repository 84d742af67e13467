"""Limits of the click protocol per object: the best of its clicks, and the ground truth through the mask frame.

- **Best of the clicks** (from ``pool_clicks.py``'s ``pool_clicks_objects.csv``): the mean over objects of each
  object's best DSC over clicks 1..K, against its DSC after click K. It bounds any rule that stops clicking or
  reverts a click that made the mask worse (the rule would need the ground truth to know).
- **The mask frame** (from the label maps alone): each ground-truth object taken to the 256 model frame as its
  area fraction, written as a logit (2 * fraction - 1) and brought back by the app's own upsampling
  (:func:`~medsam_desktop.core.inference.preprocess.logits_to_masks`): the DSC of the ground truth itself after a
  256x256 logit map, per object size and image size. It is an estimate of the frame's limit, not a proof (other
  logit values could draw sub-pixel edges a little better).

    python training/click_bounds.py --objects runs/pool_clicks/pool_clicks_objects.csv \
        --labels ../shared/data/pool_labels
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsam_desktop.core.evaluation.metrics import dice
from medsam_desktop.core.inference.preprocess import MODEL_SIZE, FrameInfo, logits_to_masks, resize_image
from training.click_data import label_paths, read_label_map
from training.pool_clicks import BAND_NAMES, size_band

log = logging.getLogger("click_bounds")


def best_of_clicks(rows: list[dict[str, str]]) -> dict[str, tuple[int, float, float, float]]:
    """``pool_clicks_objects.csv`` rows -> per box kind: (objects, mean DSC after the last click, mean of each
    object's best DSC over clicks 1..K, share of objects whose last click is more than 0.01 below their best)."""
    curves: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for r in rows:
        curves[(r["boxes"], r["image"], r["label"])][int(r["click"])] = float(r["dsc"])
    out = {}
    for kind in sorted({k[0] for k in curves}):
        last, best = [], []
        for key, c in curves.items():
            if key[0] == kind and len(c) > 1:
                k = max(c)
                last.append(c[k])
                best.append(max(c[i] for i in range(1, k + 1)))
        a, b = np.array(last), np.array(best)
        out[kind] = (len(a), float(a.mean()), float(b.mean()), float(np.mean(b - a > 0.01)))
    return out


def frame_ceiling(labels: np.ndarray) -> list[tuple[int, float]]:
    """(H, W) label map -> (area px, DSC) per object after the 256 model frame (see the module docstring)."""
    frame = FrameInfo.of(labels.shape)
    h, w = frame.resized_size
    out = []
    for v in (int(v) for v in np.unique(labels) if v != 0):
        truth = labels == v
        logits = np.full((1, MODEL_SIZE, MODEL_SIZE), -1.0, np.float32)
        logits[0, :h, :w] = 2 * resize_image(truth.astype(np.float32), (h, w)) - 1
        out.append((int(truth.sum()), dice(logits_to_masks(logits, frame)[0], truth)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=Path, default=None, help="pool_clicks_objects.csv of pool_clicks.py")
    ap.add_argument("--labels", type=Path, default=None, help="pool_labels folder: the mask-frame ceiling")
    ap.add_argument("--min-area", type=int, default=20, help="objects smaller than this are left out (as dev)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.objects is not None:
        with args.objects.open(newline="") as fh:
            for kind, (n, last, best, share) in best_of_clicks(list(csv.DictReader(fh))).items():
                log.info(
                    "%s boxes, %d objects: last click %.4f, best of clicks %.4f (+%.2f points); "
                    "%.1f %% of objects end > 0.01 below their best",
                    kind, n, last, best, 100 * (best - last), 100 * share,
                )  # fmt: skip
    if args.labels is not None:
        bands: dict[str, list[float]] = defaultdict(list)
        by_image: dict[tuple[str, int], list[float]] = defaultdict(list)
        for path in sorted(set(label_paths(args.labels).values())):
            labels = read_label_map(path)
            for area, d in frame_ceiling(labels):
                if area >= args.min_area:
                    bands[size_band(area)].append(d)
                    by_image[(size_band(area), max(labels.shape))].append(d)
        for band in (b for b in BAND_NAMES if b in bands):
            log.info("mask frame, %s: %d objects, DSC %.4f", band, len(bands[band]), np.mean(bands[band]))
        for (band, side), values in sorted(by_image.items(), key=lambda kv: (BAND_NAMES.index(kv[0][0]), kv[0][1])):
            log.info("  %s, longer image side %d px: %d objects, %.4f", band, side, len(values), np.mean(values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
