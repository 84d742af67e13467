"""File I/O for MedSAM Desktop: read images/volumes with geometry, write label maps safely.

Public API (no Qt/torch imports; nibabel and pydicom are imported lazily):

* :class:`Volume` - array (D, H, W[, 3]) in SimpleITK (z, y, x) order + spacing/origin/direction.
* :func:`read_image` - NIfTI, NRRD, MetaImage, MGH/MGZ, DICOM file or folder, PNG/JPEG/BMP/TIFF, npz.
* :func:`list_dicom_series`, :func:`read_dicom_series`, :func:`read_dicom_file`.
* :func:`read_challenge_npz`, :func:`read_challenge_gt`, :func:`write_challenge_segs`.
* :func:`write_labels_nifti`, :func:`read_labels`, :func:`write_mask_png`, :func:`atomic_write`.
* Errors: :class:`MedSAMIOError` and subclasses (``str(err)`` is one actionable line).
"""

from ..atomic import atomic_write
from .challenge_npz import (
    ChallengeCase,
    modality_from_case_name,
    read_challenge_gt,
    read_challenge_npz,
    write_challenge_segs,
)
from .errors import (
    CorruptFileError,
    DicomSeriesError,
    GeometryMismatchError,
    ImageNotFoundError,
    InvalidImageError,
    InvalidNpzError,
    MedSAMIOError,
    OutputWriteError,
    UnsupportedFormatError,
)
from .readers import SUPPORTED_EXTENSIONS, detect_format, read_image
from .readers_dicom import DicomSeriesInfo, list_dicom_series, read_dicom_file, read_dicom_series
from .volume import MODALITIES, Geometry, Volume, geometry_differences
from .writers import read_labels, write_labels_nifti, write_mask_png

__all__ = [
    "MODALITIES",
    "SUPPORTED_EXTENSIONS",
    "ChallengeCase",
    "CorruptFileError",
    "DicomSeriesError",
    "DicomSeriesInfo",
    "Geometry",
    "GeometryMismatchError",
    "ImageNotFoundError",
    "InvalidImageError",
    "InvalidNpzError",
    "MedSAMIOError",
    "OutputWriteError",
    "UnsupportedFormatError",
    "Volume",
    "atomic_write",
    "detect_format",
    "geometry_differences",
    "list_dicom_series",
    "modality_from_case_name",
    "read_challenge_gt",
    "read_challenge_npz",
    "read_dicom_file",
    "read_dicom_series",
    "read_image",
    "read_labels",
    "write_challenge_segs",
    "write_labels_nifti",
    "write_mask_png",
]
