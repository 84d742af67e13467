"""Application settings (model, runtime, precision, threads, embedding cache, overlap rule) stored with QSettings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QSpinBox, QWidget

from ..core.backends import (
    DEFAULT,
    DEFAULT_PRECISION,
    DEFAULT_RUNTIME,
    PRECISIONS,
    RUNTIME_TITLES,
    RUNTIMES,
    runtime_installed,
)
from ..core.document.annotation import OverlapRule

log = logging.getLogger(__name__)

ORGANIZATION = "MedSAM"
APPLICATION = "MedSAM Desktop"
MAX_THREADS = 64
MAX_CACHE_MB = 16384


#: stored settings without ``model/defaults`` and with these values hold the defaults of before session 7, not a
#: choice: they load as ``default``
OLD_DEFAULTS = ("torch", "auto")
DEFAULTS_VERSION = "2"


def qsettings() -> QSettings:
    return QSettings(ORGANIZATION, APPLICATION)


@dataclass
class AppSettings:
    model: str = "auto"  # "auto", "repvit_m0_6" (bundled student) or "litemedsam" (teacher, accurate)
    threads: int = 0  # 0 = let torch decide
    cache_mb: int = 256
    overlap: str = OverlapRule.OVERWRITE.value
    runtime: str = DEFAULT_RUNTIME  # "default" or one of core.backends.RUNTIMES
    precision: str = DEFAULT_PRECISION  # "default" or one of core.backends.PRECISIONS

    @classmethod
    def load(cls, store: QSettings | None = None) -> AppSettings:
        s = store or qsettings()
        d = cls()
        try:
            runtime, precision = str(s.value("model/runtime", d.runtime)), str(s.value("model/precision", d.precision))
            if (runtime, precision) == OLD_DEFAULTS and s.value("model/defaults", "") != DEFAULTS_VERSION:
                runtime, precision = d.runtime, d.precision  # the old defaults, saved before "default" existed
            if runtime not in (DEFAULT, *RUNTIMES) or precision not in (DEFAULT, *PRECISIONS):
                raise ValueError(f"runtime {runtime!r} / precision {precision!r}")
            return cls(
                model=str(s.value("model/name", d.model)),
                runtime=runtime,
                precision=precision,
                # the dialog's ranges: a hand-edited or corrupt value must not stop the app from starting
                threads=min(max(int(s.value("model/threads", d.threads)), 0), MAX_THREADS),
                cache_mb=min(max(int(s.value("model/cache_mb", d.cache_mb)), 0), MAX_CACHE_MB),
                overlap=OverlapRule(str(s.value("edit/overlap", d.overlap))).value,
            )
        except (TypeError, ValueError):
            log.warning("ignoring invalid stored settings")
            return d

    def save(self, store: QSettings | None = None) -> None:
        s = store or qsettings()
        s.setValue("model/name", self.model)
        s.setValue("model/runtime", self.runtime)
        s.setValue("model/precision", self.precision)
        s.setValue("model/defaults", DEFAULTS_VERSION)
        s.setValue("model/threads", self.threads)
        s.setValue("model/cache_mb", self.cache_mb)
        s.setValue("edit/overlap", self.overlap)
        s.sync()


RUNTIME_DEFAULT_TITLE = "Default (OpenVINO with the shipped files, else PyTorch)"
PRECISION_TITLES = {
    DEFAULT: "Default (int8 encoder on OpenVINO, else automatic)",
    "auto": "Automatic (bf16 where the CPU supports it)",
    "fp32": "fp32 (exact)",
    "bf16": "bf16 (faster on recent CPUs; ONNX Runtime runs fp32)",
    "int8": "int8 encoder (OpenVINO only, the fastest; others run automatic)",
}
#: measured on the dev set (docs/performance.md, session 6): shown as the precision box's tooltip
PRECISION_TIP = (
    "The default is the fastest setting within 0.3 DSC/NSD points of fp32 on the dev set for this CPU: "
    "int8 on CPUs with VNNI (first mask 56 ms vs 150 ms for PyTorch fp32, session 7), fp32 without."
)


def available_models() -> list[tuple[str, str]]:
    """(name, title) of the models the user can pick (the checks only look for files)."""
    from ..model_files import student_available, teacher_checkpoint_path

    out = [("auto", "Automatic (bundled student, else LiteMedSAM)")]
    if student_available():
        out.append(("repvit_m0_6", "Bundled student (fast)"))
    if teacher_checkpoint_path() is not None:
        out.append(("litemedsam", "LiteMedSAM teacher (accurate, slower)"))
    return out


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.model = QComboBox()
        for name, title in available_models():
            self.model.addItem(title, name)
        index = self.model.findData(settings.model)
        self.model.setCurrentIndex(max(index, 0))
        self.runtime = QComboBox()
        self.runtime.addItem(RUNTIME_DEFAULT_TITLE, DEFAULT)
        for name in RUNTIMES:  # only those installed (the packaged app has OpenVINO only)
            if runtime_installed(name):
                self.runtime.addItem(RUNTIME_TITLES[name], name)
        self.runtime.setCurrentIndex(max(self.runtime.findData(settings.runtime), 0))
        self.runtime.setToolTip(
            "The default runs the shipped OpenVINO files (no conversion); for other weights "
            "OpenVINO and ONNX Runtime convert the model once (cached)"
        )
        self.precision = QComboBox()
        for name in (DEFAULT, *PRECISIONS):
            self.precision.addItem(PRECISION_TITLES.get(name, name), name)
        self.precision.setCurrentIndex(max(self.precision.findData(settings.precision), 0))
        self.precision.setToolTip(PRECISION_TIP)
        self.threads = QSpinBox()
        self.threads.setRange(0, MAX_THREADS)
        self.threads.setSpecialValueText("automatic")
        self.threads.setValue(settings.threads)
        self.cache = QSpinBox()
        self.cache.setRange(0, MAX_CACHE_MB)
        self.cache.setSuffix(" MB")
        self.cache.setValue(settings.cache_mb)
        self.overlap = QComboBox()
        self.overlap.addItem("New masks overwrite other labels", OverlapRule.OVERWRITE.value)
        self.overlap.addItem("New masks only fill background", OverlapRule.BACKGROUND.value)
        self.overlap.setCurrentIndex(max(self.overlap.findData(settings.overlap), 0))
        form = QFormLayout(self)
        form.addRow("Model", self.model)
        form.addRow("Runtime", self.runtime)
        form.addRow("Precision", self.precision)
        form.addRow("CPU threads", self.threads)
        form.addRow("Embedding cache", self.cache)
        form.addRow("Overlap", self.overlap)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def result_settings(self) -> AppSettings:
        return AppSettings(
            model=str(self.model.currentData()),
            runtime=str(self.runtime.currentData()),
            precision=str(self.precision.currentData()),
            threads=self.threads.value(),
            cache_mb=self.cache.value(),
            overlap=str(self.overlap.currentData()),
        )
