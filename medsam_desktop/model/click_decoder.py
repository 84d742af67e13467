"""The click path: SAM's prompt encoder and mask decoder fine-tuned for a box + clicks + the previous mask.

A separate copy of the two networks with its own weights (``*.clicks.pt``): the box-only decoder of
:class:`~medsam_desktop.model.sam.MedSAMLite` is never touched, so a box without clicks is decoded exactly as
before. Everything is in the 256x256 model input frame (x to the right, y down, pixel centres at +0.5 as in
:class:`~medsam_desktop.model.prompt_encoder.PromptEncoder`).

Inputs of :meth:`ClickDecoder.forward` (B prompts; the image batch is B or 1):

- ``embeddings`` (B or 1, 256, 64, 64): the image encoder's output (the student's, computed once per slice);
- ``boxes`` (B, 4) ``[x0, y0, x1, y1]``;
- ``points`` (B, MAX_POINTS, 2) ``(x, y)`` and ``labels`` (B, MAX_POINTS) float: 1 positive, 0 negative,
  -1 an unused slot. The slot count is fixed (training and the exported networks use the same padding), so
  padded calls are what the weights were trained on;
- ``mask_logits`` (B, 1, 256, 256): the previous low-resolution logits (the box-only mask for the first click).

Outputs: logits (B, 1, 256, 256) and IoU estimates (B, 1). The logits are the decoder's own, the next click's mask
prompt. A path with a :class:`~.mask_refiner.MaskRefiner` redraws the mask that is shown from them
(:meth:`ClickDecoder.shown_logits`, given the encoder's input image (B or 1, 3, 256, 256) in [0, 1]); the chain
of clicks never sees the refined logits, so it is the same with and without a refiner.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..model_files import InvalidCheckpointError
from .mask_decoder import MaskDecoder
from .mask_refiner import MaskRefiner
from .prompt_encoder import PromptEncoder
from .single_mask import predict_single_mask

#: point slots of every click call: the latest clicks when there are more (the mask prompt carries the rest)
MAX_POINTS = 8
CLICK_ARCH = "click_decoder"


class ClickDecoder(nn.Module):
    """Box + clicks + previous mask logits -> mask logits (see the module docstring for shapes and frames)."""

    def __init__(
        self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, refiner: MaskRefiner | None = None
    ) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.refiner = refiner

    @classmethod
    def from_model(cls, model: nn.Module) -> ClickDecoder:
        """A click path initialised from a MedSAMLite's prompt encoder and mask decoder (deep copies)."""
        decoder = copy.deepcopy(model.mask_decoder)
        decoder.single_mask_rewrite = False
        return cls(copy.deepcopy(model.prompt_encoder), decoder)

    def forward(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        mask_logits: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = embeddings.dtype
        sparse, dense = self.prompt_encoder(
            points=(points.to(dtype), labels.to(dtype)),
            boxes=boxes.reshape(-1, 4).to(dtype),
            masks=mask_logits.to(dtype),
        )
        # the single-mask rewrite (exact, about half the multiply-adds, differentiable): training and the exported
        # network run the same function
        return predict_single_mask(
            self.mask_decoder, embeddings, self.prompt_encoder.get_dense_pe().to(dtype), sparse.to(dtype),
            dense.to(dtype),
        )  # fmt: skip

    def shown_logits(
        self, image: torch.Tensor | None, logits: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The logits whose mask is shown: ``logits`` (B, 1, 256, 256) redrawn by the refiner from ``image`` and
        the (padded) clicks, or ``logits`` themselves for a path without one."""
        if self.refiner is None:
            return logits
        if image is None:
            raise ValueError("this click path refines with the image: pass image (B or 1, 3, 256, 256)")
        return self.refiner(image, logits, points, labels)

    def fuse(self) -> ClickDecoder:
        """For inference: the grid encoding computed once (the decoder keeps SAM's forward: mask prompts vary)."""
        self.prompt_encoder.fuse()
        return self.eval()


def pad_points(points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P, 2) points and (B, P) labels -> the last MAX_POINTS of them, padded to MAX_POINTS with label -1."""
    points, labels = points[:, -MAX_POINTS:], labels[:, -MAX_POINTS:]
    pad = MAX_POINTS - points.shape[1]
    if pad:
        points = torch.cat([points, points.new_zeros(points.shape[0], pad, 2)], dim=1)
        labels = torch.cat([labels, labels.new_full((labels.shape[0], pad), -1.0)], dim=1)
    return points, labels


def build_click_decoder(refiner_width: int = 0) -> ClickDecoder:
    """An untrained click path with LiteMedSAM's prompt encoder and mask decoder shapes (and, with a
    ``refiner_width``, a :class:`~.mask_refiner.MaskRefiner` of that width)."""
    from .registry import build_mask_decoder, build_prompt_encoder

    refiner = MaskRefiner(refiner_width) if refiner_width else None
    return ClickDecoder(build_prompt_encoder(), build_mask_decoder(), refiner)


def saved_refiner_width(state: dict[str, torch.Tensor]) -> int:
    """The refiner width a click state dict was saved with (0: none)."""
    head = state.get("refiner.head.weight")
    return 0 if head is None else int(head.shape[1])


def load_click_decoder(path: Path) -> ClickDecoder:
    """A click checkpoint (our format, arch ``click_decoder``), loaded strictly with ``weights_only``."""
    from .checkpoint import _torch_load, load_state_into

    path = Path(path)
    obj = _torch_load(path)
    config = obj.get("config") if isinstance(obj, dict) else None
    if not isinstance(config, dict) or config.get("arch") != CLICK_ARCH:
        raise InvalidCheckpointError(f"{path.name} is not a click-path checkpoint")
    if int(config.get("max_points", MAX_POINTS)) != MAX_POINTS:
        raise InvalidCheckpointError(f"{path.name} was trained with {config.get('max_points')} point slots")
    net = build_click_decoder(saved_refiner_width(obj["model"]))
    load_state_into(net, {k: v.float() for k, v in obj["model"].items()}, path.name)
    return net.fuse()
