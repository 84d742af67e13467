"""The click path's trainer (``training/train_clicks.py``) on a tiny synthetic click dataset: it trains, keeps the
best checkpoint in the click format, ``--init-from`` continues from a click checkpoint instead of the box
decoder, ``heldout_clicks.py`` scores a checkpoint as the trainer's validation does, and ``average_clicks.py`` averages
checkpoints and scores the average the same way."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from medsam_desktop.model_files import ModelNotAvailableError, student_checkpoint_path

pytest.importorskip("torch")
train_clicks = pytest.importorskip("training.train_clicks")


def _write_items(folder: Path) -> None:
    """Three slices in ``click_data.py``'s format: two to train on, one to validate (a disc on each)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:256, :256]
    for i, split in enumerate(("train", "train", "val")):
        mask = (yy - 100 - 10 * i) ** 2 + (xx - 120) ** 2 <= 40**2
        np.savez(
            folder / f"item{i}.npz", embedding=rng.normal(0, 0.3, (256, 64, 64)).astype(np.float16),
            masks=np.packbits(mask.reshape(1, -1), axis=1), k=1, h=256, w=256, modality="ct", split=split,
            target="teacher",
        )  # fmt: skip


def _start_val(caplog: pytest.LogCaptureFixture) -> float:
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("start: val"))
    return float(line.split()[2].rstrip(","))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The synthetic click data, for tests that run the trainer (they need the bundled student)."""
    try:
        student_checkpoint_path()
    except ModelNotAvailableError:
        pytest.skip("the bundled student is not present")
    folder = tmp_path / "data"
    _write_items(folder)
    return folder


def test_init_from_continues_from_a_click_checkpoint(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data", str(data), "--threads", "1", "--batch-size", "2", "--val-items", "1", "--lr", "1e-3"]
    with caplog.at_level(logging.INFO):
        assert train_clicks.main([*common, "--out", str(tmp_path / "a"), "--minutes", "0.15", "--val-every", "3"]) == 0
    first_start = _start_val(caplog)
    stop = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped at step"))
    best_val = float(stop.rsplit(" ", 1)[1])
    best = tmp_path / "a" / "best.pt"
    assert best.is_file()
    import csv

    from training.trainer import STEP_FIELDS

    with open(tmp_path / "a" / "log.csv") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == STEP_FIELDS and [int(r[0]) for r in rows[1:]] == list(range(1, len(rows)))
    assert all((r[4] != "") == (int(r[0]) % 3 == 0 or r is rows[-1]) for r in rows[1:])  # val on its steps only
    from medsam_desktop.model.click_decoder import load_click_decoder

    trained = load_click_decoder(best)  # the click format, strictly loadable
    caplog.clear()
    with caplog.at_level(logging.INFO):
        argv = [*common, "--out", str(tmp_path / "b"), "--minutes", "0.02", "--init-from", str(best)]
        assert train_clicks.main(argv) == 0
    assert any("initialised from" in r.getMessage() for r in caplog.records)
    second_start = _start_val(caplog)
    assert best_val < first_start  # the first run learned something...
    assert second_start == pytest.approx(best_val, abs=2e-4)  # ...and the second starts where its best was
    assert trained.training is False  # loaded fused for inference; the trainer puts its copy in train mode
    from training import heldout_clicks

    capsys.readouterr()
    assert heldout_clicks.main(["--data", str(data), "--threads", "1", str(best)]) == 0
    mean_row = next(line for line in capsys.readouterr().out.splitlines() if "mean over modalities" in line)
    dscs = [float(c.strip(" *")) for c in mean_row.split("|")[3:-1]]
    assert len(dscs) == 6 and 1 - np.mean(dscs[1:]) == pytest.approx(best_val, abs=2e-4)  # the trainer's score


def test_tight_share_gives_the_challenge_s_tight_boxes_and_costs_no_draw_at_zero() -> None:
    from training.labelled_data import perturbed_box

    mask = np.zeros((256, 256), bool)
    mask[100:120, 50:90] = True
    tight = np.array([50, 100, 89, 119], np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(train_clicks.start_box(mask, rng, 256, 256, tight_share=1.0), tight)
    boxes = [train_clicks.start_box(mask, rng, 256, 256, tight_share=0.5) for _ in range(400)]
    share = np.mean([np.array_equal(b, tight) for b in boxes])
    assert 0.4 < share < 0.6  # a perturbed box is tight only when all four draws are 0: (1/6)^4
    # at 0 the stream is the perturbed box's own: runs without the option draw what they drew before
    a = train_clicks.start_box(mask, np.random.default_rng(7), 256, 256)
    np.testing.assert_array_equal(a, perturbed_box(mask, np.random.default_rng(7), (256, 256), shift=5))


def test_size_power_draws_small_objects_more_often_and_costs_no_draw_at_zero() -> None:
    masks = np.zeros((2, 256, 256), bool)
    masks[0, :10, :10] = True  # 100 px
    masks[1, :100, :100] = True  # 10,000 px
    rng = np.random.default_rng(0)
    small = np.mean([train_clicks.pick_mask(masks, rng, 0.5).sum() == 100 for _ in range(2000)])
    assert 0.88 < small < 0.94  # area**-0.5: 1/10 against 1/100, i.e. 10/11 = 0.909
    uniform = np.mean([train_clicks.pick_mask(masks, rng).sum() == 100 for _ in range(2000)])
    assert 0.45 < uniform < 0.55
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(train_clicks.pick_mask(masks, a), masks[b.integers(2)])
    assert a.random() == b.random()  # at 0 the stream is the one runs without the option drew


def test_a_tight_share_run_is_validated_on_perturbed_and_on_tight_boxes(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsam_desktop.core.inference.boxes import mask_bbox

    used: list[tuple[float, bool]] = []
    real = train_clicks.start_box

    def recorded(mask, rng, h, w, tight_share=0.0):
        box = real(mask, rng, h, w, tight_share)
        used.append((tight_share, bool(np.array_equal(box, mask_bbox(mask)))))
        return box

    monkeypatch.setattr(train_clicks, "start_box", recorded)
    argv = ["--data", str(data), "--out", str(tmp_path / "t"), "--threads", "1", "--batch-size", "1",
            "--val-items", "1", "--minutes", "0.001", "--tight-share", "0.5"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert train_clicks.main(argv) == 0
    messages = [r.getMessage() for r in caplog.records]
    perturbed = next(m for m in messages if m.startswith("perturbed boxes: DSC box"))
    tight = next(m for m in messages if m.startswith("tight boxes: DSC box"))
    assert perturbed.split(": ", 1)[1] != tight.split(": ", 1)[1]  # two different validations...
    assert used[:2] == [(0.0, False), (1.0, True)]  # ...the first from a grown box, the second from the tight one
    values = [1 - np.mean([float(v) for v in m.split("clicks ")[1].split()]) for m in (perturbed, tight)]
    assert _start_val(caplog) == pytest.approx(np.mean(values), abs=1e-4)  # the run's value: the mean of both


def test_average_clicks_writes_the_weighted_mean_of_the_checkpoints_with_its_own_validation(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from medsam_desktop.model.checkpoint import load_checkpoint, save_checkpoint_state, sha256_of
    from medsam_desktop.model.click_decoder import CLICK_ARCH, ClickDecoder
    from training import average_clicks

    student = student_checkpoint_path()
    base = ClickDecoder.from_model(load_checkpoint(student)).state_dict()
    config = {"arch": CLICK_ARCH, "student_sha256": sha256_of(student), "max_points": 8, "step": 7}
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_checkpoint_state(base, a, config)
    moved = {k: v + 0.01 if v.is_floating_point() else v for k, v in base.items()}
    save_checkpoint_state(moved, b, config)
    out = tmp_path / "soup.pt"
    with caplog.at_level(logging.INFO):
        argv = [str(a), str(b), "--weights", "0.25", "0.75", "--out", str(out), "--data", str(data), "--val-items", "1"]
        assert average_clicks.main([*argv, "--threads", "1"]) == 0
    soup = torch.load(out, map_location="cpu", weights_only=True)
    key = next(k for k, v in base.items() if v.is_floating_point())
    torch.testing.assert_close(soup["model"][key], base[key] + 0.0075, rtol=0, atol=1e-6)
    assert soup["config"]["made"] == "weight average 0.25 x a.pt + 0.75 x b.pt" and soup["config"]["step"] == 7
    messages = [r.getMessage() for r in caplog.records]
    curves = [m for m in messages if m.startswith(("perturbed boxes", "tight boxes"))]
    values = [1 - np.mean([float(v) for v in m.split("clicks ")[1].split()]) for m in curves]
    assert len(values) == 2 and soup["config"]["val_1_minus_dsc"] == pytest.approx(np.mean(values), abs=1e-4)
    # unscored, the average carries no validation value of its inputs (the card then says "not scored")
    save_checkpoint_state(base, b, {**config, "val_1_minus_dsc": 0.05})
    unscored = tmp_path / "unscored.pt"
    assert average_clicks.main([str(a), str(b), "--out", str(unscored), "--made", "two runs"]) == 0
    made = torch.load(unscored, map_location="cpu", weights_only=True)["config"]
    assert made["made"] == "two runs" and "val_1_minus_dsc" not in made
    from training.export_clicks import validation_line

    assert validation_line(made.get("val_1_minus_dsc")) == "validation not scored"
    assert validation_line(0.0986).startswith("validation 1 - mean DSC over clicks 1-5 0.0986")
    save_checkpoint_state(base, b, {**config, "student_sha256": "0" * 64})
    with pytest.raises(SystemExit, match="different students"):
        average_clicks.main([str(a), str(b), "--out", str(tmp_path / "x.pt")])
