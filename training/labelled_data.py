"""Labelled challenge-format data for training the teacher: (slice, one label's mask, perturbed box) samples.

Accepted layouts, found recursively under each root: ``imgs/*.npz`` with the same names in a sibling
``gts/`` folder (``imgs`` and ``gts`` arrays), or npz files holding both ``imgs`` and ``gts`` (the challenge
training files). 2D cases: ``imgs`` (H, W, 3) or (H, W), ``gts`` (H, W); 3D: ``imgs`` (D, H, W),
``gts`` (D, H, W). Files are loaded with ``allow_pickle=False``. Folders named ``eval`` (and ``holdout``)
are never listed nor opened unless ``allow_eval`` is set for a smoke test.

A sample is one random label of a case (3D: one random slice containing it), all in the 256 model frame
(``medsam_desktop.core.inference.preprocess``: longest side scaled to 256, padded bottom/right):
``image`` (3, 256, 256) float32 in [0, 1]; ``mask`` (1, 256, 256) float32 in {0, 1} (nearest resize, same
padding); ``box`` (4,) float32 ``[x0, y0, x1, y1]`` = the mask's tight bbox grown by 0..5 px per side,
clipped to [0, 255]. Random flips mirror the image content, mask and box inside the resized (unpadded)
region, so padding stays at the bottom/right as at inference.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medsam_desktop.core.inference.boxes import mask_bbox
from medsam_desktop.core.inference.preprocess import MODEL_SIZE, preprocess

log = logging.getLogger(__name__)

FORBIDDEN_DIRS = ("eval", "holdout")
BOX_SHIFT = 5


class EvalDataError(RuntimeError):
    """A data root lies inside an evaluation folder."""


@dataclass(frozen=True)
class LabelledCase:
    """One labelled file pair (``gts`` is the same file for the single-file layout)."""

    imgs: Path
    gts: Path

    @property
    def name(self) -> str:
        return self.imgs.stem


def _forbidden(name: str) -> bool:
    low = name.lower()
    return low in FORBIDDEN_DIRS or "holdout" in low


def _npz_keys(path: Path) -> set[str]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return set(data.files) if isinstance(data, np.lib.npyio.NpzFile) else set()
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        log.warning("skipping %s: %s", path, exc)
        return set()


def find_cases(roots: list[Path], allow_eval: bool = False) -> list[LabelledCase]:
    """All labelled cases under ``roots`` (sorted by path); eval folders are pruned, never opened."""
    cases: list[LabelledCase] = []
    for root in roots:
        root = Path(root).resolve()
        if not allow_eval and any(_forbidden(p) for p in root.parts):
            raise EvalDataError(f"{root} is inside an evaluation folder: it must not be used for training")
        if not root.is_dir():
            raise FileNotFoundError(f"data folder not found: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            if not allow_eval:
                dirnames[:] = [d for d in dirnames if not _forbidden(d)]
            dirnames.sort()
            here = Path(dirpath)
            if here.name == "gts" and (here.parent / "imgs").is_dir():
                continue  # read through the imgs/ pairing
            for fn in sorted(filenames):
                if not fn.endswith(".npz"):
                    continue
                path = here / fn
                if here.name == "imgs":
                    gt = here.parent / "gts" / fn
                    if gt.is_file():
                        cases.append(LabelledCase(path, gt))
                    else:
                        log.warning("no ground truth for %s", path)
                elif {"imgs", "gts"} <= _npz_keys(path):
                    cases.append(LabelledCase(path, path))
    return cases


def split_cases(cases: list[LabelledCase], val_fraction: float) -> tuple[list[LabelledCase], list[LabelledCase]]:
    """(train, val) by a hash of the case name; at least one val case when there are two or more cases."""

    def h(c: LabelledCase) -> float:
        return int(hashlib.sha1(c.name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    val = [c for c in cases if h(c) < val_fraction]
    if not val and len(cases) >= 2 and val_fraction > 0:
        val = [min(cases, key=h)]
    train = [c for c in cases if c not in val]
    return train, val


def load_case(case: LabelledCase) -> tuple[np.ndarray, np.ndarray]:
    """(imgs, gts) arrays of a case; raises ValueError on inconsistent shapes or types."""
    with np.load(case.imgs, allow_pickle=False) as data:
        imgs = data["imgs"]
        gts = data["gts"] if case.gts == case.imgs else None
    if gts is None:
        with np.load(case.gts, allow_pickle=False) as data:
            gts = data["gts"]
    if gts.dtype.kind not in "biu" or imgs.dtype.kind not in "biuf":
        raise ValueError(f"{case.name}: unsupported dtypes imgs {imgs.dtype}, gts {gts.dtype}")
    if (gts.ndim == 2 and imgs.shape[:2] != gts.shape) or (gts.ndim == 3 and imgs.shape[:3] != gts.shape):
        raise ValueError(f"{case.name}: imgs {imgs.shape} and gts {gts.shape} do not match")
    if gts.ndim not in (2, 3):
        raise ValueError(f"{case.name}: gts must be (H, W) or (D, H, W), got {gts.shape}")
    return imgs, gts


def resize_mask_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) -> (h, w) by nearest neighbour (pixel centres); falls back to "any overlap" when the
    nearest resize would lose a small object entirely."""
    h0, w0 = mask.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h0 / size[0]).astype(int), h0 - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w0 / size[1]).astype(int), w0 - 1)
    out = mask[rows[:, None], cols[None, :]]
    if not out.any() and mask.any():
        r0 = (np.arange(size[0]) * h0 / size[0]).astype(int)
        c0 = (np.arange(size[1]) * w0 / size[1]).astype(int)
        out = np.logical_or.reduceat(np.logical_or.reduceat(mask, r0, axis=0), c0, axis=1)
    return out


