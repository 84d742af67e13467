"""DICOM series synthesised from ../shared/data/raw/CT_small.dcm at chosen slice positions (reader and writer
tests of series geometry)."""

from __future__ import annotations

from pathlib import Path


def ct_series(raw_dir: Path, folder: Path, positions: list[tuple[float, float, float]]) -> Path:
    """One axial series in ``folder``: a copy of CT_small.dcm at each ImagePositionPatient in ``positions``."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir()
    uid = generate_uid()
    for i, pos in enumerate(positions):
        ds = pydicom.dcmread(raw_dir / "CT_small.dcm")
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.save_as(folder / f"s{i:03d}.dcm")
    return folder
