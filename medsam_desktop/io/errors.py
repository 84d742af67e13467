"""Typed I/O errors whose ``str()`` is one actionable line for a clinician.

Every reader/writer in :mod:`medsam_desktop.io` raises only subclasses of :class:`MedSAMIOError`;
low-level exceptions (SimpleITK ``RuntimeError``, nibabel, PIL, OSError ...) are chained as
``__cause__`` and their text is kept in :attr:`MedSAMIOError.detail` for logs, never in the message.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..text import one_line

__all__ = [
    "CorruptFileError",
    "DicomSeriesError",
    "GeometryMismatchError",
    "ImageNotFoundError",
    "InvalidImageError",
    "InvalidNpzError",
    "MedSAMIOError",
    "OutputWriteError",
    "UnsupportedFormatError",
]


def _one_line(text: str) -> str:
    return one_line(text)


class MedSAMIOError(Exception):
    """Base class. ``str(err)`` = "Cannot <verb> '<file>': <problem>. <action>" on one line.

    Attributes: ``path`` (the file or folder concerned, or None), ``problem``, ``action`` and
    ``detail`` (technical text of the underlying exception, for logs only).
    """

    default_action = "Check the file and try again."

    def __init__(
        self,
        problem: str,
        *,
        path: str | os.PathLike[str] | None = None,
        action: str | None = None,
        detail: str | None = None,
        verb: str = "open",
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = _one_line(problem).rstrip(".")
        self.action = _one_line(action if action is not None else self.default_action)
        self.detail = _one_line(detail) if detail else None
        self.verb = verb
        if self.path is not None:
            head = f"Cannot {verb} '{self.path.name or self.path}': {self.problem}."
        else:
            head = f"{self.problem[:1].upper()}{self.problem[1:]}."
        super().__init__(_one_line(f"{head} {self.action}"))

    def __reduce__(self) -> tuple[object, ...]:  # keep errors picklable across processes
        kwargs = {"path": self.path, "action": self.action, "detail": self.detail, "verb": self.verb}
        return (_rebuild, (type(self), self.problem, kwargs))


def _rebuild(cls: type[MedSAMIOError], problem: str, kwargs: dict[str, object]) -> MedSAMIOError:
    err = cls.__new__(cls)
    MedSAMIOError.__init__(err, problem, **kwargs)  # type: ignore[arg-type]
    return err


class ImageNotFoundError(MedSAMIOError):
    """The path does not exist (or is not a file/folder we can open)."""

    default_action = "Check the file name and location, then open it again."


class UnsupportedFormatError(MedSAMIOError):
    """The file type is not one MedSAM Desktop can open (or save)."""

    default_action = "Convert it to NIfTI (.nii/.nii.gz), NRRD, MetaImage (.mha), DICOM, PNG, JPEG, BMP or TIFF."


class CorruptFileError(MedSAMIOError):
    """The file is empty, truncated, damaged or unreadable."""

    default_action = "The file may be damaged or incompletely copied; copy or export it again."


class InvalidImageError(MedSAMIOError):
    """The file was read but its content cannot be used (4D, empty, all-NaN, too large ...)."""

    default_action = "Export a single 2D image or 3D volume and open that instead."


class InvalidNpzError(MedSAMIOError):
    """A challenge ``.npz`` has missing/extra keys, object arrays or wrong shapes."""

    default_action = "Use an .npz in the MedSAM challenge layout (imgs, boxes and, for 3D, spacing)."


class GeometryMismatchError(MedSAMIOError):
    """A mask does not fit its image (shape, spacing, origin or direction differ)."""

    default_action = "Open the mask together with the image it was drawn on."


class DicomSeriesError(MedSAMIOError):
    """A DICOM folder holds no readable series, or the requested series is absent/inconsistent."""

    default_action = "Choose a folder that contains the .dcm files of one scan."


class OutputWriteError(MedSAMIOError):
    """A result could not be saved (folder missing, no permission, disk full, would overwrite input)."""

    default_action = "Choose another file name or folder you can write to, then save again."

    def __init__(self, problem: str, **kwargs: object) -> None:
        kwargs.setdefault("verb", "save")
        super().__init__(problem, **kwargs)  # type: ignore[arg-type]


#: the problems of :func:`reading`'s two usual steps
HEADER_UNREADABLE = "its header could not be read (damaged file or wrong file type)"
DATA_UNREADABLE = "its image data could not be read (damaged or truncated file)"


@contextlib.contextmanager
def reading(
    path: str | os.PathLike[str] | None, problem: str, errors: tuple[type[BaseException], ...] = (Exception,)
) -> Iterator[None]:
    """The one wrapping of a library's read errors: inside the block, ``errors`` (default: any exception; a
    :class:`MedSAMIOError` passes unchanged) become :class:`CorruptFileError` with ``problem`` and the library's
    message as ``detail`` (shown at debug level only)."""
    try:
        yield
    except MedSAMIOError:
        raise
    except errors as exc:
        raise CorruptFileError(problem, path=path, detail=str(exc)) from exc
