"""Dock panel listing the labels: visibility, colour, name; add / rename / delete; active label; opacity."""

from __future__ import annotations

import logging

from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtGui import QColor, QIcon, QPixmap
from PyQt6.QtWidgets import (
    QColorDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..core.document.annotation import AnnotationSession

log = logging.getLogger(__name__)

ID_ROLE = Qt.ItemDataRole.UserRole


def _swatch(color: tuple[int, int, int]) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(*color))
    return QIcon(pix)


class LabelsPanel(QWidget):
    """Edits ``session.table`` through the session's methods (so renames and colours are undoable)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: AnnotationSession | None = None
        self._updating = False
        self._rebuild_pending = False
        self.list = QListWidget()
        self.list.setToolTip("Tick to show/hide, double-click to rename; the selected label is the active one")
        self.add_button = QPushButton("Add")
        self.delete_button = QPushButton("Delete")
        self.color_button = QPushButton("Colour…")
        self.lock_button = QPushButton("Lock")
        self.lock_button.setCheckable(True)
        self.lock_button.setToolTip("A locked label's voxels are never changed: not by boxes, brush, eraser, fill, "
                                    "clear or propagation (Slicer's and ITK-SNAP's label lock)")  # fmt: skip
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        buttons = QHBoxLayout()
        for b in (self.add_button, self.color_button, self.lock_button, self.delete_button):
            buttons.addWidget(b)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("Opacity"))
        opacity_row.addWidget(self.opacity)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(opacity_row)
        layout.addLayout(buttons)
        self.add_button.clicked.connect(self.add_label)
        self.delete_button.clicked.connect(self.delete_selected)
        self.color_button.clicked.connect(self.choose_color)
        self.lock_button.toggled.connect(self._on_lock)
        self.list.currentItemChanged.connect(self._on_current)
        self.list.itemChanged.connect(self._on_item_changed)
        self.opacity.valueChanged.connect(self._on_opacity)
        self.setEnabled(False)

    def set_session(self, session: AnnotationSession | None) -> None:
        if self.session is not None:
            self.session.table_changed.disconnect(self._schedule_rebuild)
            self.session.active_changed.disconnect(self._on_active)
        self.session = session
        if session is not None:
            session.table_changed.connect(self._schedule_rebuild)
            session.active_changed.connect(self._on_active)
        self.setEnabled(session is not None)
        self.rebuild()

    def _schedule_rebuild(self) -> None:
        """Rebuild after the current event: the table may change from inside a list-item signal."""
        if not self._rebuild_pending:
            self._rebuild_pending = True
            QTimer.singleShot(0, self.rebuild)

    def rebuild(self) -> None:
        self._rebuild_pending = False
        self._updating = True
        try:
            self.list.clear()
            if self.session is None:
                return
            for lb in self.session.table:
                item = QListWidgetItem(_swatch(lb.color), lb.name)
                item.setData(ID_ROLE, lb.id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if lb.visible else Qt.CheckState.Unchecked)
                item.setToolTip(f"label value {lb.id}" + (" (locked)" if lb.locked else ""))
                font = item.font()
                font.setItalic(lb.locked)  # locked labels in italics
                item.setFont(font)
                self.list.addItem(item)
            self._select(self.session.active_label)
        finally:
            self._updating = False

    def _select(self, label_id: int) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item is not None and item.data(ID_ROLE) == label_id:
                self.list.setCurrentItem(item)
                if self.session is not None:
                    lb = self.session.table.get(label_id)
                    self.opacity.blockSignals(True)
                    self.opacity.setValue(round(lb.opacity * 100))
                    self.opacity.blockSignals(False)
                    self.lock_button.blockSignals(True)
                    self.lock_button.setChecked(lb.locked)
                    self.lock_button.blockSignals(False)
                    self.delete_button.setEnabled(not lb.locked)  # unlock first
                return

    def selected_id(self) -> int:
        item = self.list.currentItem()
        return int(item.data(ID_ROLE)) if item is not None else 0

    # --- reactions -------------------------------------------------------------------------------
    def _on_active(self, label_id: int) -> None:
        self._updating = True
        try:
            self._select(label_id)
        finally:
            self._updating = False

    def _on_current(self, current: QListWidgetItem | None, _previous: QListWidgetItem | None) -> None:
        if self._updating or self.session is None or current is None:
            return
        self.session.set_active_label(int(current.data(ID_ROLE)))
        self._select(self.session.active_label)

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._updating or self.session is None:
            return
        label_id = int(item.data(ID_ROLE))
        lb = self.session.table.get(label_id)
        visible = item.checkState() == Qt.CheckState.Checked
        name = item.text()
        if visible != lb.visible:
            self.session.set_label_display(label_id, visible=visible)
        if name != lb.name:
            self.session.rename_label(label_id, name)

    def _on_lock(self, locked: bool) -> None:
        label_id = self.selected_id()
        if self.session is not None and label_id:
            self.session.set_label_locked(label_id, locked)
            self.delete_button.setEnabled(not locked)  # unlock first

    def _on_opacity(self, value: int) -> None:
        label_id = self.selected_id()
        if self.session is not None and label_id:
            self.session.set_label_display(label_id, opacity=value / 100.0)

    # --- actions ---------------------------------------------------------------------------------
    def add_label(self) -> None:
        if self.session is not None:
            self.session.add_label()

    def delete_selected(self) -> None:
        label_id = self.selected_id()
        if self.session is not None and label_id:
            self.session.delete_label(label_id)

    def choose_color(self) -> None:
        label_id = self.selected_id()
        if self.session is None or not label_id:
            return
        current = QColor(*self.session.table.get(label_id).color)
        color = QColorDialog.getColor(current, self, "Label colour")
        if color.isValid():
            self.session.recolor_label(label_id, (color.red(), color.green(), color.blue()))
