"""Stage-1 teacher training: labelled samples, a short tiny-config run, resume, and the distill hand-over."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_labelled import write_labelled_folder

from medsam_desktop.core.inference.boxes import mask_bbox
from medsam_desktop.model import load_checkpoint
from medsam_desktop.model.swin import SwinEncoder
from training import train_teacher
from training.labelled_data import (
    EvalDataError,
    LabelledSlices,
    RankSampler,
    find_cases,
    flip_sample,
    perturbed_box,
    split_cases,
)
from training.teacher_cache import load_teacher_spec

TRAIN_ARGS = [
    "--encoder-config",
    "tiny",
    "--batch-size",
    "2",
    "--val-every",
    "10",
    "--val-items",
    "4",
    "--threads",
    "1",
    "--seed",
    "0",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled_folder(tmp_path_factory.mktemp("labelled"))


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 steps of the tiny config (the run every test below inspects)."""
    out = tmp_path_factory.mktemp("teacher_run")
    threads = torch.get_num_threads()
    try:
        assert train_teacher.main(["--data", str(data_dir), "--out", str(out), "--max-steps", "30", *TRAIN_ARGS]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def _log_rows(path: Path) -> list[dict[str, str]]:
    with (path / "log.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_cases_found_and_eval_never_opened(data_dir: Path) -> None:
    cases = find_cases([data_dir])
    names = [c.name for c in cases]
    assert len(cases) == 7 and not any("secret" in n for n in names)
    assert sum(c.imgs == c.gts for c in cases) == 3  # single-file 3D cases; 2D through imgs/ + gts/
    with pytest.raises(EvalDataError):
        find_cases([data_dir / "eval"])
    train, val = split_cases(cases, 0.05)
    assert len(val) >= 1 and len(train) + len(val) == 7 and not set(train) & set(val)


def test_eval_needs_the_smoke_test_flag(data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(EvalDataError):
        train_teacher.main(["--data", str(data_dir / "eval"), "--out", str(tmp_path), *TRAIN_ARGS])
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit, match="no labelled training cases"):
        train_teacher.main(
            ["--data", str(data_dir / "eval"), "--out", str(tmp_path), "--allow-eval-for-smoke-test", *TRAIN_ARGS]
        )  # the eval file is not an npz: listed, refused, never trained on
    assert "MUST NOT be used for shipping" in caplog.text


def test_samples_in_model_frame(data_dir: Path) -> None:
    cases = find_cases([data_dir])
    ds = LabelledSlices(cases)
    for i, case in enumerate(cases):
        content = (192, 256) if case.name.startswith("2D") else (256, 205)  # 96x128 and 80x64 slices
        for seed in range(4):
            s = ds[(i, seed)]
            img, mask, box = s["image"].numpy(), s["mask"][0].numpy() > 0, s["box"].numpy()
            assert img.shape == (3, 256, 256) and img.min() >= 0 and img.max() <= 1
            assert s["mask"].shape == (1, 256, 256) and mask.any()
            h, w = content
            assert not mask[h:].any() and not mask[:, w:].any() and not img[:, h:].any() and not img[:, :, w:].any()
            bb = mask_bbox(mask)
            assert np.all(box[:2] <= bb[:2]) and np.all(box[2:] >= bb[2:])
            assert np.all(bb[:2] - box[:2] <= 5) and np.all(box[2:] - bb[2:] <= 5)
            assert box[2] <= w - 1 and box[3] <= h - 1
    again = ds[(0, 3)]
    assert torch.equal(again["image"], ds[(0, 3)]["image"]) and torch.equal(again["box"], ds[(0, 3)]["box"])


def test_flips_move_image_mask_and_box_together() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((256, 256), dtype=bool)
    mask[20:40, 30:90] = True
    image = np.zeros((3, 256, 256), dtype=np.float32)
    image[:, :200, :150] = rng.random((3, 200, 150))
    box = perturbed_box(mask, rng, (200, 150), shift=0)
    for hf, vf in [(True, False), (False, True), (True, True)]:
        im2, m2, b2 = flip_sample(image, mask, box, (200, 150), hf, vf)
        assert np.array_equal(b2, mask_bbox(m2))  # a tight box stays tight
        assert not m2[200:].any() and not m2[:, 150:].any() and not im2[:, 200:].any()  # padding stays put
        assert im2[0, 199 - 20 if vf else 20, 149 - 30 if hf else 30] == image[0, 20, 30]


def test_rank_sampler_shards_disjointly() -> None:
    a, b = RankSampler(8, 2, 0, 2, seed=1), RankSampler(8, 2, 1, 2, seed=1)
    ia, ib = [i for i, _ in a], [i for i, _ in b]
    assert len(ia) == len(ib) == 4 and sorted(ia + ib) == list(range(8))
    small = RankSampler(3, 4, 1, 2)  # fewer cases than a global batch: still whole batches
    assert len(list(small)) == 4


def test_thirty_steps_decrease_the_loss(trained: Path) -> None:
    rows = _log_rows(trained)
    loss = {int(r["step"]): float(r["train_loss"]) for r in rows}
    assert set(loss) >= {10, 20, 30}
    assert loss[30] < loss[10], loss  # mean of steps 21-30 vs steps 1-10
    assert all(np.isfinite(float(r["val_loss"])) for r in rows if r["val_loss"])


def test_best_checkpoint_is_a_distill_teacher(trained: Path) -> None:
    best = trained / "best.pt"
    model = load_checkpoint(best)
    assert isinstance(model.image_encoder, SwinEncoder)
    cfg = torch.load(best, map_location="cpu", weights_only=True)["config"]
    assert cfg["arch"] == "swin_tiny_test" and cfg["step"] in (10, 20, 30)
    teacher, tag = load_teacher_spec(str(best))
    assert tag.startswith("best-") and len(tag) == len("best-") + 8
    with torch.inference_mode():
        emb = teacher.encode(torch.rand(1, 3, 256, 256))
    assert emb.shape == (1, 256, 64, 64)


def test_resume_continues_the_step_count(trained: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]
    assert before["step"] == 30
    threads = torch.get_num_threads()
    try:
        train_teacher.main(["--data", str(data_dir), "--out", str(out), "--max-steps", "32", "--resume", *TRAIN_ARGS])
    finally:
        torch.set_num_threads(threads)
    after = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]
    assert after["step"] == 32 and after["seconds"] > before["seconds"]
    steps = [int(r["step"]) for r in _log_rows(out)]
    assert steps[-1] == 32 and steps.count(30) == 1  # appended to the same log


def test_unlabelled_case_is_skipped(data_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "3DBox_CT_empty.npz"
    np.savez_compressed(empty, imgs=np.zeros((2, 32, 32), np.uint8), gts=np.zeros((2, 32, 32), np.uint8))
    cases = find_cases([tmp_path]) + find_cases([data_dir])[:1]
    assert cases[0].imgs == empty
    sample = LabelledSlices(cases)[(0, 0)]  # falls through to the next case
    assert sample["mask"].sum() > 0
