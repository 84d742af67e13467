"""The prompt-in-the-loop mask loss: prompts from the teacher's own masks inside the content, a finite loss whose
gradient reaches the student's embedding only (the decoder stays frozen), zero where there is no prompt."""

from __future__ import annotations

import numpy as np
import torch

from medsam_desktop.model import build_model
from training.mask_distill import mask_loss, prompts_from_teacher


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("repvit_m0_6").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_prompts_lie_in_the_content_and_the_loss_trains_the_embedding_only() -> None:
    model = _model()
    teacher = torch.randn(2, 256, 64, 64) * 0.3
    student = (teacher + 0.05 * torch.randn_like(teacher)).requires_grad_(True)
    found = prompts_from_teacher(model, teacher[:1], (200, 150), np.random.default_rng(0), 6)
    assert found is not None
    boxes, logits = found
    assert boxes[:, [0, 2]].max() <= 149 and boxes[:, [1, 3]].max() <= 199 and logits.shape[1:] == (256, 256)
    loss = mask_loss(model, student, teacher, [(200, 150), (256, 256)], np.random.default_rng(0), 6)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_no_prompt_gives_a_zero_loss_that_still_backpropagates() -> None:
    model = _model()
    student = torch.zeros(1, 256, 64, 64, requires_grad=True)
    loss = mask_loss(model, student, torch.zeros(1, 256, 64, 64), [(0, 0)], np.random.default_rng(0), 2)
    assert loss.item() == 0.0
    loss.backward()


def test_distill_cli_with_the_mask_loss_logs_both_terms(tmp_path, caplog) -> None:
    import logging

    from test_flips import _filled_cache

    from medsam_desktop.model import save_checkpoint
    from medsam_desktop.model.checkpoint import sha256_of
    from training import distill

    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint(build_model("swin_tiny_test"), teacher, "swin_tiny_test")
    data, *_ = _filled_cache(tmp_path, f"teacher-{sha256_of(teacher)[:8]}")
    args = ["--data", str(data), "--out", str(tmp_path / "run"), "--teacher", str(teacher), "--batch-size", "2",
            "--max-steps", "10", "--val-every", "100", "--threads", "1", "--mask-loss", "0.01"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="distill"):
        assert distill.main(args) == 0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("step 10 train loss"))
    assert " mse " in line and " mask " in line
