"""File dialogs and recent files through the window (offscreen): every dialog starts in the folder the user chose
last (kept in the settings), never in the package folder of a sample; a file reached through a symlink is one
recent file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from PyQt6.QtWidgets import QFileDialog
from window_helpers import synthetic_nifti

from medsam_desktop.ui.main_window import MainWindow


@pytest.fixture
def excepthook(monkeypatch) -> list[BaseException]:
    """Exceptions escaping to Qt (slots, event handlers) are recorded here."""
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda _t, value, _tb: seen.append(value))
    return seen


class _Dialogs:
    """Stands in for QFileDialog: records where each dialog starts and answers what ``answer`` holds."""

    def __init__(self, monkeypatch) -> None:
        self.starts: dict[str, str] = {}
        self.answer = ""
        monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(self._open))
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(self._folder))
        monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(self._save))

    def _open(self, _parent, caption, start, _filter="") -> tuple[str, str]:
        self.starts[caption] = start
        return self.answer, ""

    def _folder(self, _parent, caption, start) -> str:
        self.starts[caption] = start
        return ""

    def _save(self, _parent, caption, start, _filter="") -> tuple[str, str]:
        self.starts[caption] = start
        return "", ""


def _inside_venv(path: str) -> bool:
    p = Path(path).resolve()
    return any(p == Path(r).resolve() or Path(r).resolve() in p.parents for r in (sys.prefix, sys.base_prefix))


@pytest.mark.skipif(importlib.util.find_spec("pydicom") is None, reason="the samples come with pydicom")
def test_dialogs_start_in_the_last_chosen_folder_never_in_a_samples_package(
    qtbot, make_window, tmp_path, monkeypatch, excepthook
) -> None:
    window = make_window()
    dialogs = _Dialogs(monkeypatch)
    with qtbot.waitSignal(window.loader.loaded, timeout=10000):
        assert window.file_actions.open_sample("ct-vertebra")
    assert _inside_venv(str(window.session.volume.source_path))  # the sample lives in pydicom's test files
    window.file_actions.open_dialog()  # cancelled
    window.file_actions.open_dicom_dialog()
    window.file_actions.open_mask_dialog()
    window.file_actions.save_dialog()
    assert len(dialogs.starts) == 4
    for caption, start in dialogs.starts.items():
        assert not _inside_venv(start), (caption, start)
    assert Path(dialogs.starts["Save labels"]).name == "CT_small_seg.nii.gz"

    chosen = tmp_path / "cases"
    chosen.mkdir()
    image = synthetic_nifti(chosen)
    dialogs.answer = str(image)
    window.session.mark_saved()
    with qtbot.waitSignal(window.loader.loaded, timeout=10000):
        window.file_actions.open_dialog()
    dialogs.answer = ""
    with qtbot.waitSignal(window.loader.loaded, timeout=10000):
        # the sample again: the dialogs still start in the chosen folder
        assert window.file_actions.open_sample("mr-small")
    dialogs.starts.clear()
    window.file_actions.open_dialog()
    window.file_actions.open_dicom_dialog()
    window.file_actions.open_mask_dialog()
    window.file_actions.save_dialog()
    folder = str(chosen.resolve())
    assert dialogs.starts["Open image"] == folder
    assert dialogs.starts["Open DICOM folder"] == folder
    assert dialogs.starts["Open mask"] == folder
    assert dialogs.starts["Save labels"] == str(chosen.resolve() / "MR_small_seg.nii.gz")
    window.close()
    again = MainWindow(backend_factory=lambda: None, store=window.store, prefetch=0)  # kept in the settings
    qtbot.addWidget(again)
    dialogs.starts.clear()
    again.file_actions.open_dialog()
    assert dialogs.starts["Open image"] == folder
    again.close()
    assert excepthook == []


def test_a_file_reached_through_a_symlink_is_one_recent_file(qtbot, make_window, tmp_path, excepthook) -> None:
    window = make_window()
    real = synthetic_nifti(tmp_path)
    link_dir = tmp_path / "link"
    link_dir.symlink_to(tmp_path, target_is_directory=True)
    linked = link_dir / real.name
    window.store.setValue("recent/files", [str(linked)])  # as an earlier version stored it: the path as given
    assert window.open_path_and_wait(real)
    window.session.mark_saved()
    assert window.open_path_and_wait(linked)
    window.file_actions.fill_recent_menu()
    assert [a.text() for a in window.recent_menu.actions()] == [str(real.resolve())]
    assert window.file_actions.recent_files() == [str(real.resolve())]
    assert excepthook == []
