"""Tiny synthetic labelled challenge-format folders (simple shapes) for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _shapes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 label map: label 1 a rectangle, label 2 a disc, at random places."""
    gts = np.zeros((h, w), dtype=np.uint8)
    rh, rw = rng.integers(h // 6, h // 3), rng.integers(w // 6, w // 3)
    y0, x0 = rng.integers(0, h // 2 - rh // 2), rng.integers(0, w - rw)
    gts[y0 : y0 + rh, x0 : x0 + rw] = 1
    r = int(rng.integers(min(h, w) // 10, min(h, w) // 6))
    cy, cx = rng.integers(h // 2 + r, h - r), rng.integers(r, w - r)
    yy, xx = np.mgrid[:h, :w]
    gts[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
    return gts


def _image(gts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = 30.0 + 10.0 * rng.standard_normal(gts.shape) + 120.0 * (gts == 1) + 180.0 * (gts == 2)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_labelled_folder(root: Path, n2d: int = 4, n3d: int = 3, seed: int = 0) -> Path:
    """``root/imgs`` + ``root/gts`` with 2D RGB cases, ``root/volumes`` with single-file 3D cases, and an
    ``eval`` folder holding a file that is not an npz at all (it must never be opened)."""
    rng = np.random.default_rng(seed)
    (root / "imgs").mkdir(parents=True)
    (root / "gts").mkdir()
    for i in range(n2d):
        gts = _shapes(96, 128, rng)
        img = np.repeat(_image(gts, rng)[:, :, None], 3, axis=2)
        name = f"2DBox_Synth_case{i:02d}.npz"
        np.savez_compressed(root / "imgs" / name, imgs=img, boxes=np.zeros((0, 4), np.int64))
        np.savez_compressed(root / "gts" / name, gts=gts)
    (root / "volumes").mkdir()
    for i in range(n3d):
        gts = np.zeros((6, 80, 64), dtype=np.uint8)
        gts[1:5] = _shapes(80, 64, rng)
        gts[0, 5:15, 5:15] = 3  # a label present on one slice only
        imgs = np.stack([_image(g, rng) for g in gts])
        np.savez_compressed(
            root / "volumes" / f"3DBox_CT_case{i:02d}.npz", imgs=imgs, gts=gts, spacing=np.array([2.0, 1.0, 1.0])
        )
    (root / "eval").mkdir()
    (root / "eval" / "2DBox_Synth_secret.npz").write_bytes(b"never open me")
    return root
