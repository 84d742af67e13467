"""``medsam-segment``: one image or volume + one box -> a mask file in the source geometry.

2D images: the box on the image, output PNG or NIfTI. Volumes: ``--slice Z`` segments one slice,
``--zrange Z0 Z1`` propagates through the slices (challenge algorithm); output NIfTI with the source's
spacing, origin and direction, or ``-o OUT.dcm``: one DICOM SEG referencing the source series (DICOM sources
with complete UIDs). Coordinates are array indices: x = column, y = row, z = slice (axis 0).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.document.annotation import default_color
from ..core.inference.boxes import InvalidBoxError
from ..core.inference.intensity import CT_WINDOWS, to_display_uint8
from ..core.inference.propagation import propagate_boxes, segment_slice
from ..io import MedSAMIOError, Volume, read_image, write_labels_nifti, write_mask_png
from ..io.dicom_seg import SEG_SUFFIXES, Segment, check_seg_source, write_dicom_seg
from ..io.formats import is_nifti_name
from ..model_files import InvalidCheckpointError, ModelNotAvailableError
from ..samples import SampleNotAvailableError, get_sample, list_samples
from .common import EXIT_OK, add_common_arguments, fail, run_main
from .model_options import add_model_arguments, predictor_from_args

PROG = "medsam-segment"
EXPECTED_ERRORS = (
    MedSAMIOError,
    SampleNotAvailableError,
    InvalidBoxError,
    ModelNotAvailableError,
    InvalidCheckpointError,
    ValueError,
)
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsam-segment", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument(
        "image", type=Path, nargs="?", help="image file or DICOM folder (NIfTI, NRRD, MHA, MGZ, DICOM, PNG, JPG ...)"
    )
    p.add_argument(
        "--sample",
        choices=[s.key for s in list_samples()],
        help="use a sample image shipped by a dependency (with its preset box) instead of IMAGE",
    )
    p.add_argument(
        "--box",
        type=float,
        nargs=4,
        metavar=("X0", "Y0", "X1", "Y1"),
        help="box in pixels of the slice (x = column, y = row)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--slice", type=int, metavar="Z", help="segment this slice of a volume")
    where.add_argument("--zrange", type=int, nargs=2, metavar=("Z0", "Z1"), help="propagate over slices Z0..Z1")
    p.add_argument("--label", type=int, default=1, help="label value written in the mask (1..65535, default 1)")
    p.add_argument(
        "--ct-window",
        choices=sorted(CT_WINDOWS),
        default="soft tissue",
        help="intensity window for CT input (default: soft tissue 40/400)",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="mask file: .nii.gz / .nii, .png for 2D images, .dcm for DICOM SEG",
    )
    add_model_arguments(p)
    add_common_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.sample:
        sample = get_sample(args.sample)
        args.image = sample.path()
        args.box = args.box or list(sample.box)
        log.info("sample %s: %s, box %s", sample.key, sample.title, args.box)
    if args.image is None:
        return fail(PROG, "give an IMAGE file or --sample")
    if args.box is None:
        return fail(PROG, "give the box: --box X0 Y0 X1 Y1 (pixels, x = column, y = row)")
    if not 1 <= args.label <= 65535:
        return fail(PROG, f"--label must be between 1 and 65535, got {args.label}")
    out = args.output
    seg = out.suffix.lower() in SEG_SUFFIXES
    if not (is_nifti_name(out) or out.suffix.lower() == ".png" or seg):
        return fail(PROG, f"output must end in .nii.gz, .nii, .png or .dcm (DICOM SEG), got '{out.name}'")
    vol: Volume = read_image(args.image)
    if seg:
        check_seg_source(vol, out)  # before any inference: say at once why a SEG cannot be written
    if vol.source_path is not None and out.resolve() == Path(vol.source_path).resolve():
        return fail(PROG, "the output would overwrite the source image: choose another output file")
    depth = vol.n_slices
    if depth > 1 and args.slice is None and args.zrange is None:
        return fail(PROG, f"{args.image.name} is a volume with {depth} slices: give --slice Z or --zrange Z0 Z1")
    if depth > 1 and out.suffix.lower() == ".png":
        return fail(PROG, "a volume's mask must be saved as NIfTI (.nii.gz), not PNG")
    display = to_display_uint8(vol.array, vol.modality, args.ct_window)
    labels = np.zeros(vol.shape_zyx, dtype=np.uint8 if args.label <= 255 else np.uint16)
    x0, y0, x1, y1 = args.box
    if args.zrange is not None:
        z0, z1 = args.zrange
        if max(z0, z1) < 0 or min(z0, z1) > depth - 1:
            return fail(PROG, f"--zrange {z0} {z1} lies outside the volume (slices 0..{depth - 1})")
        predictor = predictor_from_args(args)
        bar = tqdm(desc="slices", file=sys.stderr, leave=False, disable=args.quiet or not sys.stderr.isatty())

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        labels[:] = propagate_boxes(
            predictor, display, np.array([[x0, y0, z0, x1, y1, z1]]), progress=progress, label_values=[args.label]
        )
        bar.close()
    else:
        z = args.slice if args.slice is not None else 0
        if not 0 <= z < depth:
            return fail(PROG, f"--slice {z} is outside the volume (slices 0..{depth - 1})")
        predictor = predictor_from_args(args)
        mask = segment_slice(predictor, display[z], np.array([[x0, y0, x1, y1]])) > 0
        labels[z][mask] = args.label
    n_vox = int((labels > 0).sum())
    if out.suffix.lower() == ".png":
        write_mask_png(labels[0], out)
    elif seg:
        write_dicom_seg(out, labels, vol, [Segment(args.label, f"Label {args.label}", default_color(args.label))])
    else:
        write_labels_nifti(labels, vol, out)
    log.info("wrote %s (%d voxels labelled %d)", out, n_vox, args.label)
    if n_vox == 0:
        log.warning("the mask is empty: check the box coordinates (x = column, y = row)")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser(), run, argv, EXPECTED_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
