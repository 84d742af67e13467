"""Student vs teacher on a labelled challenge-format set (default ../shared/data/eval/dev), same machine, same
algorithm (``medsam-infer`` then ``medsam-eval``); prints DSC/NSD per modality side by side, the mean over
modalities, the gap, the per-case seconds, and the DSC of every label of every 3D case (small structures lost
in propagation hide in the per-modality means).

    python training/evaluate.py --student runs/distill/best.pt [--teacher litemedsam] [--out runs/eval]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsam_desktop.cli import evaluate as eval_cli
from medsam_desktop.cli import infer as infer_cli
from medsam_desktop.model_files import student_checkpoint_path

log = logging.getLogger("evaluate")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "dev"


def run_model(name: str, arch: str, weights: Path | None, data: Path, out: Path, threads: int | None) -> Path:
    segs = out / name
    # models are compared in fp32 on torch (the reference); the app's faster defaults are measured in benchmarks/
    argv = [
        "-i",
        str(data / "imgs"),
        "-o",
        str(segs),
        "--model",
        arch,
        "--precision",
        "fp32",
        "--runtime",
        "torch",
        "-q",
    ]
    if weights is not None:
        argv += ["--weights", str(weights)]
    if threads:
        argv += ["--threads", str(threads)]
    if infer_cli.main(argv) != 0:
        log.warning("%s: some cases failed (see above)", name)
    metrics = out / f"{name}_metrics.csv"
    eval_cli.main(["-s", str(segs), "-g", str(data / "gts"), "--csv", str(metrics), "-q"])
    return metrics


def per_modality(metrics_csv: Path) -> tuple[dict[str, tuple[float, float, int]], dict[str, float]]:
    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with metrics_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        by[r["modality"]].append((float(r["DSC"]), float(r["NSD"])))
    table = {m: (float(np.mean([d for d, _ in v])), float(np.mean([n for _, n in v])), len(v)) for m, v in by.items()}
    return table, {r["name"]: float(r["DSC"]) for r in rows}


def per_label_3d(data: Path, segs: dict[str, Path]) -> list[str]:
    """Markdown rows: per 3D case and ground-truth label, its voxel count and each model's DSC ("-" when that
    model has no segmentation of the case)."""
    from medsam_desktop.core.evaluation.metrics import dice
    from medsam_desktop.io.challenge_npz import read_challenge_gt, read_challenge_segs

    rows = [
        "| 3D case | label | voxels | " + " | ".join(f"{k} DSC" for k in segs) + " |",
        "|---|---:|---:|" + "---:|" * len(segs),
    ]
    for gt_path in sorted((data / "gts").glob("3D*.npz")):
        gts = read_challenge_gt(gt_path)
        preds = {
            k: read_challenge_segs(folder / gt_path.name)
            for k, folder in segs.items()
            if (folder / gt_path.name).is_file()
        }
        for label in (int(v) for v in np.unique(gts) if v != 0):
            truth = gts == label
            cells = " | ".join(f"{dice(preds[k] == label, truth):.3f}" if k in preds else "-" for k in segs)
            rows.append(f"| {gt_path.stem} | {label} | {int(truth.sum())} | {cells} |")
    return rows


def teacher_agreement(student: Path, teacher: Path) -> dict[str, tuple[float, int]]:
    """How closely the student reproduces the teacher's own masks (the distillation goal at mask level):
    per case, the mean over the labels either one has of the DSC between the two segmentations (1.0 when neither
    has any label); averaged over the 2D and the 3D cases separately -> {"2D": (mean, n), "3D": (mean, n)}."""
    from medsam_desktop.core.evaluation.metrics import dice
    from medsam_desktop.io.challenge_npz import read_challenge_segs

    per_dim: dict[str, list[float]] = defaultdict(list)
    for t_path in sorted(teacher.glob("*.npz")):
        s_path = student / t_path.name
        if not s_path.is_file():
            continue
        t, s = read_challenge_segs(t_path), read_challenge_segs(s_path)
        labels = [int(v) for v in np.unique(np.concatenate([np.unique(t), np.unique(s)])) if v != 0]
        value = float(np.mean([dice(s == k, t == k) for k in labels])) if labels else 1.0
        per_dim["3D" if t_path.name.startswith("3D") else "2D"].append(value)
    return {k: (float(np.mean(v)), len(v)) for k, v in sorted(per_dim.items())}


def timing(segs_dir: Path) -> float:
    with (segs_dir / "timing.csv").open() as fh:
        return float(sum(float(r["seconds"]) for r in csv.DictReader(fh)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", type=Path, default=None, help="student weights (default: the bundled model)")
    ap.add_argument("--teacher", default="litemedsam", help="'litemedsam' or a teacher checkpoint path")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=Path("runs/eval"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-teacher", action="store_true", help="reuse OUT/teacher_metrics.csv from an earlier run")
    ap.add_argument("--agreement-data", type=Path, default=None,
                    help="also score teacher agreement on held-out pool slices of this prepare_data folder "
                         "(training/agreement.py: the selection proxy; dev is a report)")  # fmt: skip
    ap.add_argument("--agreement-items", type=int, default=0, help="held-out slices (0: all of val + proxy)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

    s_csv = run_model("student", "repvit_m0_6", args.student, args.data, args.out, args.threads)
    if args.skip_teacher and (args.out / "teacher_metrics.csv").is_file():
        t_csv = args.out / "teacher_metrics.csv"
    elif args.teacher == "litemedsam":
        t_csv = run_model("teacher", "litemedsam", None, args.data, args.out, args.threads)
    else:
        t_csv = run_model("teacher", "swin_t", Path(args.teacher), args.data, args.out, args.threads)
    s_tab, _ = per_modality(s_csv)
    t_tab, _ = per_modality(t_csv)
    lines = [
        "| modality | cases | teacher DSC | student DSC | teacher NSD | student NSD |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in sorted(t_tab):
        td, tn, n = t_tab[m]
        sd, sn, _ = s_tab.get(m, (float("nan"), float("nan"), 0))
        lines.append(f"| {m} | {n} | {td:.4f} | {sd:.4f} | {tn:.4f} | {sn:.4f} |")
    t_mean = np.mean([v[0] for v in t_tab.values()])
    s_mean = np.mean([s_tab[m][0] for m in t_tab if m in s_tab])
    tn_mean = np.mean([v[1] for v in t_tab.values()])
    sn_mean = np.mean([s_tab[m][1] for m in t_tab if m in s_tab])
    lines.append(f"| **mean over modalities** | | {t_mean:.4f} | {s_mean:.4f} | {tn_mean:.4f} | {sn_mean:.4f} |")
    worst = min(((s_tab[m][0] - t_tab[m][0]), m) for m in t_tab if m in s_tab)
    print("\n".join(lines))
    print(
        f"\nDSC gap (student - teacher), mean over modalities: {100 * (s_mean - t_mean):+.2f} points; "
        f"worst modality {worst[1]}: {100 * worst[0]:+.2f} points"
    )
    if not args.skip_teacher and (args.out / "teacher" / "timing.csv").is_file():  # both timed in this run
        ts, tt = timing(args.out / "student"), timing(args.out / "teacher")
        print(f"total inference seconds: student {ts:.1f}, teacher {tt:.1f} (ratio {tt / ts:.1f}x)")
    agree = teacher_agreement(args.out / "student", args.out / "teacher")
    agree_line = "Student masks vs the teacher's (mean per-case label DSC): " + ", ".join(
        f"{k} {v:.4f} ({n} cases)" for k, (v, n) in agree.items()
    )
    print(agree_line)
    label_rows = per_label_3d(args.data, {"teacher": args.out / "teacher", "student": args.out / "student"})
    print("\n" + "\n".join(label_rows))
    agreement_md = ""
    if args.agreement_data is not None:
        from training.agreement import agreement, held_out, table, torch_model
        from training.shards import ShardImages

        student = args.student or student_checkpoint_path()
        items = held_out(args.agreement_data, args.agreement_items)
        result = agreement(items, ShardImages(args.agreement_data), torch_model(None, args.threads or 2),
                           [torch_model(student, args.threads or 2)])  # fmt: skip
        agreement_md = "Teacher agreement on held-out pool slices (training/agreement.py):\n\n" + table(
            ["student"], result
        )
        print("\n" + agreement_md)
    (args.out / "table.md").write_text(
        "\n".join(lines) + "\n\n" + agree_line + "\n\n" + "\n".join(label_rows) + "\n\n" + agreement_md + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
