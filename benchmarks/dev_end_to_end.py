"""End-to-end challenge inference on the dev set: per-case seconds and DSC/NSD, student vs teacher, one run.

Every case is read once and segmented by each configuration in turn (the order rotates from case to case,
so drifting machine load hits all configurations alike) with the same algorithm as ``medsam-infer``
(:func:`~medsam_desktop.core.inference.challenge.segment_challenge_case`: 2D boxes decoded on one embedding; 3D
middle-slice propagation with one embedding per slice). Timing covers preprocessing, encoder, decoder and
postprocessing, not file reading or scoring. Scores use the challenge metrics (``core.metrics``).

    .venv/bin/python benchmarks/dev_end_to_end.py [--configs teacher,student,default] [--threads 2]
        [--data ../shared/data/eval/dev] [--limit N] [--csv out.csv] [--gate-reference student]

With ``--gate-reference`` (a configuration in ``--configs``, normally ``student`` = torch fp32) every other
configuration is checked against the quality gate of the default runtime (issue #15): mean over modalities of DSC
and of NSD within :data:`GATE_MEAN_POINTS` of the reference, no modality more than :data:`GATE_MODALITY_POINTS`
below it. Cap the instruction set with the environment of ``benchmarks._common.ISA_CAPS`` for the laptop classes.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsam_desktop.cli.evaluate import modality_of
from medsam_desktop.core.evaluation.metrics import evaluate_case
from medsam_desktop.core.inference.challenge import segment_challenge_case
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.io.challenge_npz import read_challenge_gt, read_challenge_npz

try:
    from benchmarks._common import build_backend, describe_config, machine_line, parse_configs
except ImportError:  # run as a script from benchmarks/
    from _common import build_backend, describe_config, machine_line, parse_configs  # type: ignore[no-redef]

GATE_MEAN_POINTS = 0.3
GATE_MODALITY_POINTS = 1.0
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval" / "dev"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--configs", default="teacher,student,student-bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases (0: all)")
    ap.add_argument("--csv", type=Path, default=None, help="also write the per-case rows here")
    ap.add_argument("--gate-reference", default=None, help="check the other configurations against this one")
    args = ap.parse_args(argv)
    cases = sorted((args.data / "imgs").glob("*.npz"))
    if not cases:
        raise SystemExit(f"no cases in {args.data / 'imgs'} (is ../shared/data present?)")
    if args.limit:
        cases = cases[: args.limit]
    labels = parse_configs(args.configs)
    if args.gate_reference and args.gate_reference not in labels:
        raise SystemExit(f"--gate-reference {args.gate_reference} is not one of --configs")
    predictors = {k: Predictor(build_backend(k, args.threads)) for k in labels}
    for k in labels:
        print(describe_config(k, predictors[k].backend))

    rows: list[dict[str, object]] = []
    for i, path in enumerate(cases):
        case = read_challenge_npz(path)
        gts = read_challenge_gt(args.data / "gts" / path.name)
        spacing = case.spacing_zyx if case.is_3d else None
        row: dict[str, object] = {"case": case.name, "modality": modality_of(path.name), "boxes": len(case.boxes)}
        order = labels[i % len(labels) :] + labels[: i % len(labels)]
        for k in order:
            t0 = time.perf_counter()
            segs = segment_challenge_case(predictors[k], case.volume.array, case.boxes)
            seconds = time.perf_counter() - t0
            m = evaluate_case(segs, gts, spacing)
            row[f"{k}_s"], row[f"{k}_dsc"], row[f"{k}_nsd"] = seconds, m.dsc, m.nsd
        rows.append(row)
        print(
            f"{case.name:<52}" + "".join(f"  {k} {row[f'{k}_s']:6.2f}s {row[f'{k}_dsc']:.3f}" for k in labels),
            flush=True,
        )

    print()
    print(machine_line(args.threads))
    print(f"{len(rows)} cases; per modality: mean seconds per case, mean DSC / NSD")
    by: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        by[str(r["modality"])].append(r)
    width = max(16, max(len(k) for k in labels) + 4)
    head = f"{'modality':<12}{'n':>3}" + "".join(f"{k + ' s':>{width}}{'DSC':>7}{'NSD':>7}" for k in labels)
    print(head)

    def mean(rs: list[dict[str, object]], key: str) -> float:
        vals = [float(r[key]) for r in rs if not math.isnan(float(r[key]))]
        return float(np.mean(vals)) if vals else float("nan")

    per_mod: dict[str, dict[str, float]] = {k: {} for k in labels}
    per_mod_nsd: dict[str, dict[str, float]] = {k: {} for k in labels}
    for mod in sorted(by):
        rs = by[mod]
        line = f"{mod:<12}{len(rs):>3}"
        for k in labels:
            per_mod[k][mod], per_mod_nsd[k][mod] = mean(rs, f"{k}_dsc"), mean(rs, f"{k}_nsd")
            line += f"{mean(rs, f'{k}_s'):>{width}.2f}{per_mod[k][mod]:>7.3f}{per_mod_nsd[k][mod]:>7.3f}"
        print(line)
    totals = {k: sum(float(r[f"{k}_s"]) for r in rows) for k in labels}
    print("total seconds: " + ", ".join(f"{k} {totals[k]:.1f}" for k in labels))
    print("mean over modalities DSC: " + ", ".join(f"{k} {np.mean(list(per_mod[k].values())):.4f}" for k in labels))
    print("mean over modalities NSD: " + ", ".join(f"{k} {np.mean(list(per_mod_nsd[k].values())):.4f}" for k in labels))
    if args.gate_reference:
        print_gate(args.gate_reference, labels, per_mod, per_mod_nsd)
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if "teacher" in labels:
        t_dsc = np.mean(list(per_mod["teacher"].values()))
        for k in labels:
            if k != "teacher":
                gap = 100 * (np.mean(list(per_mod[k].values())) - t_dsc)
                print(
                    f"end-to-end speed-up {k} vs teacher: {totals['teacher'] / totals[k]:.1f}x (DSC {gap:+.2f} points)"
                )
    return 0


def print_gate(ref: str, labels: list[str], dsc: dict[str, dict[str, float]], nsd: dict[str, dict[str, float]]) -> None:
    """One line per configuration: mean and worst-modality differences to ``ref`` in points, PASS or FAIL."""
    for k in labels:
        if k == ref:
            continue
        parts, ok = [], True
        for metric, table in (("DSC", dsc), ("NSD", nsd)):
            diffs = {m: 100 * (table[k][m] - table[ref][m]) for m in table[ref]}
            mean_diff = 100 * float(np.mean(list(table[k].values())) - np.mean(list(table[ref].values())))
            worst = min(diffs, key=lambda m: diffs[m])
            ok &= abs(mean_diff) <= GATE_MEAN_POINTS and diffs[worst] >= -GATE_MODALITY_POINTS
            parts.append(f"{metric} mean {mean_diff:+.2f}, worst {worst} {diffs[worst]:+.2f}")
        print(f"gate {k} vs {ref}: {'; '.join(parts)} points -> {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    raise SystemExit(main())
