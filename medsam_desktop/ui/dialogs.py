"""Small modal dialogs: one-line errors (never a traceback), unsaved-work prompt, propagation range.

Window code calls these through the module (``dialogs.ask_save_changes(...)``) so tests can replace them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PyQt6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QMessageBox,
    QSpinBox,
    QWidget,
)

from ..text import one_line as text_one_line

log = logging.getLogger(__name__)

#: mouse gestures handled by the slice view itself (keys, Up/Down/PageUp/PageDown included, are listed from the
#: actions: they act on the view whichever widget has the focus, except a text field being edited)
MOUSE_AND_VIEW_KEYS = (
    ("Left-drag", "Draw a box (box tool), paint (brush/eraser)"),
    ("Right-drag", "Window/level (horizontal: width, vertical: level)"),
    ("Wheel", "Previous / next slice"),
    ("Ctrl+wheel, middle-drag", "Zoom, pan"),
)


def one_line(text: str, limit: int = 400) -> str:
    """A dialog's text on one line (:func:`medsam_desktop.text.one_line`, at most ``limit`` characters)."""
    return text_one_line(text, limit)


def unexpected_message(verb: str, path: str | os.PathLike[str] | None, exc: BaseException) -> str:
    """One line for a failure nothing foresaw (a bug, no memory left); the details belong in the log only."""
    name = f" '{Path(path).name}'" if path is not None else ""
    if isinstance(exc, MemoryError):
        return f"Cannot {verb}{name}: there is not enough memory. Close other images or programs, then try again."
    return (f"Cannot {verb}{name}: an unexpected problem occurred. Try again; if it happens again, restart "
            "MedSAM Desktop and report it.")  # fmt: skip


def show_error(parent: QWidget | None, title: str, message: str) -> None:
    QMessageBox.warning(parent, title, one_line(message))


def show_info(parent: QWidget | None, title: str, message: str) -> None:
    QMessageBox.information(parent, title, message)


def ask_save_changes(parent: QWidget | None) -> str:
    """'save', 'discard' or 'cancel'."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Unsaved labels")
    box.setText("The labels have unsaved changes. Save them first?")
    box.setStandardButtons(
        QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel
    )
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    answer = box.exec()
    if answer == QMessageBox.StandardButton.Save:
        return "save"
    if answer == QMessageBox.StandardButton.Discard:
        return "discard"
    return "cancel"


def ask_overwrite(parent: QWidget | None, path: Path) -> bool:
    """Whether to replace the existing file ``path`` (the save dialog did not ask: the extension was added)."""
    answer = QMessageBox.question(
        parent,
        "Replace file?",
        f"{path.name} already exists in {path.parent}. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def ask_restore(parent: QWidget | None, image_name: str, saved_at: str) -> str:
    """After a crash: 'restore', 'discard' or 'later' (keep the autosave for the next start)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Question)
    box.setWindowTitle("Restore unsaved labels?")
    box.setText(f"MedSAM Desktop did not close properly. Labels on {image_name} from {saved_at} were not saved."
                " Restore them?")  # fmt: skip
    restore = box.addButton("Restore", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Later", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(restore)
    box.exec()
    clicked = box.clickedButton()
    return "restore" if clicked is restore else "discard" if clicked is discard else "later"


class PropagationDialog(QDialog):
    """How far to propagate from slice ``z`` of ``depth``: by default until the mask disappears or the image ends.

    ``directions``: the anatomical names of the directions towards slice 0 and towards the last slice (e.g.
    ``("inferior", "superior")``), or None (oblique or unknown orientation): the rows then name slice numbers.
    The slice counts stay available to limit the range.
    """

    def __init__(self, parent: QWidget | None, z: int, depth: int, directions: tuple[str, str] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Propagate")
        last = depth - 1
        self.below, self.above = QSpinBox(), QSpinBox()
        self.below.setRange(0, z)
        self.above.setRange(0, last - z)
        self.below.setValue(z)  # the whole stack: the image's end, unless the mask disappears first
        self.above.setValue(last - z)
        for spin in (self.below, self.above):
            spin.setSuffix(" slices")
        self.until_empty = QCheckBox("Stop where the mask disappears")
        self.until_empty.setChecked(True)
        if directions is None:
            rows = (f"Towards slice 0 (from {z})", f"Towards the last slice, {last} (from {z})")
        else:
            rows = (
                f"{directions[0].capitalize()} (towards slice 0)",
                f"{directions[1].capitalize()} (towards slice {last})",
            )
        form = QFormLayout(self)
        form.addRow(
            QLabel(f"From slice {z}: until the mask disappears or the image ends. Lower a count to stop earlier.")
        )
        form.addRow(rows[0], self.below)
        form.addRow(rows[1], self.above)
        form.addRow(self.until_empty)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> tuple[int, int, bool]:
        """(slices towards 0, slices towards the last slice, stop where the mask disappears)."""
        return self.below.value(), self.above.value(), self.until_empty.isChecked()


def ask_propagation_range(
    parent: QWidget | None, z: int, depth: int, directions: tuple[str, str] | None = None
) -> tuple[int, int, bool] | None:
    """:class:`PropagationDialog`'s (below, above, stop where the mask disappears); None when cancelled."""
    dialog = PropagationDialog(parent, z, depth, directions)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return dialog.values()


def show_shortcuts(parent: QWidget | None, shortcuts: list[tuple[str, str]]) -> None:
    """``shortcuts``: (keys, action) rows, shown before the mouse gestures."""
    all_rows = [*shortcuts, *MOUSE_AND_VIEW_KEYS]
    rows = "".join(f"<tr><td><b>{k}</b></td><td>&nbsp;&nbsp;{v}</td></tr>" for k, v in all_rows)
    show_info(parent, "Keyboard shortcuts", f"<table>{rows}</table>")
