"""distill.py's recipe options: the cosine schedule (the budget fraction, the refusal without a budget, a run
whose logged lr is the warm-up then the cosine, validated at its stop) and gradient accumulation over
micro-batches (the whole batch's gradient and loss, the finite-only update, the same weights from the CLI)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from training import distill
from training.trainer import accumulated_step, cosine_lr, optimizer_step


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(4, 2, 1))


def _grads(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


def test_micro_batches_give_the_whole_batch_gradient_and_loss() -> None:
    x, y = torch.randn(6, 3, 8, 8), torch.randn(6, 2, 8, 8)
    whole = _net()
    opt = torch.optim.SGD(whole.parameters(), lr=0.0)
    ref = optimizer_step(whole, whole.parameters(), opt, (x,), distill.mse_to(y), clip=0.0, bf16=False)
    split = _net()
    opt = torch.optim.SGD(split.parameters(), lr=0.0)
    micro = [((x[i : i + 4],), distill.mse_to(y[i : i + 4]), len(x[i : i + 4]) / 6) for i in (0, 4)]  # 4 + 2
    got = accumulated_step(split, split.parameters(), opt, micro, clip=0.0, bf16=False)
    assert got.loss == pytest.approx(ref.loss, rel=1e-6) and got.grad_norm == pytest.approx(ref.grad_norm, rel=1e-5)
    for a, b in zip(_grads(whole), _grads(split), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_a_non_finite_micro_batch_blocks_the_whole_update() -> None:
    x, y = torch.randn(4, 3, 8, 8), torch.randn(4, 2, 8, 8)
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    bad = y[2:].clone().fill_(float("nan"))
    micro = [((x[:2],), distill.mse_to(y[:2]), 0.5), ((x[2:],), distill.mse_to(bad), 0.5)]
    assert not accumulated_step(net, net.parameters(), opt, micro, clip=1.0, bf16=False).applied
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, net.parameters(), strict=True))


def test_budget_fraction_is_the_larger_of_steps_and_hours() -> None:
    assert distill.budget_fraction(50, 0.0, 200, 0.0) == 0.25
    assert distill.budget_fraction(0, 1800.0, 0, 1.0) == 0.5
    assert distill.budget_fraction(50, 2700.0, 200, 1.0) == 0.75  # hours run out first
    assert distill.budget_fraction(300, 0.0, 200, 0.0) == 1.0


def test_the_remaining_budget_and_the_resume_check() -> None:
    assert distill.remaining_hours(1.5, 1800.0) == 1.0 and distill.remaining_hours(0.5, 1800.0) == 0.0
    assert distill.resume_mismatch({"teacher": "t", "schedule": "cosine"}, "t", "cosine") is None
    assert distill.resume_mismatch({"teacher": "t"}, "t", "plateau") is None  # a run from before the option
    assert "--schedule cosine, not plateau" in distill.resume_mismatch(
        {"teacher": "t", "schedule": "cosine"}, "t", "plateau"
    )
    assert "teacher u" in distill.resume_mismatch({"teacher": "u", "schedule": "cosine"}, "t", "cosine")


def test_cosine_needs_a_budget(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        distill.parse_args(["--data", str(tmp_path), "--out", str(tmp_path), "--schedule", "cosine"])


def _cli_data(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny prepared folder with its teacher cache, and the teacher checkpoint it was cached with."""
    from test_flips import _filled_cache

    from medsam_desktop.model import build_model, save_checkpoint
    from medsam_desktop.model.checkpoint import sha256_of

    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint(build_model("swin_tiny_test"), teacher, "swin_tiny_test")
    data, *_ = _filled_cache(tmp_path, f"teacher-{sha256_of(teacher)[:8]}")
    return data, teacher


@pytest.mark.slow
def test_cosine_run_logs_the_schedule_and_validates_at_its_stop(tmp_path: Path) -> None:
    data, teacher = _cli_data(tmp_path)
    out = tmp_path / "run"
    args = ["--data", str(data), "--out", str(out), "--teacher", str(teacher), "--batch-size", "2",
            "--max-steps", "20", "--val-every", "100", "--threads", "1", "--lr", "1e-3",
            "--schedule", "cosine", "--warmup", "15"]  # fmt: skip
    assert distill.main(args) == 0
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    logged = {int(r["step"]): float(r["lr"]) for r in rows}
    # the lr in a row is the one step N was taken with: cosine_lr at step index N - 1, fraction (N - 1) / 20
    assert logged[10] == pytest.approx(
        1e-3 * 10 / 15 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * 9 / 20))), rel=1e-3
    )
    assert logged[20] == pytest.approx(cosine_lr(1e-3, 19, 19 / 20, 15), rel=1e-3)
    assert logged[20] < 0.05 * 1e-3
    assert rows[-1]["step"] == "20" and rows[-1]["val_mse"]  # validated at the stop although val_every is 100
    assert (out / "best.pt").is_file()
    with pytest.raises(SystemExit, match="--schedule cosine, not plateau"):  # another schedule cannot continue it
        distill.main([a for a in args if a not in ("--schedule", "cosine")] + ["--resume"])
    done = [*args, "--resume", "--max-hours", "1e-9"]  # its time budget is spent: nothing more is trained
    assert distill.main(done) == 0
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]["step"] == 20


@pytest.mark.slow
def test_micro_batch_cli_step_matches_the_whole_batch(tmp_path: Path) -> None:
    """With BatchNorm frozen and no clip, one step of 4 samples as 2 + 2 gives the gradient one step of 4 gives:
    Adam's first moment after one step is 0.1 x the gradient, so a wrong scale or a lost sample shows."""
    data, teacher = _cli_data(tmp_path)
    weights, moments = [], []
    for name, extra in (("whole", []), ("micro", ["--micro-batch", "2"])):
        out = tmp_path / name
        args = ["--data", str(data), "--out", str(out), "--teacher", str(teacher), "--batch-size", "4",
                "--max-steps", "1", "--val-every", "100", "--threads", "1", "--freeze-bn", "--seed", "3",
                "--clip", "0"]  # fmt: skip
        assert distill.main([*args, *extra]) == 0
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        assert state["optimizer"]["state"], "the step was not applied"
        weights.append(state["model"])
        moments.append([v["exp_avg"] for _, v in sorted(state["optimizer"]["state"].items())])
    for a, b in zip(*moments, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-9)
    assert sum(float(a.abs().sum()) for a in moments[0]) > 0
    moved = 0
    for key, value in weights[0].items():
        if value.is_floating_point():
            # Adam's first step is ~lr (5e-3) x the gradient's sign: a wrong gradient moves weights by ~1e-3
            torch.testing.assert_close(weights[1][key], value, rtol=1e-3, atol=2e-5)
            moved += 1
    assert moved > 100
