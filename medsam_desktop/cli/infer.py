"""``medsam-infer``: challenge npz cases in, ``segs`` npz out (same names), plus ``timing.csv``.

A case that cannot be read, segmented or written is reported as one error line and the batch goes on; the exit
status is then 1. An object whose box cannot be used (NaN, min > max, outside the image) costs only that object:
its label stays empty, one warning line names it, and the case is written with the other objects' masks.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

from ..atomic import atomic_write
from ..core.inference.challenge import segment_challenge_case
from ..io import MedSAMIOError, read_challenge_npz, write_challenge_segs
from ..model_files import InvalidCheckpointError, ModelNotAvailableError
from .common import (
    EXIT_FAILURE,
    EXIT_OK,
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
    try:
        predictor = predictor_from_args(args)
    except (ModelNotAvailableError, InvalidCheckpointError) as exc:
        return fail(PROG, str(exc))
    try:  # only once the model is loaded: a bad --weights leaves nothing behind
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail(PROG, f"cannot create output folder {args.output}: {exc.strerror}")
    log.info("model %s, %d cases", predictor.backend.name, len(cases))

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


if __name__ == "__main__":
    sys.exit(main())
