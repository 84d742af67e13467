"""Augmentation on the GPU for online distillation: flips of the content region, a crop-zoom at the same aspect
and gamma, re-quantised to uint8 levels so the inputs stay in the app's domain (``distill_online.py train``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGE = 256  # encoder input side


@dataclass
@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of :func:`augment` (all off: the unaugmented model input)."""

    p_hflip: float = 0.5
    p_vflip: float = 0.5
    p_zoom: float = 0.3
    zoom: tuple[float, float] = (0.7, 1.0)  # crop side / content side
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)


NO_AUGMENT = AugmentConfig(0.0, 0.0, 0.0, (1.0, 1.0), 0.0, (1.0, 1.0))


def _flip_index(size: torch.Tensor, flip: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) gather index that mirrors ``[0, size)`` where ``flip`` and keeps every other position."""
    j = torch.arange(n, device=size.device).expand(len(size), n)
    return torch.where(flip[:, None] & (j < size[:, None]), size[:, None] - 1 - j, j)


def augment(images: torch.Tensor, hw: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Shard images (B, 256, 256, 3) uint8 -> encoder input (B, 3, 256, 256) float32 in [0, 1], augmented.

    The content is ``[:h, :w]`` (top-left, ``hw`` (B, 2) long) with zero padding, as ``core.preprocess`` makes
    it. Flips mirror the content region only; the crop-zoom cuts a window of the same aspect (side fraction
    in ``cfg.zoom``) and resamples it bilinearly onto the whole content region, then min-max renormalises it
    (as preprocessing would a cropped image); gamma keeps 0 and 1. The result is rounded to multiples of
    1/255 like every real input. With :data:`NO_AUGMENT` it equals ``images / 255`` exactly.
    """
    b, dev = images.shape[0], images.device
    x = images.permute(0, 3, 1, 2).float() / 255.0
    h, w = hw[:, 0], hw[:, 1]

    def draw(p: float) -> torch.Tensor:
        return torch.rand(b, generator=gen, device=dev) < p

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen, device=dev)

    hflip, vflip, zoom, gam = draw(cfg.p_hflip), draw(cfg.p_vflip), draw(cfg.p_zoom), draw(cfg.p_gamma)
    s, fy, fx, g = uniform(*cfg.zoom), uniform(0, 1), uniform(0, 1), uniform(*cfg.gamma)
    if bool(hflip.any()):
        idx = _flip_index(w, hflip, IMAGE)[:, None, None, :].expand_as(x)
        x = x.gather(3, idx)
    if bool(vflip.any()):
        idx = _flip_index(h, vflip, IMAGE)[:, None, :, None].expand_as(x)
        x = x.gather(2, idx)
    inside = (
        (torch.arange(IMAGE, device=dev)[None, :, None] < h[:, None, None])
        & (torch.arange(IMAGE, device=dev)[None, None, :] < w[:, None, None])
    )[:, None]  # (B, 1, H, W)
    if bool(zoom.any()):
        z = zoom.nonzero().squeeze(1)
        sz = s[z]
        y0, x0 = fy[z] * h[z] * (1 - sz), fx[z] * w[z] * (1 - sz)  # window origin, pixels
        theta = torch.zeros(len(z), 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 2] = sz, sz - 1 + 2 * x0 / IMAGE
        theta[:, 1, 1], theta[:, 1, 2] = sz, sz - 1 + 2 * y0 / IMAGE
        grid = F.affine_grid(theta, [len(z), 3, IMAGE, IMAGE], align_corners=False)
        crop = F.grid_sample(x[z], grid, mode="bilinear", padding_mode="border", align_corners=False)
        m = inside[z]
        lo = torch.where(m, crop, torch.inf).amin(dim=(1, 2, 3), keepdim=True)
        hi = torch.where(m, crop, -torch.inf).amax(dim=(1, 2, 3), keepdim=True)
        crop = torch.where(m, (crop - lo) / (hi - lo).clamp_min(1e-6), 0.0)
        x = x.index_copy(0, z, crop)
    if bool(gam.any()):
        x = torch.where(gam[:, None, None, None], x.clamp_min(0).pow(g[:, None, None, None]), x)
    return torch.where(inside, torch.round(x * 255.0) / 255.0, 0.0)
