"""Opening images and saving/loading label maps for the window (no widgets here; errors are MedSAMIOError)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...io import (
    DicomSeriesInfo,
    MedSAMIOError,
    OutputWriteError,
    Volume,
    atomic_write,
    list_dicom_series,
    read_dicom_series,
    read_image,
    read_labels,
    write_labels_nifti,
    write_mask_png,
)
from ...io.dicom_seg import SEG_SUFFIXES, Segment, is_dicom_seg, read_dicom_seg, write_dicom_seg
from ...io.formats import format_from_suffix, open_dialog_filter, strip_suffix
from .annotation import AnnotationSession, LabelTable, sidecar_path

log = logging.getLogger(__name__)

SeriesChooser = Callable[[list[DicomSeriesInfo]], DicomSeriesInfo | None]
IMAGE_FILTER = open_dialog_filter()


def read_source(path: Path, uid: str | None = None) -> Volume | list[DicomSeriesInfo]:
    """Read a file, or a DICOM folder (its only series, or series ``uid``).

    A folder with several series and no ``uid`` gives the list of series instead (the caller asks which).
    """
    if not path.is_dir():
        return read_image(path)
    if uid is None:
        series = list_dicom_series(path)
        if len(series) > 1:
            return series
        uid = series[0].uid if series else None
    return read_dicom_series(path, uid)


def load_image(path: str | os.PathLike[str], choose_series: SeriesChooser | None = None) -> Volume | None:
    """Read a file or DICOM folder, asking ``choose_series`` when it holds several series (blocking).

    Returns None when the user cancelled the series choice.
    """
    path = Path(path)
    result = read_source(path)
    if isinstance(result, Volume):
        return result
    chosen = choose_series(result) if choose_series is not None else result[0]
    return None if chosen is None else read_dicom_series(path, chosen.uid)


def default_labels_path(volume: Volume) -> Path:
    """``<image>_seg.nii.gz`` next to the image (``.png`` for 2D pictures), in the home folder for samples."""
    picture = volume.source_path is not None and format_from_suffix(volume.source_path) == "2d"
    ext = ".png" if volume.is_2d and picture else ".nii.gz"
    src = volume.source_path
    if src is None:
        return Path.home() / f"labels{ext}"
    stem = src.name if src.is_dir() else strip_suffix(src.name)
    return src.parent / f"{stem}_seg{ext}"


def save_labels(session: AnnotationSession, path: str | os.PathLike[str]) -> Path:
    """Write the label map (NIfTI with the image geometry, or PNG for one-slice images) and its JSON sidecar; a
    ``.dcm`` path writes one DICOM SEG referencing the source series instead (names and colours inside it)."""
    path = Path(path)
    volume = session.volume
    src = volume.source_path
    if src is not None and src.exists() and path.exists() and os.path.samefile(src, path):
        raise OutputWriteError("this would overwrite the original image", path=path,
                               action="Choose a different file name for the segmentation (e.g. add _seg).")  # fmt: skip
    if path.suffix.lower() in SEG_SUFFIXES:  # DICOM SEG: names and colours travel inside it
        segments = [Segment(lb.id, lb.name, tuple(lb.color)) for lb in session.table]  # type: ignore[arg-type]
        write_dicom_seg(path, session.labels, volume, segments)
        session.mark_saved()
        log.info("saved labels to %s (DICOM SEG)", path)
        return path
    if path.suffix.lower() == ".png":
        if session.shape[0] != 1:
            raise OutputWriteError("a PNG holds one slice but this image is a volume", path=path,
                                   action="Save volumes as NIfTI (.nii.gz).")  # fmt: skip
        write_mask_png(session.labels[0], path)
    else:
        write_labels_nifti(session.labels, volume, path)
    side = sidecar_path(path)
    try:
        with atomic_write(side) as tmp:
            Path(tmp).write_text(session.table.to_json(), encoding="utf-8")
    except OSError as exc:
        raise OutputWriteError("the label names could not be written", path=side, detail=str(exc)) from exc
    session.mark_saved()
    log.info("saved labels to %s (+ %s)", path, side.name)
    return path


def load_mask(session: AnnotationSession, path: str | os.PathLike[str]) -> None:
    """Open a label map onto the current image (one undo step); names/colours from its sidecar when present, or
    from the segments of a DICOM SEG (opened onto its series)."""
    path = Path(path)
    if is_dicom_seg(path):
        labels, segments = read_dicom_seg(path, session.volume)
        table = LabelTable()
        for seg in segments:
            table.add(seg.name, seg.color, seg.value)
        session.replace_labels(labels, table)
        return
    labels = np.asarray(read_labels(path, session.volume))
    if labels.ndim == 2:
        labels = labels[None]
    if labels.size and int(labels.max()) > 65535:
        raise MedSAMIOError(f"it holds label values up to {int(labels.max())}, above the 65535 supported", path=path,
                            action="Open a label map whose values are 0..65535.")  # fmt: skip
    table = None
    side = sidecar_path(path)
    if side.is_file():
        try:
            table = _checked_table(LabelTable.from_json(side.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable label names in %s: %s", side, exc)
    session.replace_labels(labels.astype(np.uint16 if labels.max(initial=0) > 255 else np.uint8), table)


def _checked_table(table: LabelTable) -> LabelTable:
    """``table`` when every name is text and every colour three values 0..255 (ValueError otherwise)."""
    for label in table:
        color = label.color
        if not isinstance(label.name, str) or len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
            raise ValueError(f"label {label.id}: invalid name or colour {color!r}")
    return table
