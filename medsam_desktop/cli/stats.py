"""``medsam-stats``: label statistics of a mask, in the image's own units.

    medsam-stats MASK [--image IMAGE] [--csv OUT]

Per label: voxel count, volume in mL (from the mask's spacing), mean / SD / min / max of the image (HU for CT;
with ``--image``, which must be on the mask's grid) and the slice extent. Label names come from the app's ``.json``
sidecar when there is one. Exit 0, or 1 with one error line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..core.document.annotation import LabelTable, sidecar_path
from ..core.document.statistics import format_table, label_statistics, write_csv
from ..io import MedSAMIOError, read_image, read_labels
from .common import EXIT_OK, add_common_arguments, fail, run_main

PROG = "medsam-stats"
log = logging.getLogger(PROG)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("mask", type=Path, help="label map (NIfTI, NRRD, ... or a 2D PNG mask)")
    p.add_argument("--image", type=Path, default=None, help="the image the mask was drawn on (for intensities)")
    p.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    add_common_arguments(p)
    return p


def _names(mask: Path) -> dict[int, str]:
    """Label names from the app's sidecar, if any (a damaged sidecar only costs the names)."""
    sidecar = sidecar_path(mask)
    if not sidecar.is_file():
        return {}
    try:
        table = LabelTable.from_json(sidecar.read_text())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the label names in %s: %s", sidecar.name, exc)
        return {}
    return {lb.id: lb.name for lb in table}


def run(args: argparse.Namespace) -> int:
    if args.image is not None:
        image = read_image(args.image)
        labels = read_labels(args.mask, image)  # refused unless on the image's grid
        spacing, intensities = image.spacing, image.array
        units = "HU" if image.modality == "CT" else "image units"
        if image.is_rgb:
            return fail(PROG, f"{args.image.name} is a colour picture: intensity statistics need a grey image")
    else:
        mask = read_image(args.mask)
        labels, spacing, intensities, units = mask.array, mask.spacing, None, ""
    rows = label_statistics(labels, spacing, intensities, _names(args.mask))
    if not rows:
        log.warning("the mask holds no labels")
    print(format_table(rows, units))
    if args.csv is not None:
        write_csv(rows, args.csv)
        log.info("wrote %s", args.csv)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv, (MedSAMIOError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
