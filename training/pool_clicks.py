"""The box-then-clicks protocol on held-out pool images with ground truth, exactly as on the dev set: a
selection proxy for the click path that is not the dev set.

Images: the pool images that ``pool_labels/`` labels (endoscopy and microscopy) and that the distillation split
holds out (``val`` and ``proxy`` of ``prepare_data.py``'s manifest; the click path never trained on them).
Each runs :func:`~medsam_desktop.core.evaluation.click_protocol.clicks_2d` (the app's default predictor, the
shipped click path) with every labelled object's box either **tight** (the challenge format's boxes: the tight
inclusive bbox) or **perturbed** as the click trainer starts (each side moved out by 0..max(5, 10 % of the
longer side) model pixels, seeded). Prints per-object tables (``evaluate_clicks.object_table``), also split
by object size, so a regression on small objects (cells) is seen where it happens.

    python training/pool_clicks.py --data /work/cache/distill/data [--labels ../shared/data/pool_labels]
        [--boxes tight,perturbed] [--per-modality 0] [--out runs/pool_clicks]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsam_desktop.core.backends import load_backend
from medsam_desktop.core.backends.clicks import load_click_backend
from medsam_desktop.core.evaluation.click_protocol import ClickCurve, clicks_2d
from medsam_desktop.core.inference.boxes import model_scale
from medsam_desktop.core.inference.clicks import ClickRefiner
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.io import read_image
from medsam_desktop.model_files import default_model_name, student_weights_path
from training.click_data import label_paths, read_label_map
from training.evaluate_clicks import object_table, write_report
from training.prepare_data import volume_to_uint8
from training.train_clicks import start_shift

log = logging.getLogger("pool_clicks")
HELD_OUT = ("val", "proxy")
#: object sizes (ground-truth pixels) of the size rows
SIZE_BANDS = ((0, 100), (100, 300), (300, 1000), (1000, None))
#: their row names, in order
BAND_NAMES = tuple(f"{lo}+ px" if hi is None else f"{lo}-{hi} px" for lo, hi in SIZE_BANDS)


def size_band(area: int) -> str:
    """The :data:`BAND_NAMES` row of an object of ``area`` ground-truth pixels."""
    return next(name for (lo, hi), name in zip(SIZE_BANDS, BAND_NAMES) if area >= lo and (hi is None or area < hi))


def held_out_images(manifest: Path, labelled: dict[str, Path]) -> list[tuple[str, str]]:
    """(pool image, modality) of every held-out manifest group that has a label map, in manifest order."""
    seen: dict[str, str] = {}
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] in HELD_OUT and row["group"] in labelled:
                seen.setdefault(row["group"], row["modality"])
    return list(seen.items())


def first_per_modality(images: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """The first ``n`` (image, modality) pairs of each modality, in the given order."""
    taken: dict[str, int] = defaultdict(int)
    out = []
    for group, modality in images:
        if taken[modality] < n:
            taken[modality] += 1
            out.append((group, modality))
    return out


def object_boxes(labels: np.ndarray, mode: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Label map (H, W) -> consecutive ground truth (H, W) and one box (N, 4) per object, image pixels.

    ``tight``: the inclusive bbox; ``perturbed``: each side moved out by a uniform 0..max(5, 10 % of the longer
    side) model pixels (``train_clicks.start_shift``; drawn uniformly here, in whole pixels there), clipped to the
    image."""
    h, w = labels.shape
    scale = model_scale((h, w))
    values = [int(v) for v in np.unique(labels) if v != 0]
    gts = np.zeros(labels.shape, np.uint16 if len(values) > 255 else np.uint8)
    boxes = []
    for k, v in enumerate(values, start=1):
        ys, xs = np.nonzero(labels == v)
        gts[ys, xs] = k
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
        if mode == "perturbed":
            side = (max(np.ptp(xs), np.ptp(ys)) + 1) * scale
            grow = rng.uniform(0, start_shift(side), 4) / scale
            box += grow * np.array([-1, -1, 1, 1])
            box = np.clip(np.round(box), 0, [w - 1, h - 1, w - 1, h - 1])
        boxes.append(box)
    return gts, np.array(boxes).reshape(-1, 4)


def size_table(curves: list[ClickCurve], sizes: list[list[int]], clicks: int) -> str:
    """Per-object rows by ground-truth size band (:data:`SIZE_BANDS`)."""
    bands: dict[str, list[ClickCurve]] = defaultdict(list)
    for curve, px in zip(curves, sizes):
        for j, n in enumerate(px):
            bands[size_band(n)].append(
                ClickCurve(
                    dsc=[d[j] for d in curve.object_dsc], nsd=[d[j] for d in curve.object_nsd], objects=(1,),
                    object_dsc=[(d[j],) for d in curve.object_dsc], object_nsd=[(d[j],) for d in curve.object_nsd],
                )
            )  # fmt: skip
    ordered = {name: bands[name] for name in BAND_NAMES if name in bands}
    return object_table(ordered, clicks, sort=False, groups="sizes")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepare_data.py folder (its manifest's splits)")
    ap.add_argument("--labels", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/pool_labels")
    ap.add_argument("--boxes", default="tight,perturbed")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--per-modality", type=int, default=0, help="the first N images of each modality (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/pool_clicks"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    labelled = label_paths(args.labels)
    images = held_out_images(args.data / "manifest.csv", labelled)
    if args.per_modality:
        images = first_per_modality(images, args.per_modality)
    if not images:
        log.error("no held-out labelled images in %s", args.data / "manifest.csv")
        return 1
    pool = args.labels.parent
    predictor = Predictor(load_backend(default_model_name(), threads=args.threads))
    refiner = ClickRefiner(lambda: load_click_backend(student_weights_path(), args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    report, rows = [], []
    for mode in [m for m in args.boxes.split(",") if m]:
        rng = np.random.default_rng(args.seed)
        curves: dict[str, list[ClickCurve]] = defaultdict(list)
        sizes: list[list[int]] = []
        flat: list[ClickCurve] = []
        for group, modality in images:
            vol = read_image(pool / group)
            image = volume_to_uint8(vol.array, modality, vol.array.dtype, pool / group)[0]
            gts, boxes = object_boxes(read_label_map(labelled[group]), mode, rng)
            _, curve = clicks_2d(predictor, refiner, image, boxes, gts, args.clicks, group)
            curves[modality].append(curve)
            flat.append(curve)
            counts = np.bincount(gts.ravel(), minlength=len(boxes) + 1)
            sizes.append([int(counts[v]) for v in curve.objects])
            rows += [(mode, group, modality, *r[:2], f"{r[2]:.4f}", f"{r[3]:.4f}") for r in curve.object_rows()]
            log.info("%s %s: %d objects, DSC %s", mode, group, len(curve.objects),
                     " ".join(f"{v:.3f}" for v in curve.dsc))  # fmt: skip
        report.append(f"### {mode} boxes, per object\n\n{object_table(curves, args.clicks)}\n")
        report.append(f"### {mode} boxes, per object by size\n\n{size_table(flat, sizes, args.clicks)}\n")
    with open(args.out / "pool_clicks_objects.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["boxes", "image", "modality", "label", "click", "dsc", "nsd"])
        w.writerows(rows)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
