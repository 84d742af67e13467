"""A tiny source folder for ``training/prepare_data.py`` (shared by the data-preparation and flip tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image


def make_source_folder(root: Path) -> None:
    """Six 2D ultrasound PNGs, a 12-slice CT volume (slice 3 constant, so it is dropped) and an ``eval`` folder
    (never to be picked up)."""
    rng = np.random.default_rng(0)
    (root / "us").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (120, 160), dtype=np.uint8)).save(root / "us" / f"img{i}.png")
    vol = (rng.random((12, 64, 64)) * 2000 - 1000).astype(np.int16)
    vol[3] = 0  # a constant slice is dropped
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(root / "ct.nii.gz"))
    (root / "eval").mkdir()
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8)).save(root / "eval" / "secret.png")
