"""``medsam-eval`` end to end: synthetic cases, per-case failures, and the dev set."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.cli.evaluate import main, modality_of
from medsam_desktop.core.evaluation.metrics import evaluate_case


def square_case(shift: int) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((24, 24), np.uint8)
    gt[5:15, 4:14] = 1
    return np.roll(gt, shift, axis=1), gt


def cube_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt = np.zeros((8, 12, 12), np.uint8)
    gt[1:5, 1:5, 1:5] = 1
    gt[2:6, 6:10, 6:10] = 2
    seg = gt.copy()
    seg[gt == 2] = 0
    seg[np.roll(gt == 2, 3, axis=2)] = 2  # 4x4x4 cube shifted 3 voxels (2.4 mm): DSC 2*16/128
    return seg, gt, np.array([2.0, 0.8, 0.8])


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Two 2D CT cases and one 3D MR case (gts/ and segs/)."""
    gts, segs = tmp_path / "gts", tmp_path / "segs"
    gts.mkdir()
    segs.mkdir()
    seg, gt = square_case(0)
    np.savez(gts / "2DBox_CT_a.npz", gts=gt)
    np.savez(segs / "2DBox_CT_a.npz", segs=seg)
    seg, gt = square_case(3)
    np.savez(gts / "2DBox_CT_b.npz", gts=gt)
    np.savez(segs / "2DBox_CT_b.npz", segs=seg)
    seg, gt, spacing = cube_case()
    np.savez(gts / "3DBox_MR_c.npz", gts=gt, spacing=spacing)
    np.savez(segs / "3DBox_MR_c.npz", segs=seg)
    return segs, gts


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def final_line_numbers(stdout: str) -> list[float]:
    last = stdout.strip().splitlines()[-1]
    return [float(x) for x in re.findall(r"(?:DSC|NSD) ([0-9.]+|nan)", last)]


def test_synthetic_cases_csv_and_table(dirs, tmp_path, capsys):
    segs, gts = dirs
    out = tmp_path / "metrics.csv"
    assert main(["-s", str(segs), "-g", str(gts), "--csv", str(out)]) == 0
    captured = capsys.readouterr()
    rows = read_csv(out)
    assert list(rows) == ["2DBox_CT_a.npz", "2DBox_CT_b.npz", "3DBox_MR_c.npz"]
    assert list(next(iter(rows.values()))) == ["name", "modality", "dim", "n_labels", "DSC", "NSD", "seconds"]

    a, b, c = rows.values()
    assert (a["modality"], a["dim"], a["n_labels"]) == ("CT", "2", "1")
    assert float(a["DSC"]) == 1.0 and float(a["NSD"]) == 1.0
    assert float(b["DSC"]) == pytest.approx(0.7, abs=1e-6)  # 10x10 square shifted 3 px
    seg, gt = square_case(3)
    assert float(b["NSD"]) == pytest.approx(evaluate_case(seg, gt).nsd, abs=1e-6)
    assert 0.5 < float(b["NSD"]) < 1.0
    assert (c["modality"], c["dim"], c["n_labels"]) == ("MR", "3", "2")
    assert float(c["DSC"]) == pytest.approx((1.0 + 0.25) / 2, abs=1e-6)
    seg, gt, spacing = cube_case()
    expected_c = evaluate_case(seg, gt, tuple(spacing))
    assert expected_c.nsd_per_label[0] == 1.0 and expected_c.nsd_per_label[1] < 1.0
    assert float(c["NSD"]) == pytest.approx(expected_c.nsd, abs=1e-6)
    assert all(float(r["seconds"]) >= 0 for r in rows.values())

    lines = captured.out.strip().splitlines()
    assert lines[0].split() == ["modality", "cases", "DSC", "NSD"]
    ct = lines[1].split()
    assert ct[:2] == ["CT", "2"] and float(ct[2]) == pytest.approx(0.85, abs=1e-4)
    mr = lines[2].split()
    assert mr[:2] == ["MR", "1"] and float(mr[2]) == pytest.approx(0.625, abs=1e-4)
    mod_dsc, mod_nsd, case_dsc, case_nsd = final_line_numbers(captured.out)
    assert mod_dsc == pytest.approx((0.85 + 0.625) / 2, abs=1e-4)
    assert case_dsc == pytest.approx((1.0 + 0.7 + 0.625) / 3, abs=1e-4)
    nsds = [float(r["NSD"]) for r in rows.values()]
    assert case_nsd == pytest.approx(np.mean(nsds), abs=1e-4)
    assert mod_nsd == pytest.approx((np.mean(nsds[:2]) + nsds[2]) / 2, abs=1e-4)
    assert "Traceback" not in captured.err
    assert "it/s" not in captured.err  # no progress bar when stderr is not a TTY


