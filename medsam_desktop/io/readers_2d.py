"""2D picture readers (PNG, JPEG, BMP, TIFF) via Pillow -> (1, H, W) or (1, H, W, 3) volumes.

Rules: RGBA/LA drop alpha; palette/CMYK/YCbCr -> RGB; RGB whose three channels are identical ->
grey; 16-bit grey keeps uint16; 1-bit -> uint8 0/255; multi-page TIFF with equal-size pages ->
one page per slice. Spacing is 1 mm (dpi is not a physical pixel size), origin 0, identity direction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageSequence, UnidentifiedImageError

from ._checks import MAX_2D_PIXELS, check_size, finalize_array
from .errors import CorruptFileError, InvalidImageError, UnsupportedFormatError, reading
from .readers_sitk import volume_from_sitk
from .volume import Volume

log = logging.getLogger(__name__)

_PIL_LOCK = threading.Lock()
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
#: the suffixes this reader owns (lower case; matched case-insensitively)
SUFFIXES = {"2d": (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")}


@contextlib.contextmanager
def _pil_pixel_limit() -> Iterator[None]:
    """Let Pillow open images up to our own limit (it refuses > ~179 Mpx by default).

    Pillow's ``DecompressionBombWarning`` is silenced: :func:`check_size` refuses oversized images
    with a clear message before any pixel is decoded.
    """
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_2D_PIXELS
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _frame_to_array(frame: Image.Image, fmt: str) -> np.ndarray:
    """One PIL frame -> (H, W) grey or (H, W, 3) RGB array in its natural dtype."""
    mode = frame.mode
    if mode == "1":
        return np.asarray(frame, dtype=bool).astype(np.uint8) * np.uint8(255)
    if mode in ("L", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return np.asarray(frame)
    if mode == "I":
        arr = np.asarray(frame)
        if fmt == "PNG" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)  # 16-bit PNG decoded as 32-bit by some Pillow versions
        return arr
    if mode == "LA":
        return np.asarray(frame)[..., 0]
    if mode in ("RGB", "RGBA", "RGBX", "RGBa"):
        return np.asarray(frame if mode != "RGBa" else frame.convert("RGBA"))[..., :3]
    return np.asarray(frame.convert("RGB"))  # P, PA, CMYK, YCbCr, LAB, HSV ...


def _collapse_grey(array: np.ndarray) -> np.ndarray:
    if (
        array.ndim == 4
        and np.array_equal(array[..., 0], array[..., 1])
        and np.array_equal(array[..., 0], array[..., 2])
    ):
        return np.ascontiguousarray(array[..., 0])
    return array


def _is_png_rgb16(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(26)
    return head[:8] == _PNG_SIG and len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def read_2d_image(path: Path) -> Volume:
    """Read a PNG/JPEG/BMP/TIFF picture as a :class:`Volume` (D = 1, or pages of a TIFF stack)."""
    if _is_png_rgb16(path):  # Pillow would reduce 16-bit colour to 8 bits; ITK keeps it
        with reading(path, "the PNG data is damaged", (RuntimeError,)):
            image = sitk.ReadImage(str(path), imageIO="PNGImageIO")
        vol = volume_from_sitk(image, path, modality="RGB", is_2d=True)
        array = _collapse_grey(vol.array)
        return Volume(array, modality="RGB" if array.ndim == 4 else "unknown", is_2d=True, source_path=path)
    try:
        with _pil_pixel_limit(), Image.open(path) as img:
            fmt = (img.format or "").upper()
            n_frames = int(getattr(img, "n_frames", 1) or 1)
            check_size((img.size[0], img.size[1], 1), path)
            frames = [_frame_to_array(f, fmt) for f in ImageSequence.Iterator(img)] if fmt == "TIFF" else []
            if not frames:
                img.seek(0)
                frames = [_frame_to_array(img, fmt)]
    except UnidentifiedImageError as exc:
        raise UnsupportedFormatError("the picture format is not recognised", path=path, detail=str(exc)) from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImageError("the image is too large to open safely", path=path, detail=str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptFileError("the picture data is damaged or truncated", path=path, detail=str(exc)) from exc
    if len(frames) > 1:
        first = frames[0]
        same = all(f.shape == first.shape and f.dtype == first.dtype for f in frames)
        if not same:
            log.warning("%s: TIFF pages differ in size or type; using the first page only", path.name)
            frames = [first]
        else:
            check_size((first.shape[1], first.shape[0], len(frames)), path)
    elif n_frames > 1:
        log.warning("%s: %d frames found; using the first one", path.name, n_frames)
    array = _collapse_grey(np.stack(frames))
    array = finalize_array(array, path)
    return Volume(
        array=array,
        modality="RGB" if array.ndim == 4 else "unknown",
        is_2d=array.shape[0] == 1,
        source_path=path,
    )
