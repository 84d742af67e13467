"""Dock panel of label statistics: per label voxels, volume in mL, the image's mean / SD / min / max in its units
(HU for CT) and the slice extent (``core.document.statistics``). Recomputed in the background shortly after each
edit while the panel is shown, so the window never waits for it; exported as CSV.

The background computation reads the session's label map itself, not a copy: a 512x512x1000 uint16 map is 0.5 GB,
and copying it on the GUI thread took 60-520 ms here (1.9 s the first time, while the memory is mapped; session 12)
and doubled the memory. Every edit and every label-table change
invalidates the computation under way (``_generation``), and edits happen on the GUI thread, which announces each
one (``labels_changed``) before it handles any result; so a result that may have read a half-made edit is always
discarded, and the recomputation the edit scheduled shows the numbers.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PyQt6.QtCore import QTimer, pyqtSlot
from PyQt6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.document.annotation import AnnotationSession
from ..core.document.statistics import LabelStatistics, label_statistics, write_csv
from .background import BackgroundRunner

log = logging.getLogger(__name__)

#: after an edit, wait this long for the next one before recomputing (a brush stroke is many edits)
REFRESH_DELAY_MS = 400
COLUMNS = ("Label", "Voxels", "Volume mL", "Mean", "SD", "Min", "Max", "Slices")


def _number(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


class StatisticsPanel(QWidget):
    """Shows the statistics of the session's labels; ``rows`` holds the last computed ones."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: AnnotationSession | None = None
        self.rows: list[LabelStatistics] = []
        self._generation = 0  # results of an older request are dropped
        self._pending = False
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.state = QLabel("")
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self.export_dialog)
        row = QHBoxLayout()
        row.addWidget(self.state, 1)
        row.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(row)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        self._runner = BackgroundRunner(self)
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(self._on_failed)

    def set_session(self, session: AnnotationSession | None) -> None:
        if self.session is not None:
            self.session.labels_changed.disconnect(self._on_labels_changed)
            self.session.table_changed.disconnect(self.schedule)
        self.session = session
        self.rows = []
        self._generation += 1
        self.table.setRowCount(0)
        if session is not None:
            session.labels_changed.connect(self._on_labels_changed)
            session.table_changed.connect(self.schedule)
        self.schedule()

    def _on_labels_changed(self, _z0: int, _z1: int) -> None:
        self.schedule()

    def schedule(self) -> None:
        """Recompute soon (edits in quick succession are coalesced); only while the panel is shown. A result still
        being computed is stale from now on and will be dropped."""
        self._generation += 1
        self._pending = True
        if self.isVisible():
            self._timer.start()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self._pending:
            self._timer.start()

    @property
    def units(self) -> str:
        return "HU" if self.session is not None and self.session.volume.modality == "CT" else ""

    def refresh(self) -> None:
        """Compute in the background on the live label map (see the module docstring: an edit meanwhile voids it)."""
        self._pending = False
        session = self.session
        if session is None:
            return
        self._generation += 1
        generation = self._generation
        labels = session.labels
        volume = session.volume
        image = None if volume.is_rgb else volume.array
        names = {lb.id: lb.name for lb in session.table}
        spacing = tuple(volume.spacing)
        self.state.setText("Computing…")
        self._runner.run(generation, lambda: label_statistics(labels, spacing, image, names))

    @pyqtSlot(object)
    def _on_done(self, result: tuple[int, list[LabelStatistics]]) -> None:
        generation, rows = result
        if generation != self._generation:
            return
        self.rows = rows
        units = f" {self.units}" if self.units else ""
        self.table.setRowCount(len(rows))
        for r, s in enumerate(rows):
            cells = (f"{s.label} {s.name}", str(s.voxels), f"{s.volume_ml:.3f}", _number(s.mean), _number(s.sd),
                     _number(s.minimum), _number(s.maximum), f"{s.first_slice}–{s.last_slice}")  # fmt: skip
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.state.setText(f"{len(rows)} labels; intensities in the image's units{units}" if rows else "No labels yet")

    @pyqtSlot(object)
    def _on_failed(self, result: tuple[int, str]) -> None:
        generation, message = result
        if generation == self._generation:
            self.state.setText(f"Statistics failed: {message}")

    def export_dialog(self) -> None:
        if not self.rows:
            self.state.setText("Nothing to export: no labelled voxels yet")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export label statistics", "label_statistics.csv", "CSV (*.csv)")
        if path:
            self.export(Path(path))

    def export(self, path: Path) -> None:
        try:
            write_csv(self.rows, path)
        except OSError as exc:
            self.state.setText(f"Could not write {path.name}: {exc.strerror or exc}")
            return
        self.state.setText(f"Exported {len(self.rows)} labels to {path.name}")
