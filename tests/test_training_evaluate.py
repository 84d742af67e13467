"""training/evaluate.py's per-label table of 3D cases: the small structures the per-modality means hide."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def test_teacher_agreement_averages_labels_per_case_and_splits_2d_from_3d(tmp_path: Path) -> None:
    from training.evaluate import teacher_agreement

    teacher, student = tmp_path / "teacher", tmp_path / "student"
    teacher.mkdir()
    student.mkdir()
    t2 = np.zeros((10, 10), np.uint8)
    t2[0:4, 0:5] = 1  # 20 px
    t2[6:8, 6:8] = 2  # 4 px
    s2 = t2.copy()
    s2[6:8, 6:8] = 0  # label 2 lost: DSC 0; label 1 kept: DSC 1 -> case 0.5
    write_challenge_segs(teacher / "2DBox_US_a.npz", t2)
    write_challenge_segs(student / "2DBox_US_a.npz", s2)
    write_challenge_segs(teacher / "2DBox_US_b.npz", np.zeros((10, 10), np.uint8))  # both empty: 1.0
    write_challenge_segs(student / "2DBox_US_b.npz", np.zeros((10, 10), np.uint8))
    t3 = np.zeros((3, 8, 8), np.uint8)
    t3[1, 2:6, 2:6] = 1  # 16 voxels
    s3 = np.zeros_like(t3)
    s3[1, 2:6, 2:4] = 1  # 8 of them: DSC 2*8/24
    write_challenge_segs(teacher / "3DBox_CT_c.npz", t3)
    write_challenge_segs(student / "3DBox_CT_c.npz", s3)
    write_challenge_segs(teacher / "2DBox_US_missing.npz", t2)  # no student file: not counted

    agree = teacher_agreement(student, teacher)

    assert agree["2D"] == (0.75, 2)
    assert agree["3D"][1] == 1 and abs(agree["3D"][0] - 2 * 8 / 24) < 1e-9
