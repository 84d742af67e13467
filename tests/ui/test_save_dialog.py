"""Saving from the window: a file name typed without an extension never silently replaces an existing file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PyQt6.QtWidgets import QFileDialog

from medsam_desktop.io import read_labels
from medsam_desktop.ui import dialogs


def _volume_file(tmp_path: Path) -> Path:
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 30, 40), np.int16)), str(path))
    return path


def _labelled_window(make_window, tmp_path: Path):
    window = make_window()
    assert window.open_path_and_wait(_volume_file(tmp_path))
    mask = np.zeros((30, 40), bool)
    mask[5:15, 5:25] = True
    window.session.apply_mask(1, mask)
    return window


def test_typed_name_without_extension_asks_before_replacing_an_existing_file(
    qtbot, make_window, tmp_path, monkeypatch
) -> None:
    window = _labelled_window(make_window, tmp_path)
    existing = tmp_path / "labels.nii.gz"
    existing.write_bytes(b"a colleague's earlier segmentation")
    typed = str(tmp_path / "labels")  # the dialog confirmed "labels", which does not exist
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (typed, "NIfTI (*.nii.gz *.nii)"))
    asked: list[Path] = []
    answer = False

    def ask(parent, path: Path) -> bool:
        asked.append(Path(path))
        return answer

    monkeypatch.setattr(dialogs, "ask_overwrite", ask, raising=False)

    assert not window.file_actions.save_dialog()
    assert existing.read_bytes() == b"a colleague's earlier segmentation"
    assert asked == [existing] and window.session.dirty

    answer = True
    assert window.file_actions.save_dialog()
    np.testing.assert_array_equal(read_labels(existing, window.session.volume), window.session.labels)


def test_typed_name_without_extension_follows_the_chosen_png_filter(qtbot, make_window, tmp_path, monkeypatch) -> None:
    from PIL import Image

    src = tmp_path / "pic.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(src)
    window = make_window()
    assert window.open_path_and_wait(src)
    mask = np.zeros((30, 40), bool)
    mask[5:15, 5:25] = True
    window.session.apply_mask(0, mask)
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "pic_mask"), "PNG (*.png)"))
    assert window.file_actions.save_dialog()
    assert (tmp_path / "pic_mask.png").is_file() and not (tmp_path / "pic_mask.nii.gz").exists()
