"""training/evaluate.py's per-label table of 3D cases: the small structures the per-modality means hide."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medsam_desktop.io.challenge_npz import write_challenge_segs
from training.evaluate import per_label_3d


def test_per_label_rows_show_a_lost_small_label(tmp_path: Path) -> None:
    gts = np.zeros((6, 32, 32), np.uint8)
    gts[1:5, 4:20, 4:20] = 1  # large organ: 1024 voxels
    gts[2:4, 25:28, 25:28] = 2  # small vessel: 18 voxels
    (tmp_path / "gts").mkdir()
    np.savez_compressed(tmp_path / "gts" / "3DBox_CT_case.npz", gts=gts)
    np.savez_compressed(tmp_path / "gts" / "2DBox_US_case.npz", gts=gts[0])  # 2D cases are not listed
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    teacher.mkdir()
    student.mkdir()
    write_challenge_segs(teacher / "3DBox_CT_case.npz", gts)
    lost = gts.copy()
    lost[lost == 2] = 0
    lost[1, 4:20, 4:12] = 0  # half of one slice of the organ missed too
    write_challenge_segs(student / "3DBox_CT_case.npz", lost)

    rows = per_label_3d(tmp_path, {"teacher": teacher, "student": student, "absent": tmp_path / "none"})

    assert rows[0] == "| 3D case | label | voxels | teacher DSC | student DSC | absent DSC |"
    assert len(rows) == 4  # header, rule, two labels of the one 3D case
    organ, vessel = rows[2], rows[3]
    assert organ.startswith("| 3DBox_CT_case | 1 | 1024 | 1.000 | ")
    assert float(organ.split("|")[5]) == round(2 * (1024 - 128) / (1024 + 1024 - 128), 3)
    assert vessel == "| 3DBox_CT_case | 2 | 18 | 1.000 | 0.000 | - |"
