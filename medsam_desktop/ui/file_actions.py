"""The window's file actions: the open and save dialogs, the samples and recent-files menus, opening a mask onto
the image and saving the labels, each failure one line in an error box (``dialogs``), never a traceback.

Where a dialog starts is remembered (the folder chosen last; never a sample's package folder). Reading an image
in the background and the question about unsaved labels stay with the window (``MainWindow.open_path``,
``maybe_discard``), which owns the session they replace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PyQt6.QtWidgets import QFileDialog, QInputDialog

from ..core.document import files, user_folders
from ..core.document.annotation import AnnotationSession
from ..io import DicomSeriesInfo, MedSAMIOError
from ..io.dicom_seg import SEG_SUFFIXES, source_files
from ..io.formats import LABEL_SUFFIXES
from . import dialogs

if TYPE_CHECKING:
    from .main_window import MainWindow

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_RECENT = 8
RECENT_KEY = "recent/files"
LAST_DIR_KEY = "dialogs/last_dir"  # the folder the user chose last in a file dialog (or dropped from)


class FileActions:
    """File dialogs and menus of ``window`` (its ``store`` keeps the recent files and the last folder)."""

    def __init__(self, window: MainWindow) -> None:
        self._window = window

    # --- opening ---------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        w = self._window
        path, _ = QFileDialog.getOpenFileName(w, "Open image", self.last_dir(), files.IMAGE_FILTER)
        if path:
            self.remember_dir(Path(path).parent)
            w.open_path(path)

    def open_dicom_dialog(self) -> None:
        w = self._window
        path = QFileDialog.getExistingDirectory(w, "Open DICOM folder", self.last_dir())
        if path:
            self.remember_dir(path)
            w.open_path(path)

    def ask_series(self, series: list[DicomSeriesInfo]) -> DicomSeriesInfo | None:
        """The series of a DICOM folder holding several, as the user chose it (None: cancelled)."""
        items = [f"{s.modality} {s.description or '(no description)'} - {s.n_files} files" for s in series]
        item, ok = QInputDialog.getItem(
            self._window, "Choose a series", "This folder holds several series:", items, 0, False
        )
        return series[items.index(item)] if ok else None

    def open_sample(self, key: str) -> bool:
        """Open a bundled sample and suggest its box on the axial view (Enter segments it)."""
        from ..samples import SampleNotAvailableError, get_sample

        w = self._window
        try:
            sample = get_sample(key)
            path = sample.path()
        except (SampleNotAvailableError, KeyError) as exc:
            dialogs.show_error(w, "Sample not available", str(exc))
            return False

        def suggest() -> None:
            axial = w.views["axial"]
            axial.last_box = (axial.axial_z, np.asarray(sample.box, dtype=np.float64))
            axial.refresh()
            w.status(f"Sample: press Enter to segment the {sample.target} in the suggested box")

        return w.open_path(path, then=suggest)

    def fill_samples_menu(self) -> None:
        from ..samples import list_samples

        menu = self._window.samples_menu
        menu.clear()
        for sample in list_samples():
            menu.addAction(sample.title, lambda _=False, k=sample.key: self.open_sample(k))

    def open_mask_dialog(self) -> None:
        w = self._window
        if w.session is None:
            return
        path, _ = QFileDialog.getOpenFileName(w, "Open mask", self.last_dir(), files.IMAGE_FILTER)
        if path:
            self.remember_dir(Path(path).parent)
            self.open_mask(path)

    def open_mask(self, path: str | Path) -> bool:
        """Put the mask file's labels onto the image (one undo step); False with one line when it cannot."""
        ok, _ = self._on_session("Cannot open mask", "open", path, lambda session: files.load_mask(session, path))
        return ok

    # --- recent files and the dialogs' folder ------------------------------------------------------
    def recent_files(self) -> list[str]:
        """Newest first, each file once by its resolved path (older versions stored paths as given)."""
        value = self._window.store.value(RECENT_KEY, [])
        return user_folders.dedupe_recent(str(v) for v in (value if isinstance(value, list) else [value]) if v)

    def add_recent(self, path: str) -> None:
        self._window.store.setValue(RECENT_KEY, user_folders.add_recent(path, self.recent_files(), MAX_RECENT))

    def fill_recent_menu(self) -> None:
        w = self._window
        w.recent_menu.clear()
        recent = self.recent_files()
        for path in recent:
            w.recent_menu.addAction(path, lambda _=False, p=path: w.open_path(p))
        if not recent:
            w.recent_menu.addAction("(none)").setEnabled(False)  # type: ignore[union-attr]

    def last_dir(self) -> str:
        """Where the file dialogs start: the folder chosen last (never a sample's package folder), else home."""
        last = self._window.store.value(LAST_DIR_KEY, "")
        return user_folders.start_folder(str(last) if last else None, Path.home())

    def remember_dir(self, folder: str | Path) -> None:
        self._window.store.setValue(LAST_DIR_KEY, user_folders.resolved(folder))

    # --- saving ----------------------------------------------------------------------------------
    def save_dialog(self) -> bool:
        """Ask where, then :meth:`save_labels`; a typed name without a known suffix gets the chosen filter's, and
        an existing file of that name is never replaced unasked. False when cancelled or failed."""
        w = self._window
        if w.session is None:
            return False
        default = files.default_labels_path(w.session.volume)
        default = user_folders.save_start(default, self.last_dir(), Path.home())  # a sample: not in its package
        filters = "NIfTI (*.nii.gz *.nii)" + (";;PNG (*.png)" if w.session.shape[0] == 1 else "")
        if source_files(w.session.volume):  # from DICOM: a SEG can reference its series
            filters += ";;DICOM SEG (*.dcm)"
        path, chosen = QFileDialog.getSaveFileName(w, "Save labels", str(default), filters)
        if not path:
            return False
        self.remember_dir(Path(path).parent)
        if not path.lower().endswith((*LABEL_SUFFIXES, *SEG_SUFFIXES)):
            # the dialog confirmed the typed name, not this one: never replace an existing file unasked
            path += ".png" if chosen.startswith("PNG") else ".dcm" if chosen.startswith("DICOM") else ".nii.gz"
            if Path(path).exists() and not dialogs.ask_overwrite(w, Path(path)):
                return False
        return self.save_labels(path)

    def save_labels(self, path: str | Path) -> bool:
        """Write the labels (format by suffix, the source's geometry); False with one line when it cannot."""
        ok, saved = self._on_session("Cannot save", "save", path, lambda session: files.save_labels(session, path))
        if ok:
            self._window.status(f"Saved {saved.name}", 5000)
        return ok

    def _on_session(
        self, title: str, verb: str, path: str | Path, action: Callable[[AnnotationSession], T]
    ) -> tuple[bool, T]:
        """(True, ``action(session)``); (False, None) without a session, or after one line in an error box: the
        reader's or writer's own message, else (a bug, no memory left) a plain line with the details in the log."""
        session = self._window.session
        if session is None:
            return False, None  # type: ignore[return-value]
        try:
            return True, action(session)
        except MedSAMIOError as exc:
            dialogs.show_error(self._window, title, str(exc))
        except Exception as exc:
            log.exception("%s %s failed", verb, path)
            dialogs.show_error(self._window, title, dialogs.unexpected_message(verb, path, exc))
        return False, None  # type: ignore[return-value]
