"""The box-then-clicks protocol on the dev set, trained click path against the untrained one, per modality.

Both click paths decode from the same predictor (the app's default runtime on the shipped student), so click 0
(the box) is the same for both and is exactly what ``medsam-infer`` writes without clicks. ``trained`` is the
shipped click path (``load_click_backend``: its OpenVINO IR); ``untrained`` is the box decoder's own prompt
encoder and mask decoder fed the same prompts (box + clicks + the previous logits as mask prompt), i.e. what
clicks give without training. Prints a markdown table per path: mean DSC and NSD after the box and after each
click, and the AUC (clicks 1..K), per modality and over modalities, 2D and 3D separately: per case (the mean over
a case's objects, then over cases) and per object (every object of a modality weighs the same, and the mean over
all objects, the measure issue #19 states its goal in). Dev is a report, never a selector.

    python training/evaluate_clicks.py [--data ../shared/data/eval/dev] [--clicks 5] [--out runs/clicks_dev]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsam_desktop.cli.evaluate import modality_of
from medsam_desktop.core.backends import load_backend
from medsam_desktop.core.backends.clicks import load_click_backend
from medsam_desktop.core.evaluation.click_protocol import ClickCurve, clicks_2d, clicks_3d
from medsam_desktop.core.inference.clicks import ClickRefiner
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.io import read_challenge_gt, read_challenge_npz
from medsam_desktop.model_files import STUDENT_NAME, student_weights_path

log = logging.getLogger("evaluate_clicks")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "dev"


def untrained_backend(threads: int):
    """The box decoder's prompt encoder and mask decoder as a click path (no click training)."""
    from medsam_desktop.core.backends.torch_clicks import TorchClickBackend
    from medsam_desktop.model.checkpoint import load_checkpoint
    from medsam_desktop.model.click_decoder import ClickDecoder

    return TorchClickBackend(ClickDecoder.from_model(load_checkpoint(student_weights_path())), threads)


