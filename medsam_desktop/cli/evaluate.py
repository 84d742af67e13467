"""``medsam-eval``: score segmentations against ground truth like the CVPR 2024 challenge.

For every ``GTS_DIR/*.npz`` (challenge format: ``gts`` label map, 2D ``(H, W)`` or 3D
``(D, H, W)``; 3D files also hold ``spacing`` as ``(z, y, x)`` in mm) the file of the same
name in ``SEGS_DIR`` is read (key ``segs``) and scored with
:func:`medsam_desktop.core.evaluation.metrics.evaluate_case`: per-label DSC and NSD (2 mm tolerance
for 3D; 2D cases in pixel units, as ``(H, W, 1)`` slabs, tolerance 2 px), NSD only when the
case DSC > 0.2. A case that cannot be scored is reported on one stderr line and skipped;
the exit status is then 1. Cases whose ground truth is empty give NaN, are left out of the
means and produce a warning.

stdout: a per-modality table and a final line with the mean over modalities and over cases.
``--csv``: one row per scored case: name, modality, dim, n_labels, DSC, NSD, seconds.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import re
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam_desktop.atomic import atomic_write
from medsam_desktop.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_common_arguments,
    describe_exception,
    parse_args,
    progress,
    report_error,
    setup_logging,
)
from medsam_desktop.core.evaluation.metrics import evaluate_case

PROG = "medsam-eval"
log = logging.getLogger("medsam_desktop.cli.evaluate")  # not __name__: may run as __main__

_NAME_RE = re.compile(r"^(?:2D|3D)Box_([^_]+)_")
CSV_FIELDS = ("name", "modality", "dim", "n_labels", "DSC", "NSD", "seconds")


class CaseError(Exception):
    """An expected, per-case problem (missing file or key, bad shapes, unreadable file)."""


@dataclass(frozen=True)
class CaseResult:
    """Scores of one case; ``dsc``/``nsd`` are NaN when the ground truth is empty."""

    name: str
    modality: str
    dim: int
    n_labels: int
    dsc: float
    nsd: float
    seconds: float


def modality_of(name: str) -> str:
    """Modality from a challenge file name ``2DBox_<Modality>_...`` / ``3DBox_<Modality>_...``."""
    match = _NAME_RE.match(name)
    return match.group(1) if match else "unknown"


def _load_array(path: Path, key: str, role: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(array[key], spacing or None)`` from an ``.npz`` file (never unpickles)."""
    if not path.is_file():
        raise CaseError(f"{role} file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CaseError(f"cannot read {role} file {path.name}: {describe_exception(exc)}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CaseError(f"{role} file {path.name} is not an .npz archive")
    try:
        with data:
            if key not in data.files:
                raise CaseError(f"{role} file {path.name} has no '{key}' array (has: {', '.join(data.files)})")
            array = data[key]
            spacing = data["spacing"] if "spacing" in data.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CaseError(f"cannot read {role} file {path.name}: {describe_exception(exc)}") from exc
    return array, spacing


def evaluate_file(gt_path: Path, seg_path: Path, tolerance: float = 2.0) -> CaseResult:
    """Score one case; raises :class:`CaseError` for expected problems."""
    start = time.perf_counter()
    gts, spacing = _load_array(gt_path, "gts", "ground-truth")
    segs, _ = _load_array(seg_path, "segs", "segmentation")
    if gts.ndim not in (2, 3):
        raise CaseError(f"'gts' must be 2D (H, W) or 3D (D, H, W), got shape {gts.shape}")
    if segs.shape != gts.shape:
        raise CaseError(f"shape mismatch: segs {segs.shape} vs gts {gts.shape}")
    for key, array in (("gts", gts), ("segs", segs)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
            raise CaseError(f"'{key}' must hold integer labels, got dtype {array.dtype}")
    if gts.ndim == 3:
        if spacing is None:
            raise CaseError("3D ground truth has no 'spacing' array")
        spacing = np.asarray(spacing, dtype=np.float64).ravel()
        if spacing.size != 3 or not np.all(np.isfinite(spacing) & (spacing > 0)):
            raise CaseError(f"invalid spacing {spacing.tolist()} (need 3 positive values, z y x)")
        sp: tuple[float, ...] | None = tuple(float(v) for v in spacing)
    else:
        sp = None  # challenge: 2D cases are scored in pixel units
    metrics = evaluate_case(segs, gts, sp, tolerance=tolerance)
    return CaseResult(
        name=gt_path.name,
        modality=modality_of(gt_path.name),
        dim=gts.ndim,
        n_labels=metrics.n_labels,
        dsc=metrics.dsc,
        nsd=metrics.nsd,
        seconds=time.perf_counter() - start,
    )


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summary_table(results: Sequence[CaseResult]) -> str:
    """Per-modality table plus a final line with the mean over modalities and over cases."""
    by_modality: dict[str, list[CaseResult]] = {}
    for result in results:
        by_modality.setdefault(result.modality, []).append(result)
    width = max([len("modality"), *(len(m) for m in by_modality)])
    lines = [f"{'modality':<{width}}  {'cases':>5}  {'DSC':>6}  {'NSD':>6}"]
    mod_dsc, mod_nsd = [], []
    for modality in sorted(by_modality):
        cases = by_modality[modality]
        dsc = _nanmean([c.dsc for c in cases])
        nsd = _nanmean([c.nsd for c in cases])
        mod_dsc.append(dsc)
        mod_nsd.append(nsd)
        lines.append(f"{modality:<{width}}  {len(cases):>5d}  {dsc:>6.4f}  {nsd:>6.4f}")
    lines.append(
        f"mean over {len(by_modality)} modalities: DSC {_nanmean(mod_dsc):.4f} NSD {_nanmean(mod_nsd):.4f}"
        f" | mean over {len(results)} cases: DSC {_nanmean([r.dsc for r in results]):.4f}"
        f" NSD {_nanmean([r.nsd for r in results]):.4f}"
    )
    return "\n".join(lines) + "\n"


def write_csv(path: Path, results: Sequence[CaseResult]) -> None:
    """One row per case (columns :data:`CSV_FIELDS`); metrics with 6 decimals. Atomic: a failed write
    leaves any previous file intact."""
    with atomic_write(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for r in results:
            writer.writerow([r.name, r.modality, r.dim, r.n_labels, f"{r.dsc:.6f}", f"{r.nsd:.6f}", f"{r.seconds:.4f}"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Compute DSC and NSD of segmentations against ground truth, as in the CVPR 2024 "
            "'MedSAM on Laptop' challenge (3D: tolerance in mm with the case's spacing; "
            "2D: pixel units). Exit status: 0 all cases scored, 1 some case failed, 2 bad arguments."
        ),
    )
    parser.add_argument(
        "-s",
        "--segs",
        required=True,
        type=Path,
        metavar="SEGS_DIR",
        help="directory of <name>.npz files holding a 'segs' label map",
    )
    parser.add_argument(
        "-g",
        "--gts",
        required=True,
        type=Path,
        metavar="GTS_DIR",
        help="directory of <name>.npz files holding 'gts' (and 'spacing' for 3D)",
    )
    parser.add_argument("--csv", type=Path, metavar="OUT.csv", help="write per-case metrics to this CSV file")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=2.0,
        help="NSD tolerance: mm for 3D cases, pixels for 2D cases (default: 2.0)",
    )
    add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``medsam-eval``; returns the exit status."""
    args, code = parse_args(build_parser(), argv)
    if args is None:
        return code
    setup_logging(PROG, verbose=args.verbose, quiet=args.quiet)
    for role, directory in (("segmentation", args.segs), ("ground-truth", args.gts)):
        if not directory.is_dir():
            report_error(PROG, f"{role} directory not found: {directory}")
            return EXIT_USAGE
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        report_error(PROG, f"--tolerance must be a non-negative number, got {args.tolerance}")
        return EXIT_USAGE
    if args.csv is not None and not args.csv.parent.is_dir():
        report_error(PROG, f"directory of --csv does not exist: {args.csv.parent}")
        return EXIT_USAGE
    gt_files = sorted(p for p in args.gts.glob("*.npz") if p.is_file())
    if not gt_files:
        report_error(PROG, f"no .npz files in {args.gts}")
        return EXIT_USAGE

    results: list[CaseResult] = []
    failed = 0
    start = time.perf_counter()
    for gt_path in progress(gt_files, desc="evaluating", quiet=args.quiet):
        try:
            result = evaluate_file(gt_path, args.segs / gt_path.name, args.tolerance)
        except CaseError as exc:
            failed += 1
            log.error("%s: %s", gt_path.name, exc)
            continue
        except Exception as exc:  # unexpected: keep the batch going, traceback only with -v
            failed += 1
            log.error("%s: %s", gt_path.name, describe_exception(exc), exc_info=True)
            continue
        if math.isnan(result.dsc):
            log.warning("%s: ground truth has no foreground label; left out of the means", gt_path.name)
        log.debug("%s: DSC %.4f NSD %.4f (%.2f s)", result.name, result.dsc, result.nsd, result.seconds)
        results.append(result)

    if args.csv is not None:
        try:
            write_csv(args.csv, results)
        except OSError as exc:
            report_error(PROG, f"cannot write {args.csv}: {describe_exception(exc)}")
            failed += 1
    if results:
        sys.stdout.write(summary_table(results))
        sys.stdout.flush()
    log.info(
        "scored %d of %d cases in %.1f s%s",
        len(results),
        len(gt_files),
        time.perf_counter() - start,
        f"; {failed} failed" if failed else "",
    )
    return EXIT_FAILURE if failed else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
