"""Challenge .npz reading/writing: real dev cases plus malformed and malicious archives."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.io import (
    CorruptFileError,
    InvalidNpzError,
    OutputWriteError,
    modality_from_case_name,
    read_challenge_gt,
    read_challenge_npz,
    read_image,
    write_challenge_segs,
)

UNPICKLED: list[str] = []


def _mark_unpickled() -> str:
    UNPICKLED.append("unpickled!")
    return "payload"


class _Canary:
    """Pickles to a call of ``_mark_unpickled``: loading it with pickle enabled would be detected."""

    def __reduce__(self):
        return (_mark_unpickled, ())


# --- real dev cases -------------------------------------------------------------------------------

NAME_MODALITY = {"CT": "CT", "MR": "MR", "US": "US", "X-Ray": "XR", "Mammography": "XR",
                 "Dermoscopy": "RGB", "Endoscopy": "RGB", "Microscopy": "RGB"}  # fmt: skip


@pytest.mark.shared
def test_dev_cases_read_with_consistent_boxes_and_gts(dev_dir: Path) -> None:
    with open(dev_dir / "cases.csv", newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    files = sorted((dev_dir / "imgs").glob("*.npz"))
    assert len(files) == len(rows) > 40
    for path in files:
        case = read_challenge_npz(path)
        row = rows[path.name]
        vol = case.volume
        assert case.name == path.stem
        assert vol.modality == NAME_MODALITY[row["modality"]]
        assert case.boxes.dtype == np.int64 and len(case.boxes) == int(row["n_targets"])
        gts = read_challenge_gt(dev_dir / "gts" / path.name)
        if path.name.startswith("2DBox"):
            h, w = (int(v) for v in row["shape"].split("x")[:2])
            assert vol.array.shape == (1, h, w, 3) and vol.array.dtype == np.uint8
            assert vol.is_2d and case.spacing_zyx is None and not case.is_3d
            assert case.boxes.shape[1] == 4 and gts.shape == (h, w)
        else:
            assert vol.array.ndim == 3 and not vol.is_2d and case.is_3d
            assert case.boxes.shape[1] == 6 and gts.shape == vol.shape_zyx
            assert vol.spacing == tuple(reversed(case.spacing_zyx))
        # README: label i has the tight inclusive bounding box boxes[i - 1]
        for i, box in enumerate(case.boxes, start=1):
            idx = np.nonzero(gts == i)
            if case.is_3d:
                z, y, x = idx
                tight = [x.min(), y.min(), z.min(), x.max(), y.max(), z.max()]
            else:
                y, x = idx
                tight = [x.min(), y.min(), x.max(), y.max()]
            np.testing.assert_array_equal(box, tight, err_msg=f"{path.name} label {i}")


@pytest.mark.shared
def test_dev_3d_ct_spacing_and_read_image(dev_dir: Path) -> None:
    path = dev_dir / "imgs" / "3DBox_CT_totalseg_abdomen-dicom.npz"
    case = read_challenge_npz(path)
    assert case.spacing_zyx == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert case.volume.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert case.volume.shape_zyx == (20, 512, 512) and case.volume.modality == "CT"
    assert read_image(path).shape_zyx == (20, 512, 512)


def test_modality_from_case_name() -> None:
    assert modality_from_case_name("2DBox_X-Ray_covidcxr_1.npz") == "XR"
    assert modality_from_case_name("3DBox_PET_x_1.npz") == "PT"
    assert modality_from_case_name("2DBox_Endoscopy_kvasir_a.npz") == "RGB"
    assert modality_from_case_name("2DBox_OCT_a_b.npz") == "unknown"
    assert modality_from_case_name("case.npz") == "unknown"


# --- synthetic -------------------------------------------------------------------------------------


def test_synthetic_2d_and_3d(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    p2 = tmp_path / "2DBox_US_demo_1.npz"
    np.savez_compressed(p2, imgs=imgs, boxes=np.array([[1, 2, 10, 15], [0, 0, 29, 19]]))
    case = read_challenge_npz(p2)
    assert case.volume.array.shape == (1, 20, 30, 3) and case.volume.modality == "US"
    np.testing.assert_array_equal(case.volume.array[0], imgs)
    np.testing.assert_array_equal(case.boxes, [[1, 2, 10, 15], [0, 0, 29, 19]])

    vol = rng.integers(0, 256, size=(5, 8, 9), dtype=np.uint8)
    p3 = tmp_path / "3DBox_MR_demo_1.npz"
    np.savez_compressed(p3, imgs=vol, boxes=np.array([[1, 2, 0, 8, 7, 4]]), spacing=np.array([3.0, 0.5, 0.6]))
    case = read_challenge_npz(p3)
    assert case.volume.shape_zyx == (5, 8, 9) and case.volume.spacing == (0.6, 0.5, 3.0)
    assert case.volume.spacing_zyx == (3.0, 0.5, 0.6) and case.spacing_zyx == (3.0, 0.5, 0.6)


def test_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "2DBox_CT_evil_1.npz"
    evil = np.array([_Canary()], dtype=object)
    np.savez(path, imgs=np.zeros((4, 4, 3), np.uint8), boxes=evil)
    UNPICKLED.clear()
    with pytest.raises(InvalidNpzError, match="Python objects") as info:
        read_challenge_npz(path)
    assert UNPICKLED == []
    assert "\n" not in str(info.value) and path.name in str(info.value)
    with pytest.raises(InvalidNpzError):
        read_image(path)
    assert UNPICKLED == []

    pickled = tmp_path / "pickle.npz"
    np.save(tmp_path / "tmp.npy", evil, allow_pickle=True)
    (tmp_path / "tmp.npy").rename(pickled)
    with pytest.raises(InvalidNpzError):
        read_challenge_npz(pickled)
    assert UNPICKLED == []


def test_missing_extra_and_malformed_keys(tmp_path: Path) -> None:
    img = np.zeros((10, 12, 3), np.uint8)
    np.savez(tmp_path / "a.npz", imgs=img)
    with pytest.raises(InvalidNpzError, match="missing boxes"):
        read_challenge_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", imgs=img, boxes=np.array([[0, 0, 5, 5]]), secret=np.ones(3))
    with pytest.raises(InvalidNpzError, match="unexpected secret"):
        read_challenge_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", imgs=img, boxes=np.array([[0, 0, 5, 5, 5]]))
    with pytest.raises(InvalidNpzError, match=r"'boxes' must be \(N, 4\)"):
        read_challenge_npz(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", imgs=np.zeros((3, 10, 12), np.uint8), boxes=np.array([[0, 0, 0, 5, 5, 2]]),
             spacing=np.array([1.0, -1.0, 1.0]))  # fmt: skip
    with pytest.raises(InvalidNpzError, match="spacing"):
        read_challenge_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", imgs=np.zeros((3, 10, 12, 2), np.uint8), boxes=np.array([[0, 0, 5, 5]]))
    with pytest.raises(InvalidNpzError, match="imgs"):
        read_challenge_npz(tmp_path / "e.npz")
    np.savez(tmp_path / "g.npz", gts=np.zeros((4, 4), np.float32))
    with pytest.raises(InvalidNpzError, match="integer"):
        read_challenge_gt(tmp_path / "g.npz")


def test_bad_boxes_are_kept_for_their_objects(tmp_path: Path) -> None:
    """Coordinates are not the reader's business: an inverted, outside or NaN box is returned as stored (one bad
    object must not cost the case; it is reported when segmented), NaN boxes as float64."""
    img = np.zeros((10, 12, 3), np.uint8)
    stored = np.array([[0, 0, 50, 5], [8, 8, 2, 2], [3, 9, 11, 9]])
    np.savez(tmp_path / "2DBox_US_odd.npz", imgs=img, boxes=stored)
    case = read_challenge_npz(tmp_path / "2DBox_US_odd.npz")
    assert case.boxes.dtype == np.int64
    np.testing.assert_array_equal(case.boxes, stored)
    np.savez(tmp_path / "3DBox_CT_nan.npz", imgs=np.zeros((3, 10, 12), np.uint8),
             boxes=np.array([[0, 0, 0, 5, 5, 2], [np.nan, 0, 0, 5, 5, 2]]))  # fmt: skip
    case = read_challenge_npz(tmp_path / "3DBox_CT_nan.npz")
    assert case.boxes.dtype == np.float64 and np.isnan(case.boxes[1, 0])
    np.testing.assert_array_equal(case.boxes[0], [0, 0, 0, 5, 5, 2])


def test_damaged_archives(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, imgs=np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8),
                        boxes=np.array([[0, 0, 5, 5]]))  # fmt: skip
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CorruptFileError) as info:
        read_challenge_npz(cut)
    assert "cut.npz" in str(info.value)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        read_challenge_npz(empty)
    assert zipfile.is_zipfile(good)


# --- writing -------------------------------------------------------------------------------------


def test_write_challenge_segs(tmp_path: Path) -> None:
    segs = np.zeros((3, 4, 5), np.int64)
    segs[1, 2, 3] = 2
    out = write_challenge_segs(tmp_path / "3DBox_CT_x.npz", segs, spacing_zyx=(2.0, 0.5, 0.5))
    with np.load(out, allow_pickle=False) as data:
        assert sorted(data.files) == ["segs", "spacing"]
        assert data["segs"].dtype == np.uint8
        np.testing.assert_array_equal(data["segs"], segs)
        np.testing.assert_array_equal(data["spacing"], [2.0, 0.5, 0.5])
    big = np.full((4, 5), 1000)
    out2 = write_challenge_segs(tmp_path / "2DBox_CT_x.npz", big)
    with np.load(out2, allow_pickle=False) as data:
        assert data.files == ["segs"] and data["segs"].dtype == np.uint16 and data["segs"].max() == 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2DBox_CT_x.npz", "3DBox_CT_x.npz"]


def test_write_challenge_segs_failure_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "case.npz"
    write_challenge_segs(target, np.ones((2, 2), np.uint8))
    before = target.read_bytes()

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", explode)
    with pytest.raises(OutputWriteError, match="No space left"):
        write_challenge_segs(target, np.zeros((2, 2), np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]
    with pytest.raises(OutputWriteError):
        write_challenge_segs(tmp_path / "x.npz", np.zeros((2, 2), np.float32))
    with pytest.raises(OutputWriteError, match=r"\.npz"):
        write_challenge_segs(tmp_path / "x.npy", np.zeros((2, 2), np.uint8))


def test_segs_round_trip_and_refusals(tmp_path) -> None:
    from medsam_desktop.io.challenge_npz import read_challenge_segs, write_challenge_segs
    from medsam_desktop.io.errors import InvalidNpzError

    segs = np.zeros((3, 8, 9), np.int32)
    segs[1, 2:5, 3:7] = 2
    path = write_challenge_segs(tmp_path / "case.npz", segs, spacing_zyx=(2.0, 0.8, 0.8))
    back = read_challenge_segs(path)
    assert back.dtype == np.uint8 and np.array_equal(back, segs)
    np.savez(tmp_path / "gts_only.npz", gts=segs)
    with pytest.raises(InvalidNpzError, match="missing segs"):
        read_challenge_segs(tmp_path / "gts_only.npz")
    np.savez(tmp_path / "float.npz", segs=segs.astype(np.float32))
    with pytest.raises(InvalidNpzError, match="'segs' must be an integer"):
        read_challenge_segs(tmp_path / "float.npz")
