"""Check the packaged app against ``medsam-segment`` on real files: the masks must be identical.

    .venv/bin/python scripts/check_bundle.py [--app dist/MedSAM-Desktop/MedSAM-Desktop]

For each case (a DICOM CT series folder, NIfTI, NRRD and MGZ MR volumes and a 16-bit PNG from
``../shared/data/raw``, and a DICOM SEG of the CT series in ``../shared/data/dicom``) the BUNDLE opens the file,
segments one slice with a box through the app's own path (model input mapping, annotation session, label saving;
offscreen, ``--segment-and-export``) and writes a NIfTI mask (the SEG case: a DICOM SEG); ``medsam-segment``
from this checkout's environment does the same. Voxels and the affine are compared. Prints one line per case
and a result line; exit 1 on a mismatch or failure, 0 (with ``SKIP``) when ``../shared/data`` is absent.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("check_bundle")


@dataclass(frozen=True)
class Case:
    name: str
    relpath: str  # under <shared>/raw
    box: tuple[int, int, int, int]  # x0 y0 x1 y1 (array columns / rows)
    z: int
    suffix: str = ".nii.gz"  # ".dcm": both sides write a DICOM SEG, compared after reading both onto the series


CASES = (
    # box of the dev case 3DBox_CT_totalseg_abdomen-dicom (its first 3D box), on a middle slice
    Case("ct-dicom-series", "ct_dicom_series", (104, 190, 281, 374), 10),
    # liver (label 5 of example_seg_mr.nii.gz) on its largest slice
    Case("mr-nifti", "example_mr_sm.nii.gz", (11, 16, 61, 73), 19),
    # other readers in the bundle: NRRD (SimpleITK; the lesion of brain1_label.nrrd), MGZ (nibabel), 16-bit PNG
    Case("mr-nrrd", "brain1_image.nrrd", (162, 84, 206, 115), 16),
    Case("mr-mgz", "norm.mgz", (80, 80, 176, 176), 128),
    Case("png-16bit", "MR2_UNCR_16bit.png", (300, 300, 700, 700), 0),
    # DICOM SEG (highdicom in the bundle) on the CT series with complete UIDs
    Case("ct-dicom-seg", "../dicom/ct_series_uids", (104, 190, 281, 374), 10, ".dcm"),
)


def default_app() -> Path:
    if sys.platform == "darwin":
        return ROOT / "dist" / "MedSAM-Desktop.app" / "Contents" / "MacOS" / "MedSAM-Desktop"
    exe = "MedSAM-Desktop.exe" if os.name == "nt" else "MedSAM-Desktop"
    return ROOT / "dist" / "MedSAM-Desktop" / exe


def shared_raw() -> Path:
    env = os.environ.get("MEDSAM_SHARED_DATA")
    return (Path(env) if env else ROOT.parent / "shared" / "data") / "raw"


def _run(cmd: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.perf_counter() - t


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[-1] if text else f"exit {proc.returncode}"


def check_case(app: Path, case: Case, path: Path, out: Path, timeout: float) -> tuple[bool, str]:
    """Run both sides on one case; (identical, one-line summary)."""
    import nibabel as nib

    box = [str(v) for v in case.box]
    app_out, cli_out = out / f"{case.name}_app{case.suffix}", out / f"{case.name}_cli{case.suffix}"
    proc, app_s = _run([str(app), str(path), "--segment-and-export", str(app_out), "--box", *box,
                        "--slice", str(case.z)], timeout)  # fmt: skip
    if proc.returncode != 0 or not app_out.is_file():
        return False, f"{case.name}: the bundle failed: {_tail(proc)}"
    proc, cli_s = _run([sys.executable, "-m", "medsam_desktop.cli.segment", str(path), "--box", *box,
                        "--slice", str(case.z), "-o", str(cli_out), "-q"], timeout)  # fmt: skip
    if proc.returncode != 0 or not cli_out.is_file():
        return False, f"{case.name}: medsam-segment failed: {_tail(proc)}"
    if case.suffix == ".dcm":  # each SEG frame sits on the instance it references: read both onto the series
        from medsam_desktop.io import read_image
        from medsam_desktop.io.dicom_seg import read_dicom_seg

        volume = read_image(path)
        a, c = (read_dicom_seg(f, volume)[0] > 0 for f in (app_out, cli_out))
        same_affine = True
    else:
        a_img, c_img = nib.load(app_out), nib.load(cli_out)
        a, c = np.asarray(a_img.dataobj) > 0, np.asarray(c_img.dataobj) > 0
        same_affine = np.allclose(a_img.affine, c_img.affine, atol=1e-5)
    identical = a.shape == c.shape and bool(np.array_equal(a, c)) and same_affine and int(a.sum()) > 0
    diff = int((a != c).sum()) if a.shape == c.shape else -1
    summary = (
        f"{case.name}: {'identical' if identical else 'DIFFERENT'} masks ({int(a.sum())} vs {int(c.sum())} voxels,"
        f" {diff} differ, affine {'equal' if same_affine else 'DIFFERENT'}; bundle {app_s:.1f} s, "
        f"medsam-segment {cli_s:.1f} s)"
    )
    return identical, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--app", type=Path, default=default_app(), help="the bundle's executable")
    p.add_argument("--keep", type=Path, default=None, help="write the masks here (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raw = shared_raw()
    if not raw.is_dir():
        print(f"check_bundle: SKIP (no shared data at {raw})")
        return 0
    if not args.app.is_file():
        print(f"check_bundle: FAILED: no bundle at {args.app}; build it with scripts/build_app.sh")
        return 2
    ok_all, n = True, 0
    with tempfile.TemporaryDirectory(prefix="check-bundle-") as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for case in CASES:
            path = raw / case.relpath
            if not path.exists():
                print(f"{case.name}: skipped ({path} absent)")
                continue
            ok, line = check_case(args.app, case, path, out, args.timeout)
            print(line, flush=True)
            ok_all &= ok
            n += 1
    if n == 0:
        print("check_bundle: SKIP (none of the case files is present)")
        return 0
    print(f"check_bundle: {'OK' if ok_all else 'FAILED'}: {n} case(s), bundle vs medsam-segment "
          f"{'identical' if ok_all else 'differ'}")  # fmt: skip
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
