"""DICOM SEG: labels of an image read from DICOM written as one Segmentation object referencing its source series
and instances (highdicom), and a SEG read back onto its series.

Frames: the label map is (D, H, W) on the volume's grid, slice ``k`` = the ``k``-th file of the series as the
reader stacked it (``Volume.extra[DICOM_FILES_KEY]``, JSON list of paths), so every SEG frame references the very
instance it was drawn on and inherits its position and orientation. Segments: one per label present, numbered
1..S in label order, with the label's name, colour (CIELab) and ``tracking_id`` ``"label <value>"`` so a read-back
restores the original label values. Binary segmentation, frames without any voxel omitted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .errors import CorruptFileError, OutputWriteError
from .readers_dicom import DICOM_FILES_KEY
from .volume import Volume

log = logging.getLogger(__name__)

SEG_SUFFIXES = (".dcm",)
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_TRACKING_PREFIX = "label "
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclass(frozen=True)
class Segment:
    """One label as a SEG segment: its value in the label map, name and RGB colour."""

    value: int
    name: str
    color: tuple[int, int, int]


class SegExportError(OutputWriteError):
    """The labels cannot be written as DICOM SEG (e.g. the source lacks the UIDs a SEG must reference)."""

    default_action = "Save the labels as NIfTI instead (File > Save labels as .nii.gz)."


def is_dicom_seg(path: str | os.PathLike[str]) -> bool:
    """True for a DICOM file whose SOP Class is Segmentation Storage (header only)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # not DICOM: the other readers decide
        return False
    return str(getattr(ds, "SOPClassUID", "")) == SEG_SOP_CLASS or str(getattr(ds, "Modality", "")) == "SEG"


def source_files(volume: Volume) -> list[Path]:
    """The DICOM files behind ``volume``'s slices, in slice order ([] when it did not come from DICOM)."""
    raw = volume.extra.get(DICOM_FILES_KEY)
    return [Path(p) for p in json.loads(raw)] if raw else []


def _source_datasets(volume: Volume, path: Path) -> list[object]:
    import pydicom

    files = source_files(volume)
    if not files:
        raise SegExportError("the image was not read from DICOM, so a DICOM SEG has nothing to reference", path=path)
    if len(files) != volume.array.shape[0]:
        raise SegExportError(
            f"the image has {volume.array.shape[0]} slices but {len(files)} source files (multi-frame source)",
            path=path,
        )
    datasets = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise SegExportError(f"the source file {f.name} can no longer be read ({exc})", path=path) from exc
        missing = [k for k in _REQUIRED_UIDS if not str(getattr(ds, k, "") or "").strip()]
        if missing:
            raise SegExportError(
                f"the source series has no {', '.join(missing)} (as some anonymisers leave it), so a DICOM SEG "
                "cannot reference it",
                path=path,
            )
        datasets.append(ds)
    return datasets


def check_seg_source(volume: Volume, path: str | os.PathLike[str]) -> None:
    """Refuse early (:class:`SegExportError`, one line) when ``volume``'s source cannot be referenced by a SEG."""
    _source_datasets(volume, Path(path))


def write_dicom_seg(
    path: str | os.PathLike[str], labels: np.ndarray, volume: Volume, segments: Sequence[Segment],
    description: str = "MedSAM Desktop segmentation",
) -> Path:  # fmt: skip
    """Write ``labels`` (D, H, W) of ``volume`` as one DICOM SEG file, atomically; :class:`SegExportError` (one
    line) when the source cannot be referenced or nothing is labelled."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .. import __version__

    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != volume.array.shape[:3]:
        raise SegExportError(f"labels {labels.shape} are not on the image's grid {volume.array.shape[:3]}", path=path)
    datasets = _source_datasets(volume, path)
    present = [s for s in sorted(segments, key=lambda s: s.value) if (labels == s.value).any()]
    if not present:
        raise SegExportError("no label has any voxel: there is nothing to save", path=path)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="MedSAM Desktop", family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=s.name[:64] or f"Label {s.value}",
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=f"{_TRACKING_PREFIX}{s.value}",
            display_color=hd.color.CIELabColor.from_rgb(*s.color),
        )
        for k, s in enumerate(present, 1)
    ]  # fmt: skip
    pixels = np.stack([labels == s.value for s in present], axis=-1)  # (D, H, W, S)
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="MedSAM Desktop",
        manufacturer_model_name="MedSAM Desktop", software_versions=__version__, device_serial_number="0",
        content_label="MEDSAM", content_description=description[:64],
    )  # fmt: skip
    try:
        with atomic_write(path) as tmp:
            seg.save_as(tmp)
    except OSError as exc:
        raise OutputWriteError(f"it could not be written ({exc.strerror or exc})", path=path) from exc
    return path


def read_dicom_seg(path: str | os.PathLike[str], volume: Volume) -> tuple[np.ndarray, list[Segment]]:
    """A DICOM SEG onto ``volume`` (its source series): labels (D, H, W) with the values the SEG's segments
    carry (``tracking_id`` ``"label N"``, else their segment number) and the segments' names and colours."""
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # not a SEG, damaged
        raise CorruptFileError("it is not a readable DICOM SEG file", path=path, detail=str(exc)) from exc
    files = source_files(volume)
    if not files:
        raise CorruptFileError("a DICOM SEG opens onto a DICOM series: open its series first", path=path)
    import pydicom

    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    referenced = {str(r[2]) for r in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise CorruptFileError("this DICOM SEG was made on another series than the image shown", path=path)
    segments, values = [], {}
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        tracking = str(getattr(desc, "tracking_id", "") or "")
        value = int(tracking[len(_TRACKING_PREFIX) :]) if tracking.startswith(_TRACKING_PREFIX) else int(number)
        values[int(number)] = value
        rgb = _rgb(desc)
        segments.append(Segment(value, str(desc.segment_label), rgb))
    labels = np.zeros(volume.array.shape[:3], np.uint16 if max(values.values()) > 255 else np.uint8)
    for number, value in values.items():
        per_frame = [u for u in uids if u in referenced]
        masks = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=per_frame, segment_numbers=[number], combine_segments=True,
            assert_missing_frames_are_empty=True,
        )  # fmt: skip
        for uid, mask in zip(per_frame, masks):
            labels[uids.index(uid)][mask > 0] = value
    return labels, segments


def _rgb(desc: object) -> tuple[int, int, int]:
    try:
        import highdicom as hd

        lab = desc.RecommendedDisplayCIELabValue  # type: ignore[attr-defined]
        r, g, b = hd.color.CIELabColor.from_dicom_value(lab).to_rgb()
        return int(r), int(g), int(b)
    except (AttributeError, ValueError, TypeError):
        return (255, 0, 0)
