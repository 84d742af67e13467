"""Small modal dialogs: one-line errors (never a traceback), unsaved-work prompt, propagation range.

Window code calls these through the module (``dialogs.ask_save_changes(...)``) so tests can replace them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PyQt6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QMessageBox, QSpinBox, QWidget

from ..text import one_line as text_one_line

log = logging.getLogger(__name__)

#: mouse gestures and keys handled by the slice view itself (menu shortcuts are listed from the actions)
MOUSE_AND_VIEW_KEYS = (
    ("Left-drag", "Draw a box (box tool), paint (brush/eraser)"),
    ("Right-drag", "Window/level (horizontal: width, vertical: level)"),
    ("Wheel, Up/Down, PageUp/PageDown", "Previous / next slice"),
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


def ask_propagation_range(parent: QWidget | None, z: int, depth: int) -> tuple[int, int] | None:
    """Ask how many slices below and above slice ``z`` to propagate; None when cancelled."""
    dialog = QDialog(parent)
    dialog.setWindowTitle("Propagate")
    below, above = QSpinBox(), QSpinBox()
    below.setRange(0, z)
    above.setRange(0, depth - 1 - z)
    below.setValue(min(z, 15))
    above.setValue(min(depth - 1 - z, 15))
    form = QFormLayout(dialog)
    form.addRow(f"Slices below {z}", below)
    form.addRow(f"Slices above {z}", above)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return below.value(), above.value()


def show_shortcuts(parent: QWidget | None, shortcuts: list[tuple[str, str]]) -> None:
    """``shortcuts``: (keys, action) rows, shown before the mouse gestures."""
    all_rows = [*shortcuts, *MOUSE_AND_VIEW_KEYS]
    rows = "".join(f"<tr><td><b>{k}</b></td><td>&nbsp;&nbsp;{v}</td></tr>" for k, v in all_rows)
    show_info(parent, "Keyboard shortcuts", f"<table>{rows}</table>")
