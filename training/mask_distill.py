"""Prompt-in-the-loop mask distillation (as EdgeSAM does), added to the embedding MSE of ``distill.py``.

For each training slice, boxes are drawn the way the agreement proxy draws them (``agreement.py``): seeded random
boxes inside the content are decoded from the teacher's embedding, and the tight box around each teacher mask is
the prompt. The frozen decoder (the teacher's, which the student shares) decodes that prompt from both
embeddings; the loss compares the student's logits with the teacher's: binary cross-entropy against the
teacher's probabilities plus a soft Dice, over the content region. Gradients reach the encoder through the
frozen decoder (the single-mask rewrite: exact and differentiable). The targets are computed without gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medsam_desktop.model.single_mask import predict_single_mask
from training.agreement import teacher_prompts

SIDE = 256


def _decode(model: torch.nn.Module, emb: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Embedding (1, 256, 64, 64) + boxes (K, 4) model frame -> logits (K, 256, 256) through the frozen decoder."""
    pe = model.prompt_encoder.get_dense_pe()
    sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
    logits, _ = predict_single_mask(model.mask_decoder, emb, pe, sparse, dense[:1])
    return logits[:, 0]


def prompts_from_teacher(
    model: torch.nn.Module, teacher_emb: torch.Tensor, content: tuple[int, int], rng: np.random.Generator, n: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(boxes (K, 4), teacher logits (K, 256, 256)) for one slice, or None when no teacher mask is big enough."""
    h, w = content
    with torch.no_grad():
        boxes = teacher_prompts(lambda b: _decode(model, teacher_emb, torch.from_numpy(b)).numpy(), h, w, n, rng)
        if not len(boxes):
            return None
        prompts = torch.from_numpy(boxes)
        return prompts, _decode(model, teacher_emb, prompts)


def mask_loss(
    model: torch.nn.Module, student_emb: torch.Tensor, teacher_emb: torch.Tensor, content: list[tuple[int, int]],
    rng: np.random.Generator, boxes_per_slice: int = 2,
) -> torch.Tensor:  # fmt: skip
    """Mean over the batch's prompts of BCE(student logits, sigmoid(teacher logits)) + soft Dice, content only."""
    terms = []
    for i, (h, w) in enumerate(content):
        found = prompts_from_teacher(model, teacher_emb[i : i + 1].float(), (h, w), rng, boxes_per_slice)
        if found is None:
            continue
        prompts, target_logits = found
        pred = _decode(model, student_emb[i : i + 1].float(), prompts)[:, :h, :w]
        target = torch.sigmoid(target_logits[:, :h, :w])
        bce = F.binary_cross_entropy_with_logits(pred, target)
        prob = torch.sigmoid(pred)
        dice = 1 - (2 * (prob * target).sum((1, 2)) + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
        terms.append(bce + dice.mean())
    return torch.stack(terms).mean() if terms else student_emb.sum() * 0.0
