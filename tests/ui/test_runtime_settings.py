"""Runtime and precision in the app: persisted settings, the dialog, rebuilding the backend, the fallback line."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsam_desktop.core.backends import DEFAULT_PRECISION, DEFAULT_RUNTIME


def _volume(tmp_path: Path) -> Path:
    arr = np.random.default_rng(0).integers(-1000, 1000, size=(5, 40, 50)).astype(np.int16)
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


def test_settings_roundtrip_runtime_and_precision(store) -> None:
    from medsam_desktop.ui.settings_dialog import AppSettings

    assert (AppSettings.load(store).runtime, AppSettings.load(store).precision) == (DEFAULT_RUNTIME, DEFAULT_PRECISION)
    AppSettings(model="auto", threads=2, runtime="openvino", precision="bf16").save(store)
    loaded = AppSettings.load(store)
    assert (loaded.runtime, loaded.precision, loaded.threads) == ("openvino", "bf16", 2)
    store.setValue("model/runtime", "tensorrt")  # unknown (e.g. written by a newer version): defaults
    assert AppSettings.load(store) == AppSettings()


def test_dialog_offers_and_returns_runtime_and_precision(qtbot) -> None:
    from medsam_desktop.ui.settings_dialog import AppSettings, SettingsDialog

    dialog = SettingsDialog(AppSettings(runtime="onnxruntime", precision="auto"))
    qtbot.addWidget(dialog)
    assert [dialog.runtime.itemText(i) for i in range(dialog.runtime.count())] == [
        "Default (OpenVINO with the shipped files, else PyTorch)",
        "PyTorch",
        "OpenVINO",
        "ONNX Runtime",
    ]
    assert [dialog.precision.itemData(i) for i in range(dialog.precision.count())] == [
        "default", "auto", "fp32", "bf16", "int8",
    ]  # fmt: skip
    assert dialog.runtime.itemData(0) == dialog.precision.itemData(0) == "default"
    assert "OpenVINO only" in dialog.precision.itemText(dialog.precision.findData("int8"))
    assert (dialog.runtime.currentData(), dialog.precision.currentData()) == ("onnxruntime", "auto")
    dialog.runtime.setCurrentIndex(dialog.runtime.findData("openvino"))
    dialog.precision.setCurrentIndex(dialog.precision.findData("bf16"))
    result = dialog.result_settings()
    assert (result.runtime, result.precision) == ("openvino", "bf16")
    dialog.precision.setCurrentIndex(dialog.precision.findData("int8"))
    assert dialog.result_settings().precision == "int8"


def test_dialog_lists_only_the_runtimes_installed(qtbot, monkeypatch) -> None:
    """The packaged app has OpenVINO only: PyTorch and ONNX Runtime are not offered there."""
    from medsam_desktop.ui import settings_dialog
    from medsam_desktop.ui.settings_dialog import AppSettings, SettingsDialog

    monkeypatch.setattr(settings_dialog, "runtime_installed", lambda name: name == "openvino")
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    assert [dialog.runtime.itemData(i) for i in range(dialog.runtime.count())] == ["default", "openvino"]


def test_settings_saved_with_the_old_defaults_load_as_default(tmp_path) -> None:
    """Before session 7 every save stored torch/auto, the defaults then: they are not a choice, they load as default;
    a choice saved since then is kept."""
    from PyQt6.QtCore import QSettings

    from medsam_desktop.ui.settings_dialog import AppSettings

    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    store.setValue("model/runtime", "torch")
    store.setValue("model/precision", "auto")
    assert (AppSettings.load(store).runtime, AppSettings.load(store).precision) == ("default", "default")
    AppSettings(runtime="torch", precision="auto").save(store)
    assert (AppSettings.load(store).runtime, AppSettings.load(store).precision) == ("torch", "auto")


def test_runtime_change_rebuilds_backend_and_shows_fallback_once(
    qtbot, fake, make_window, tmp_path, monkeypatch, errors
) -> None:
    from medsam_desktop.ui import main_window
    from medsam_desktop.ui.settings_dialog import AppSettings

    built: list[tuple[str, int, str, str, bool]] = []
    backends: list[object] = []

    def factory_for(model: str, threads: int, runtime: str, precision: str):  # stands in for default_backend_factory
        def factory() -> object:
            built.append((model, threads, runtime, precision, threading.current_thread() is threading.main_thread()))
            backend = fake()
            backend.name = f"fake+{runtime}+{precision}"
            backend.fallback_reason = "OpenVINO is not installed: using PyTorch" if runtime == "openvino" else None
            backends.append(backend)
            return backend

        return factory

    monkeypatch.setattr(main_window, "default_backend_factory", factory_for)
    window = make_window()
    window._custom_factory = None  # as in the real app
    window.apply_settings(AppSettings(model="auto", runtime="onnxruntime", precision="fp32"))
    window.open_path_and_wait(_volume(tmp_path))
    qtbot.waitUntil(lambda: len(window.worker.cache) == 1, timeout=5000)
    assert built == [("auto", 0, "onnxruntime", "fp32", False)]
    # the label follows the worker's signal, which may arrive after the cache entry: wait for it
    qtbot.waitUntil(lambda: window.model_label.text() == "model: fake+onnxruntime+fp32", timeout=3000)

    messages: list[str] = []
    status = window.statusBar()
    status.messageChanged.connect(lambda text: messages.append(text) if text else None)
    try:
        _rebuilds(qtbot, window, built, messages, errors)
    finally:  # the status message times out later: no Python slot may outlive the test's window
        status.messageChanged.disconnect()


def _rebuilds(
    qtbot, window, built: list[tuple[str, int, str, str, bool]], messages: list[str], errors: list[str]
) -> None:
    from medsam_desktop.ui.settings_dialog import AppSettings

    window.apply_settings(AppSettings(model="auto", runtime="openvino", precision="bf16"))
    assert len(window.worker.cache) == 0  # the old backend's embeddings are gone at once
    window.worker.encode(window.view.current)
    qtbot.waitUntil(lambda: len(built) == 2 and len(window.worker.cache) == 1, timeout=5000)
    assert built[1] == ("auto", 0, "openvino", "bf16", False)  # built on the worker thread, settings passed through
    qtbot.waitUntil(lambda: "using PyTorch" in window.model_label.text(), timeout=3000)
    assert window.model_label.text() == "model: fake+openvino+bf16 — OpenVINO is not installed: using PyTorch"
    assert messages.count("OpenVINO is not installed: using PyTorch") == 1 and errors == []  # no dialog
    assert window.settings.runtime == "openvino" and AppSettings.load(window.store).precision == "bf16"

    # with an exported runtime the threads are fixed at compile time: a threads change rebuilds too
    window.apply_settings(AppSettings(model="auto", threads=1, runtime="openvino", precision="bf16"))
    window.worker.encode(window.view.current)
    qtbot.waitUntil(lambda: len(built) == 3, timeout=5000)
    assert built[2] == ("auto", 1, "openvino", "bf16", False)
    qtbot.waitUntil(lambda: "using PyTorch" in window.model_label.text(), timeout=3000)
    assert window.model_label.text().count("using PyTorch") == 1  # one line per build, never stacked up
    assert messages.count("OpenVINO is not installed: using PyTorch") <= 2 and errors == []


def test_default_factory_passes_runtime_and_precision(monkeypatch) -> None:
    from medsam_desktop.core import backends as backend
    from medsam_desktop.ui.worker import default_backend_factory

    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(backend, "load_backend", lambda name, **kw: calls.append((name, kw)) or "backend")
    assert default_backend_factory("litemedsam", 3, "openvino", "bf16")() == "backend"
    assert calls == [("litemedsam", {"threads": 3, "precision": "bf16", "runtime": "openvino"})]
    default_backend_factory("litemedsam")()
    assert calls[-1][1] == {"threads": None, "precision": DEFAULT_PRECISION, "runtime": DEFAULT_RUNTIME}
