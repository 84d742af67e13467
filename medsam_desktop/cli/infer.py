"""``medsam-infer``: challenge npz cases in, ``segs`` npz out (same names), plus ``timing.csv``.

A case that cannot be read, segmented or written is reported as one error line and the batch goes on; the exit
status is then 1. An object whose box cannot be used (NaN, min > max, outside the image) costs only that object:
its label stays empty, one warning line names it, and the case is written with the other objects' masks.

``--clicks K --gts GTS_DIR`` runs the box-then-clicks protocol (``core.evaluation.click_protocol``): K corrective
clicks per object placed on the ground truth's largest error, decoded by the click path with the previous logits
as mask prompt; the segs after the last click are written, and ``clicks.csv`` holds each case's DSC and NSD after
the box (click 0) and after each click, with ``clicks_summary.csv`` (AUC per case) and ``clicks_objects.csv``
(DSC and NSD of every object after the box and after each click).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

from ..atomic import atomic_write
from ..core.backends.clicks import ClicksUnavailable, load_click_backend
from ..core.evaluation.click_protocol import clicks_2d, clicks_3d
from ..core.inference.challenge import segment_challenge_case
from ..core.inference.clicks import ClickRefiner
from ..core.inference.predictor import Predictor
from ..io import MedSAMIOError, read_challenge_gt, read_challenge_npz, write_challenge_segs
from ..io.challenge_npz import modality_from_case_name
from ..model_files import InvalidCheckpointError, ModelNotAvailableError, default_model_name, weights_for
from .common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_common_arguments,
    describe_exception,
    fail,
    parse_args,
    progress,
    report_error,
    setup_logging,
)
from .model_options import add_model_arguments, predictor_from_args

PROG = "medsam-infer"
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medsam-infer",
        description="Segment challenge-format cases (2DBox_*.npz / 3DBox_*.npz) with box prompts.",
    )
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of input .npz cases (imgs, boxes)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the segs .npz and timing.csv")
    p.add_argument(
        "--clicks",
        type=int,
        default=0,
        metavar="K",
        help="simulate K corrective clicks per object after the box (needs --gts)",
    )
    p.add_argument(
        "--gts",
        type=Path,
        default=None,
        metavar="GTS_DIR",
        help="ground-truth folder (same file names, 'gts' arrays) that places the simulated clicks",
    )
    add_model_arguments(p)
    add_common_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args, code = parse_args(build_parser(), argv)
    if args is None:
        return code
    setup_logging(PROG, args.verbose, args.quiet)
    if not args.input.is_dir():
        return fail(PROG, f"input folder not found: {args.input}")
    cases = sorted(args.input.glob("*.npz"))
    if not cases:
        return fail(PROG, f"no .npz cases in {args.input}")
    if args.clicks < 0:
        report_error(PROG, f"--clicks must be 0 or more, got {args.clicks}")
        return EXIT_USAGE
    if args.clicks and (args.gts is None or not args.gts.is_dir()):
        report_error(PROG, "--clicks needs --gts GTS_DIR, the folder of ground-truth files that places the clicks")
        return EXIT_USAGE
    try:
        predictor = predictor_from_args(args)
    except (ModelNotAvailableError, InvalidCheckpointError) as exc:
        return fail(PROG, str(exc))
    try:  # only once the model is loaded: a bad --weights leaves nothing behind
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail(PROG, f"cannot create output folder {args.output}: {exc.strerror}")
    log.info("model %s, %d cases", predictor.backend.name, len(cases))
    if args.clicks:
        return run_clicks(args, predictor, cases)

    rows, n_failed = [], 0
    for path in progress(cases, total=len(cases), desc="cases", quiet=args.quiet):
        t0 = time.perf_counter()
        try:
            case = read_challenge_npz(path)
            segs = segment_challenge_case(predictor, case.volume.array, case.boxes, name=path.name)
            write_challenge_segs(args.output / path.name, segs, case.spacing_zyx)
        except (MedSAMIOError, ValueError) as exc:
            n_failed += 1
            report_error(PROG, f"{path.name}: {exc}")
            continue
        except Exception as exc:  # unexpected (e.g. out of memory): keep the batch going, traceback with -v
            n_failed += 1
            log.debug("%s failed", path.name, exc_info=True)
            report_error(PROG, f"{path.name}: {describe_exception(exc)}")
            continue
        seconds = time.perf_counter() - t0
        rows.append((path.name, f"{seconds:.3f}", len(case.boxes)))
    try:
        with atomic_write(args.output / "timing.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case", "seconds", "n_boxes"])
            writer.writerows(rows)
    except OSError as exc:
        return fail(PROG, f"cannot write {args.output / 'timing.csv'}: {describe_exception(exc)}")
    log.info("%d cases done, %d failed", len(rows), n_failed)
    return EXIT_FAILURE if n_failed else EXIT_OK


def run_clicks(args: argparse.Namespace, predictor: Predictor, cases: list[Path]) -> int:
    """The click protocol on every case that has a ground-truth twin; clicks.csv, clicks_summary.csv and
    clicks_objects.csv."""
    refiner = ClickRefiner(lambda: load_click_backend(
        weights_for(args.model or default_model_name(), args.weights), args.threads, args.runtime))  # fmt: skip
    try:
        log.info("click path %s", refiner.backend.name)
    except ClicksUnavailable as exc:
        return fail(PROG, str(exc))
    rows, summary, object_rows, n_failed = [], [], [], 0
    for path in progress(cases, total=len(cases), desc="cases", quiet=args.quiet):
        try:
            case = read_challenge_npz(path)
            gts = read_challenge_gt(args.gts / path.name)
            imgs = case.volume.array
            if case.boxes.shape[1] == 4:
                image = imgs[0] if imgs.ndim == 4 and imgs.shape[0] == 1 else imgs
                if gts.shape != image.shape[:2]:
                    raise ValueError(f"gts {gts.shape} does not match the image {image.shape[:2]}")
                segs, curve = clicks_2d(predictor, refiner, image, case.boxes, gts, args.clicks, path.name)
            else:
                if gts.shape != imgs.shape[:3]:
                    raise ValueError(f"gts {gts.shape} does not match the volume {imgs.shape[:3]}")
                spacing = case.spacing_zyx or (1.0, 1.0, 1.0)
                segs, curve = clicks_3d(predictor, refiner, imgs, case.boxes, gts, spacing, args.clicks, path.name)
            write_challenge_segs(args.output / path.name, segs, case.spacing_zyx)
        except (MedSAMIOError, ValueError) as exc:
            n_failed += 1
            report_error(PROG, f"{path.name}: {exc}")
            continue
        except Exception as exc:  # unexpected: keep the batch going, traceback with -v
            n_failed += 1
            log.debug("%s failed", path.name, exc_info=True)
            report_error(PROG, f"{path.name}: {describe_exception(exc)}")
            continue
        modality = modality_from_case_name(path.name)
        rows += [(path.name, modality, k, f"{d:.4f}", f"{n:.4f}") for k, (d, n) in enumerate(zip(curve.dsc, curve.nsd))]
        object_rows += [(path.name, modality, *r[:2], f"{r[2]:.4f}", f"{r[3]:.4f}") for r in curve.object_rows()]
        summary.append((path.name, modality, f"{curve.dsc[0]:.4f}", f"{curve.dsc[-1]:.4f}", f"{curve.dsc_auc:.4f}",
                        f"{curve.nsd[0]:.4f}", f"{curve.nsd[-1]:.4f}", f"{curve.nsd_auc:.4f}"))  # fmt: skip
    try:
        for name, head, body in (
            ("clicks.csv", ["case", "modality", "click", "dsc", "nsd"], rows),
            ("clicks_summary.csv", ["case", "modality", "dsc_box", "dsc_last", "dsc_auc", "nsd_box", "nsd_last",
                                    "nsd_auc"], summary),
            ("clicks_objects.csv", ["case", "modality", "label", "click", "dsc", "nsd"], object_rows),
        ):  # fmt: skip
            with atomic_write(args.output / name) as tmp, open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(head)
                writer.writerows(body)
    except OSError as exc:
        return fail(PROG, f"cannot write {args.output}: {describe_exception(exc)}")
    log.info("%d cases done, %d failed", len(summary), n_failed)
    return EXIT_FAILURE if n_failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
