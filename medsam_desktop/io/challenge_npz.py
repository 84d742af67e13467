"""CVPR 2024 "MedSAM on Laptop" challenge ``.npz`` files (inputs, ground truth, predictions).

Layout: 2D ``imgs`` (H, W, 3) uint8 + ``boxes`` (N, 4) ``[x0, y0, x1, y1]``; 3D ``imgs`` (D, H, W)
uint8 + ``boxes`` (N, 6) ``[x0, y0, z0, x1, y1, z1]`` + ``spacing`` (3,) in (z, y, x) mm. Boxes are
inclusive pixel indices. Files are always loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ._checks import finalize_array
from .errors import CorruptFileError, ImageNotFoundError, InvalidNpzError, OutputWriteError
from .label_values import MAX_LABEL, label_dtype
from .volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "ChallengeCase",
    "modality_from_case_name",
    "read_challenge_gt",
    "read_challenge_npz",
    "read_challenge_segs",
    "write_challenge_segs",
]

_IMG_KEYS_REQUIRED = frozenset({"imgs", "boxes"})
_IMG_KEYS_ALLOWED = frozenset({"imgs", "boxes", "spacing", "gts"})
_GT_KEYS_ALLOWED = frozenset({"gts", "spacing"})
_SEGS_KEYS_ALLOWED = frozenset({"segs", "spacing"})
_NAME_RE = re.compile(r"^[23]DBox_([^_]+)_", re.IGNORECASE)
#: the suffix this reader owns
SUFFIXES = {"npz": (".npz",)}
_NAME_MODALITY = {
    "ct": "CT", "mr": "MR", "mri": "MR", "pet": "PT", "pt": "PT", "nm": "NM", "spect": "NM",
    "us": "US", "ultrasound": "US", "x-ray": "XR", "xray": "XR", "xr": "XR", "cxr": "XR",
    "mammography": "XR", "mammo": "XR", "mg": "XR", "dx": "XR", "cr": "XR",
    "dermoscopy": "RGB", "endoscopy": "RGB", "microscopy": "RGB", "fundus": "RGB", "photo": "RGB",
}  # fmt: skip


@dataclass(frozen=True)
class ChallengeCase:
    """A challenge input: ``volume`` (1, H, W, 3) for 2D or (D, H, W) for 3D, and its prompt boxes.

    ``boxes``: int64 (N, 4) ``[x0, y0, x1, y1]`` (2D) or (N, 6) ``[x0, y0, z0, x1, y1, z1]`` (3D), as stored:
    a box may be unusable (min > max, outside the image; float64 with NaN when the file has NaN), which costs
    only its own object (:func:`medsam_desktop.core.inference.challenge.segment_challenge_case`).
    ``spacing_zyx``: the file's ``spacing`` (z, y, x) mm, or None when absent (2D files).
    """

    volume: Volume
    boxes: np.ndarray
    spacing_zyx: tuple[float, float, float] | None
    name: str

    @property
    def is_3d(self) -> bool:
        return self.boxes.shape[1] == 6


def modality_from_case_name(name: str) -> str:
    """``2DBox_X-Ray_covidcxr_...`` -> "XR", ``3DBox_CT_...`` -> "CT"; unknown tokens -> "unknown"."""
    match = _NAME_RE.match(Path(name).name)
    return _NAME_MODALITY.get(match.group(1).lower(), "unknown") if match else "unknown"


def _load_arrays(path: Path, required: Iterable[str], allowed: frozenset[str]) -> dict[str, np.ndarray]:
    """Load every array of an npz without unpickling; key/dtype problems -> :class:`InvalidNpzError`."""
    if not path.is_file():
        raise ImageNotFoundError("the file does not exist", path=path)
    if path.stat().st_size == 0:
        raise CorruptFileError("the file is empty (0 bytes)", path=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise InvalidNpzError("it is a single .npy array, not an .npz archive", path=path)
            keys = set(data.files)
            missing = sorted(set(required) - keys)
            extra = sorted(keys - allowed)
            if missing or extra:
                parts = [
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                ]
                raise InvalidNpzError(f"wrong arrays in the archive ({'; '.join(p for p in parts if p)})", path=path)
            arrays = {}
            for key in sorted(keys):
                try:
                    arrays[key] = data[key]
                except ValueError as exc:  # object arrays refuse to load without pickle
                    raise InvalidNpzError(
                        f"array '{key}' holds Python objects, which are not loaded for safety",
                        path=path,
                        detail=str(exc),
                    ) from exc
    except (InvalidNpzError, ImageNotFoundError):
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise CorruptFileError("the .npz archive is damaged or truncated", path=path, detail=str(exc)) from exc
    except ValueError as exc:  # pickled content, bad .npy header ...
        raise InvalidNpzError("it is not a valid numpy .npz archive", path=path, detail=str(exc)) from exc
    for key, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise InvalidNpzError(f"array '{key}' has unsupported type {arr.dtype}", path=path)
    return arrays


def _spacing(arrays: dict[str, np.ndarray], path: Path) -> tuple[float, float, float] | None:
    if "spacing" not in arrays:
        return None
    sp = np.asarray(arrays["spacing"], dtype=np.float64).ravel()
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InvalidNpzError(f"'spacing' must be 3 positive numbers (z, y, x), got {sp.tolist()}", path=path)
    return float(sp[0]), float(sp[1]), float(sp[2])


def _boxes(raw: np.ndarray, is_3d: bool, path: Path) -> np.ndarray:
    """The file's boxes as (N, 4|6); a wrong shape refuses the case, bad coordinates are left to each object.

    int64, or float64 (rounded, NaN kept) when some coordinate is NaN, infinite or beyond int64: the objects
    are checked one by one when segmented (:func:`medsam_desktop.core.inference.challenge.box_problem`), so one bad box
    never costs the case.
    """
    width = 6 if is_3d else 4
    boxes = np.asarray(raw)
    if boxes.size == 0:
        return np.zeros((0, width), dtype=np.int64)
    if boxes.ndim == 1 and boxes.shape[0] == width:
        boxes = boxes[np.newaxis]
    if boxes.ndim != 2 or boxes.shape[1] != width:
        raise InvalidNpzError(
            f"'boxes' must be (N, {width}) for a {'3D' if is_3d else '2D'} image, got {boxes.shape}",
            path=path,
        )
    if boxes.dtype.kind == "f":
        finite = np.isfinite(boxes)
        if not np.array_equal(boxes[finite], np.rint(boxes[finite])):
            log.warning("%s: non-integer box coordinates rounded", path.name)
        boxes = np.rint(boxes)
        if not finite.all() or np.abs(boxes[finite]).max(initial=0) > 2.0**62:
            return boxes.astype(np.float64)
    return boxes.astype(np.int64)


def read_challenge_npz(path: str | os.PathLike[str]) -> ChallengeCase:
    """Read a challenge input ``.npz`` into a :class:`ChallengeCase`.

    2D: ``imgs`` (H, W, 3) -> volume (1, H, W, 3) RGB (kept as stored), (H, W) -> (1, H, W); spacing 1.
    3D: ``imgs`` (D, H, W) -> volume (D, H, W) with spacing reversed to (x, y, z) (1 mm if absent).
    The modality hint comes from the file name (``2DBox_<Modality>_...``).
    """
    path = Path(path)
    arrays = _load_arrays(path, _IMG_KEYS_REQUIRED, _IMG_KEYS_ALLOWED)
    imgs, raw_boxes = arrays["imgs"], arrays["boxes"]
    is_3d = raw_boxes.ndim == 2 and raw_boxes.shape[-1] == 6
    spacing_zyx = _spacing(arrays, path)
    if is_3d:
        if imgs.ndim not in (3, 4) or (imgs.ndim == 4 and imgs.shape[3] != 3):
            raise InvalidNpzError(f"3D 'imgs' must be (D, H, W), got {imgs.shape}", path=path)
        array = imgs
        if spacing_zyx is None:
            log.warning("%s: 3D case without 'spacing'; assuming 1 mm", path.name)
    else:
        if imgs.ndim == 2 or (imgs.ndim == 3 and imgs.shape[2] == 3):
            array = imgs[np.newaxis]
        else:
            raise InvalidNpzError(f"2D 'imgs' must be (H, W, 3) or (H, W), got {imgs.shape}", path=path)
    if array.size == 0:
        raise InvalidNpzError(f"'imgs' is empty (shape {imgs.shape})", path=path)
    array = finalize_array(array, path)
    boxes = _boxes(raw_boxes, is_3d, path)
    sz, sy, sx = spacing_zyx if spacing_zyx is not None else (1.0, 1.0, 1.0)
    volume = Volume(
        array=array,
        spacing=(sx, sy, sz),
        modality=modality_from_case_name(path.name),
        is_2d=not is_3d,
        source_path=path,
        description=path.stem,
    )
    return ChallengeCase(volume=volume, boxes=boxes, spacing_zyx=spacing_zyx, name=path.stem)


def _read_labels(path: str | os.PathLike[str], key: str, allowed: frozenset[str]) -> np.ndarray:
    path = Path(path)
    labels = _load_arrays(path, (key,), allowed)[key]
    if labels.ndim not in (2, 3) or labels.dtype.kind not in "biu":
        raise InvalidNpzError(
            f"'{key}' must be an integer (H, W) or (D, H, W) array, got {labels.dtype} {labels.shape}", path=path
        )
    return labels


def read_challenge_gt(path: str | os.PathLike[str]) -> np.ndarray:
    """Ground-truth labels ``gts`` of a challenge ``gts/*.npz``: (H, W) 2D or (D, H, W) 3D, integer."""
    return _read_labels(path, "gts", _GT_KEYS_ALLOWED)


def read_challenge_segs(path: str | os.PathLike[str]) -> np.ndarray:
    """Predicted labels ``segs`` of a file written by :func:`write_challenge_segs`: (H, W) or (D, H, W)."""
    return _read_labels(path, "segs", _SEGS_KEYS_ALLOWED)


def write_challenge_segs(
    path: str | os.PathLike[str],
    segs: np.ndarray,
    spacing_zyx: tuple[float, float, float] | None = None,
) -> Path:
    """Atomically write a prediction ``.npz`` with ``segs`` (uint8, or uint16 above 255 labels).

    ``segs``: (H, W) for 2D or (D, H, W) for 3D label maps, non-negative integers. ``spacing_zyx``
    (z, y, x) mm is stored as ``spacing`` (float64) when given. Returns the written path.
    """
    path = Path(path)
    segs = np.asarray(segs)
    if segs.ndim not in (2, 3) or segs.dtype.kind not in "biu":
        raise OutputWriteError(
            f"segmentation must be an integer (H, W) or (D, H, W) array, got {segs.dtype} {segs.shape}",
            path=path,
            action="This is a programming error; please report it.",
        )
    if path.suffix.lower() != ".npz":
        raise OutputWriteError("the file name must end with .npz", path=path, action="Use a .npz file name.")
    top = int(segs.max()) if segs.size else 0
    if (segs.size and int(segs.min()) < 0) or top > MAX_LABEL:
        raise OutputWriteError(f"label values must be between 0 and {MAX_LABEL}", path=path)
    arrays = {"segs": segs.astype(label_dtype(top))}
    if spacing_zyx is not None:
        arrays["spacing"] = np.asarray(spacing_zyx, dtype=np.float64).reshape(3)
    try:
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    except OSError as exc:
        raise OutputWriteError(
            f"the file could not be written ({exc.strerror or exc})", path=path, detail=str(exc)
        ) from exc
    return path
