"""The file suffixes of every format, assembled from the readers that own them (each ``readers_*`` module and
``challenge_npz`` declares its ``SUFFIXES``) and from the label writers: the one home of extension lists.

The content decides a file's format (``readers.detect_format``, magic bytes); a suffix only names what a file
claims to be, what Open dialogs offer, and what a save name may end with.
"""

from __future__ import annotations

from pathlib import Path

from . import challenge_npz, readers_2d, readers_dicom, readers_nibabel, readers_sitk

#: format -> suffixes, longest first within a format; the readers' own tables
FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    **readers_nibabel.SUFFIXES, **readers_sitk.SUFFIXES, **readers_dicom.SUFFIXES, **readers_2d.SUFFIXES,
    **challenge_npz.SUFFIXES,
}  # fmt: skip
#: (suffix, format), longest suffix first (``.nii.gz`` before ``.gz``-less ``.nii``)
_BY_SUFFIX = tuple(sorted(((s, f) for f, ss in FORMAT_SUFFIXES.items() for s in ss), key=lambda sf: -len(sf[0])))
#: suffixes accepted but not offered in Open dialogs (Analyze pairs, rare DICOM names)
_NOT_OFFERED = (".img.gz", ".hdr", ".img", ".dicom", ".ima")
#: extensions offered in Open dialogs (a DICOM folder can be opened too)
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(s for ss in FORMAT_SUFFIXES.values() for s in ss if s not in _NOT_OFFERED)
#: what a label map is saved as: NIfTI (any image) or PNG (2D images)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
LABEL_SUFFIXES = (*NIFTI_SUFFIXES, ".png")


def format_from_suffix(path: str | Path) -> str | None:
    """The format a file's name claims (case-insensitive), or None."""
    name = Path(path).name.lower()
    return next((fmt for suffix, fmt in _BY_SUFFIX if name.endswith(suffix)), None)


def strip_suffix(name: str, suffixes: tuple[str, ...] | None = None) -> str:
    """``name`` without its format suffix (any reader's, or one of ``suffixes``): ``ct.nii.gz`` -> ``ct``."""
    low = name.lower()
    for suffix in suffixes or tuple(s for s, _ in _BY_SUFFIX):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti_name(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def open_dialog_filter() -> str:
    """The Qt file-dialog filter of every supported image (``Images (*.nii *.nii.gz ...);;All files (*)``)."""
    return f"Images ({' '.join('*' + s for s in SUPPORTED_EXTENSIONS)});;All files (*)"
