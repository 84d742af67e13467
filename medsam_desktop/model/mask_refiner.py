"""A pixel-level refiner for the click path: sharpens the decoder's mask with the image it was cut from.

SAM's mask decoder paints each 4x4 patch of its 256x256 logits from one 64x64 embedding cell, so an object a few
cells wide (a cell nucleus of 100 px) cannot get a finer outline than the cells allow, however many clicks come.
The refiner sees what the embedding lost: the model-frame image itself. A few dilated 3x3 convolutions over

- the image (B or 1, 3, 256, 256), the encoder's input in [0, 1] (``core.inference.preprocess``),
- the decoder's logits (B, 1, 256, 256), squashed to (-1, 1) by ``tanh(logits / 4)``,
- two click maps (B, 2, 256, 256): a Gaussian (sigma :data:`CLICK_SIGMA` model px) around every positive and
  every negative click, from ``points`` (B, P, 2) ``(x, y)`` model frame and ``labels`` (B, P) (1 / 0; -1 unused),

give a residual added to the logits. The last layer starts at zero, so an untrained refiner returns the
decoder's logits unchanged. Receptive field: :data:`RECEPTIVE_RADIUS` px each side. Everything is in the
256 model frame (x to the right, y down, pixel indices).
"""

from __future__ import annotations

import torch
from torch import nn

#: the click maps' Gaussian width, model pixels
CLICK_SIGMA = 3.0
#: dilations of the 3x3 layers after the first (the first has dilation 1)
DILATIONS = (2, 4, 8)
#: how far (model px) an output pixel sees: 1 + sum(DILATIONS)
RECEPTIVE_RADIUS = 1 + sum(DILATIONS)
SIDE = 256


def click_maps(points: torch.Tensor, labels: torch.Tensor, height: int = SIDE, width: int = SIDE) -> torch.Tensor:
    """(B, P, 2) ``(x, y)`` + (B, P) labels -> (B, 2, height, width): max over positive / negative clicks of a
    Gaussian of width :data:`CLICK_SIGMA` at each click (0 where there is none)."""
    dx = (torch.arange(width, dtype=points.dtype, device=points.device)[None, None, :] - points[..., 0:1]) ** 2
    dy = (torch.arange(height, dtype=points.dtype, device=points.device)[None, None, :] - points[..., 1:2]) ** 2
    g = torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * CLICK_SIGMA**2))  # (B, P, height, width)
    pos = (labels == 1).to(g.dtype)[..., None, None]
    neg = (labels == 0).to(g.dtype)[..., None, None]
    return torch.stack([(g * pos).amax(dim=1), (g * neg).amax(dim=1)], dim=1)


class MaskRefiner(nn.Module):
    """image + logits + clicks -> refined logits, all (B, ., 256, 256) model frame (see the module docstring)."""

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(6, width, 3, padding=1), nn.ReLU()]
        for d in DILATIONS:
            layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def width(self) -> int:
        return int(self.head.in_channels)

    def forward(
        self, image: torch.Tensor, logits: torch.Tensor, points: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        dtype = logits.dtype
        image = image.to(dtype).expand(logits.shape[0], -1, -1, -1)
        maps = click_maps(points.to(dtype), labels.to(dtype), logits.shape[-2], logits.shape[-1])
        x = torch.cat([image - 0.5, torch.tanh(logits / 4), maps], dim=1)
        return logits + self.head(self.body(x))