def test_per_case_failures_keep_the_batch_going(dirs, tmp_path, capsys):
    segs, gts = dirs
    (segs / "2DBox_CT_a.npz").unlink()  # missing seg file
    np.savez(gts / "2DBox_US_d.npz", gts=np.ones((4, 4), np.uint8))
    np.savez(segs / "2DBox_US_d.npz", wrong=np.ones((4, 4), np.uint8))  # missing key
    np.savez(gts / "2DBox_US_e.npz", gts=np.ones((4, 4), np.uint8))
    np.savez(segs / "2DBox_US_e.npz", segs=np.ones((4, 5), np.uint8))  # shape mismatch
    np.savez(gts / "3DBox_CT_f.npz", gts=np.ones((3, 4, 4), np.uint8))  # 3D without spacing
    np.savez(segs / "3DBox_CT_f.npz", segs=np.ones((3, 4, 4), np.uint8))
    np.savez(gts / "2DBox_US_g.npz", gts=np.ones((4, 4), np.uint8))
    np.savez(segs / "2DBox_US_g.npz", segs=np.array([{"x": 1}], dtype=object))  # pickled: refused
    np.savez(gts / "2DBox_US_h.npz", gts=np.ones((4, 4), np.uint8))
    with (segs / "2DBox_US_h.npz").open("wb") as handle:
        np.save(handle, np.ones((4, 4), np.uint8))  # a .npy file under an .npz name
    np.savez(gts / "2DBox_US_i.npz", gts=np.ones((4, 4), np.uint8))
    (segs / "2DBox_US_i.npz").write_bytes(b"PK\x03\x04 not really a zip")  # corrupt
    out = tmp_path / "metrics.csv"
    assert main(["-s", str(segs), "-g", str(gts), "--csv", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert list(read_csv(out)) == ["2DBox_CT_b.npz", "3DBox_MR_c.npz"]
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 7, errors
    assert all(line.startswith("medsam-eval: error: ") for line in errors)
    joined = "\n".join(errors)
    assert "2DBox_CT_a.npz: segmentation file not found" in joined
    assert "2DBox_US_d.npz" in joined and "'segs'" in joined
    assert "2DBox_US_e.npz: shape mismatch" in joined
    assert "3DBox_CT_f.npz" in joined and "spacing" in joined
    assert "2DBox_US_g.npz: cannot read" in joined
    assert "2DBox_US_h.npz: segmentation file 2DBox_US_h.npz is not an .npz archive" in joined
    assert "2DBox_US_i.npz: cannot read" in joined
    assert "Traceback" not in captured.err
    assert "MR" in captured.out  # the table is still printed for the cases that worked


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["-s", str(tmp_path / "nope"), "-g", str(tmp_path)]) == 2
    assert "segmentation directory not found" in capsys.readouterr().err
    assert main(["-s", str(tmp_path), "-g", str(tmp_path)]) == 2  # no .npz files
    assert main(["-g", str(tmp_path)]) == 2  # -s missing: argparse usage error
    assert main(["--help"]) == 0
    assert "SEGS_DIR" in capsys.readouterr().out


def test_modality_from_name():
    assert modality_of("2DBox_X-Ray_covidcxr_41591-2020.npz") == "X-Ray"
    assert modality_of("3DBox_MR_totalseg_abdomen-mr.npz") == "MR"
    assert modality_of("case.npz") == "unknown"


@pytest.mark.shared
def test_dev_set_gts_as_segs_is_perfect(dev_dir, tmp_path, capsys):
    files = sorted((dev_dir / "gts").glob("*.npz"))
    two_d = [p for p in files if p.name.startswith("2D")][:3]
    three_d = sorted((p for p in files if p.name.startswith("3D")), key=lambda p: p.stat().st_size)[:2]
    chosen = two_d + three_d
    if len(chosen) < 2:
        pytest.skip("dev set has too few cases")
    gts, segs = tmp_path / "gts", tmp_path / "segs"
    gts.mkdir()
    segs.mkdir()
    for path in chosen:
        (gts / path.name).symlink_to(path)
        with np.load(path, allow_pickle=False) as data:
            np.savez(segs / path.name, segs=data["gts"])
    out = tmp_path / "dev.csv"
    assert main(["-s", str(segs), "-g", str(gts), "--csv", str(out), "-q"]) == 0
    rows = read_csv(out)
    assert sorted(rows) == sorted(p.name for p in chosen)
    for row in rows.values():
        assert float(row["DSC"]) == 1.0 and float(row["NSD"]) == 1.0, row
        assert int(row["n_labels"]) >= 1
    assert {row["dim"] for row in rows.values()} == {"2", "3"} or not three_d
    assert final_line_numbers(capsys.readouterr().out) == [1.0, 1.0, 1.0, 1.0]