def table(curves: dict[str, list[ClickCurve]], clicks: int) -> str:
    """Markdown rows: modality, cases, DSC after box/clicks, DSC AUC, NSD after box and last click, NSD AUC."""
    head = ["modality", "cases", "DSC box", *[f"DSC {k}" for k in range(1, clicks + 1)], "DSC AUC", "NSD box",
            f"NSD {clicks}", "NSD AUC"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    rows = []
    for mod in sorted(curves):
        cs = curves[mod]
        dsc = np.mean([c.dsc for c in cs], axis=0)
        nsd = np.mean([c.nsd for c in cs], axis=0)
        row = [*dsc, np.mean([c.dsc_auc for c in cs]), nsd[0], nsd[-1], np.mean([c.nsd_auc for c in cs])]
        rows.append(row)
        lines.append(f"| {mod} | {len(cs)} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    mean = np.mean(rows, axis=0)
    lines.append("| **mean over modalities** | | " + " | ".join(f"**{v:.4f}**" for v in mean) + " |")
    return "\n".join(lines)


def _auc(values: np.ndarray) -> np.ndarray:
    """(objects, K + 1) -> each object's mean of the trapezoids between clicks 1..K (as ``ClickCurve``)."""
    v = values[:, 1:]
    if v.shape[1] < 2:
        return v[:, 0] if v.shape[1] else np.full(len(values), np.nan)
    return ((v[:, 1:] + v[:, :-1]) / 2).mean(axis=1)


def object_table(
    curves: dict[str, list[ClickCurve]], clicks: int, sort: bool = True, groups: str = "modalities"
) -> str:
    """Markdown rows per object: group (modality), objects, DSC after box/clicks, DSC AUC, NSD after box and last
    click; then the mean over all objects and the mean over the groups. Groups in name order unless ``sort`` is
    False (then in ``curves``' order)."""
    head = ["modality", "objects", "DSC box", *[f"DSC {k}" for k in range(1, clicks + 1)], "DSC AUC", "NSD box",
            f"NSD {clicks}"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    per_mod, pooled = [], []
    for mod in sorted(curves) if sort else curves:
        # (objects, clicks + 1) per case, stacked over the group's cases
        dsc = np.concatenate([np.array(c.object_dsc, np.float64).T for c in curves[mod]])
        nsd = np.concatenate([np.array(c.object_nsd, np.float64).T for c in curves[mod]])
        rows = np.column_stack([dsc, _auc(dsc), nsd[:, 0], nsd[:, -1]])
        pooled.append(rows)
        per_mod.append(rows.mean(axis=0))
        lines.append(f"| {mod} | {len(rows)} | " + " | ".join(f"{v:.4f}" for v in per_mod[-1]) + " |")
    everything = np.concatenate(pooled)
    lines.append(
        f"| **all objects** | {len(everything)} | " + " | ".join(f"**{v:.4f}**" for v in everything.mean(0)) + " |"
    )
    lines.append(f"| **mean over {groups}** | | " + " | ".join(f"**{v:.4f}**" for v in np.mean(per_mod, 0)) + " |")
    return "\n".join(lines)


def write_report(out: Path, sections: list[str]) -> None:
    """The markdown sections to ``out/table.md`` and to standard output (the report is the run's result)."""
    text = "\n".join(sections)
    (out / "table.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/clicks_dev"))
    ap.add_argument("--paths", default="trained,untrained")
    ap.add_argument("--dims", default="2D,3D", help="which cases: 2D, 3D or both")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    predictor = Predictor(load_backend(STUDENT_NAME, threads=args.threads))
    makers = {"trained": lambda: load_click_backend(student_weights_path(), args.threads),
              "untrained": lambda: untrained_backend(args.threads)}  # fmt: skip
    paths = [p for p in args.paths.split(",") if p]
    refiners = {p: ClickRefiner(makers[p]) for p in paths}
    curves: dict[str, dict[str, dict[str, list[ClickCurve]]]] = {
        p: defaultdict(lambda: defaultdict(list)) for p in paths
    }
    args.out.mkdir(parents=True, exist_ok=True)
    rows, object_rows = [], []
    for path in sorted((args.data / "imgs").glob("*.npz")):
        if path.name[:2] not in args.dims:
            continue
        case = read_challenge_npz(path)
        gts = read_challenge_gt(args.data / "gts" / path.name)
        mod, dim = modality_of(path.name), "3D" if case.is_3d else "2D"  # as medsam-eval reports them
        for p, refiner in refiners.items():
            t = time.perf_counter()
            if case.is_3d:
                _, curve = clicks_3d(predictor, refiner, case.volume.array, case.boxes, gts, case.spacing_zyx,
                                     args.clicks, path.name)  # fmt: skip
            else:
                _, curve = clicks_2d(predictor, refiner, case.volume.array[0], case.boxes, gts, args.clicks, path.name)
            curves[p][dim][mod].append(curve)
            rows += [
                (p, path.name, mod, k, f"{d:.4f}", f"{n:.4f}") for k, (d, n) in enumerate(zip(curve.dsc, curve.nsd))
            ]
            object_rows += [(p, path.name, mod, *r[:2], f"{r[2]:.4f}", f"{r[3]:.4f}") for r in curve.object_rows()]
            log.info("%s %s: DSC %s (%.1f s)", p, path.name, " ".join(f"{v:.3f}" for v in curve.dsc),
                     time.perf_counter() - t)  # fmt: skip
    with open(args.out / "clicks.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "case", "modality", "click", "dsc", "nsd"])
        w.writerows(rows)
    with open(args.out / "clicks_objects.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "case", "modality", "label", "click", "dsc", "nsd"])
        w.writerows(object_rows)
    report = []
    for p in paths:
        for dim in ("2D", "3D"):
            if curves[p][dim]:
                report.append(f"### {p}, {dim}, per case\n\n{table(curves[p][dim], args.clicks)}\n")
                report.append(f"### {p}, {dim}, per object\n\n{object_table(curves[p][dim], args.clicks)}\n")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
