"""Qt-free helpers of the window: anatomical names of slice directions, recent files by resolved path, where the
file dialogs start."""

from __future__ import annotations

import sys
from pathlib import Path

from medsam_desktop.core.document.anatomy import slice_directions
from medsam_desktop.core.document.user_folders import add_recent, dedupe_recent, save_start, start_folder

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_slice_directions_follow_the_direction_matrix() -> None:
    assert slice_directions(IDENTITY, "axial") == ("inferior", "superior")
    assert slice_directions(IDENTITY, "coronal") == ("anterior", "posterior")
    assert slice_directions(IDENTITY, "sagittal") == ("right", "left")
    head_first = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # z index grows towards the feet
    assert slice_directions(head_first, "axial") == ("superior", "inferior")
    oblique = (1.0, 0.0, 0.0, 0.0, 0.7071, -0.7071, 0.0, 0.7071, 0.7071)
    assert slice_directions(oblique, "axial") is None
    assert slice_directions((1.0, 0.0, 0.0, 1.0), "axial") is None  # a 2D direction


def test_recent_files_are_kept_by_resolved_path(tmp_path) -> None:
    real = tmp_path / "a.nii.gz"
    real.write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    linked = str(tmp_path / "link" / "a.nii.gz")
    other = str((tmp_path / "b.nii").resolve())
    assert add_recent(str(real), [linked, other], 8) == [str(real.resolve()), other]
    assert add_recent(linked, [], 8) == [str(real.resolve())]
    assert dedupe_recent([linked, str(real)]) == [str(real.resolve())]
    assert len(add_recent("z", [str(tmp_path / f"{i}") for i in range(10)], 8)) == 8


def test_dialogs_start_in_the_chosen_folder_never_in_the_installation(tmp_path) -> None:
    assert start_folder(str(tmp_path), "/home/x") == str(tmp_path)
    assert start_folder(None, "/home/x") == "/home/x"
    assert start_folder(str(tmp_path / "gone"), "/home/x") == "/home/x"
    assert start_folder(sys.prefix, "/home/x") == "/home/x"
    sample = Path(sys.prefix) / "lib" / "pkg" / "CT_seg.nii.gz"
    assert save_start(sample, str(tmp_path), "/home/x") == tmp_path / "CT_seg.nii.gz"
    assert save_start(sample, None, "/home/x") == Path("/home/x") / "CT_seg.nii.gz"
    mine = tmp_path / "case_seg.nii.gz"
    assert save_start(mine, "/elsewhere", "/home/x") == mine  # next to the user's own image, as documented