def perturbed_box(
    mask: np.ndarray,
    rng: np.random.Generator,
    content: tuple[int, int] = (MODEL_SIZE, MODEL_SIZE),
    shift: int = BOX_SHIFT,
) -> np.ndarray:
    """Tight bbox of a non-empty (256, 256) mask grown by 0..``shift`` px per side, clipped to the
    ``content`` = (h, w) region (the resized image inside the 256 frame)."""
    bb = mask_bbox(mask)
    if bb is None:
        raise ValueError("empty mask has no box")
    d = rng.integers(0, shift + 1, size=4)
    h, w = content
    return np.array(
        [max(0, bb[0] - d[0]), max(0, bb[1] - d[1]), min(w - 1, bb[2] + d[2]), min(h - 1, bb[3] + d[3])],
        dtype=np.float32,
    )


def flip_sample(
    image: np.ndarray, mask: np.ndarray, box: np.ndarray, content: tuple[int, int], horizontal: bool, vertical: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirror image (C, 256, 256), mask (256, 256) and box (inside the region) within ``content`` = (h, w)."""
    h, w = content
    image, mask, box = image.copy(), mask.copy(), box.copy()
    if horizontal:
        image[:, :h, :w] = image[:, :h, :w][:, :, ::-1]
        mask[:h, :w] = mask[:h, :w][:, ::-1]
        box[[0, 2]] = (w - 1) - box[[2, 0]]
    if vertical:
        image[:, :h, :w] = image[:, :h, :w][:, ::-1, :]
        mask[:h, :w] = mask[:h, :w][::-1, :]
        box[[1, 3]] = (h - 1) - box[[3, 1]]
    return image, mask, box


class LabelledSlices(Dataset):
    """Map-style dataset keyed by ``(case index, seed)``: the seed fixes the label, slice, box and flips.

    Returns ``{"image": (3, 256, 256), "mask": (1, 256, 256), "box": (4,)}`` float32 in the model frame.
    """

    def __init__(self, cases: list[LabelledCase], augment: bool = True) -> None:
        self.cases = cases
        self.augment = augment

    def __len__(self) -> int:
        return len(self.cases)

    def sample(self, index: int, seed: int | Sequence[int]) -> dict[str, torch.Tensor]:
        """The sample of case ``index`` fixed by ``seed`` (any ``numpy.random.default_rng`` seed)."""
        rng = np.random.default_rng(seed)
        case = self.cases[index]
        imgs, gts = load_case(case)
        labels = np.unique(gts)
        labels = labels[labels != 0]
        if labels.size == 0:
            raise ValueError(f"{case.name} has no foreground label")
        label = rng.choice(labels)
        if gts.ndim == 3:
            zs = np.flatnonzero((gts == label).any(axis=(1, 2)))
            z = int(rng.choice(zs))
            image, gt = imgs[z], gts[z] == label
        else:
            image, gt = imgs, gts == label
        x, info = preprocess(image)
        h, w = info.resized_size
        mask = np.zeros((MODEL_SIZE, MODEL_SIZE), dtype=bool)
        mask[:h, :w] = resize_mask_nearest(gt, (h, w))
        box = perturbed_box(mask, rng, (h, w))
        if self.augment:
            hflip, vflip = rng.random(2) < 0.5
            x, mask, box = flip_sample(x, mask, box, (h, w), bool(hflip), bool(vflip))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            "box": torch.from_numpy(box),
        }

    def __getitem__(self, key: tuple[int, int | Sequence[int]]) -> dict[str, torch.Tensor]:
        """Unreadable or unlabelled cases are skipped (with a warning) in favour of the next one."""
        index, seed = key
        for k in range(len(self.cases)):
            i = (index + k) % len(self.cases)
            try:
                return self.sample(i, seed)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                log.warning("skipping %s: %s", self.cases[i].imgs, exc)
        raise RuntimeError("no usable labelled case")


class RankSampler(Sampler):
    """Endless-epoch sampler: per epoch a permutation shared by all ranks (seeded by ``seed`` and the epoch),
    strided by rank, padded to whole batches; yields ``(case index, (seed, epoch, rank, position))``."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0) -> None:
        if n == 0:
            raise ValueError("no training cases")
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch = 0

    def _indices(self) -> np.ndarray:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        per_rank = max(self.batch_size, -(-self.n // self.world) // self.batch_size * self.batch_size)
        reps = -(-(per_rank * self.world) // self.n)
        return np.tile(perm, reps)[self.rank :: self.world][:per_rank]

    def __len__(self) -> int:
        return len(self._indices())

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int, int, int]]]:
        for k, i in enumerate(self._indices()):
            yield int(i), (self.seed, self.epoch, self.rank, k)
