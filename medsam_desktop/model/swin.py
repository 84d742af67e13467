"""Swin-Transformer image encoder (the stage-1 teacher trained from scratch).

Input (B, 3, 256, 256) in [0, 1]; output the SAM embedding (B, 256, 64, 64). Swin-T layout: a 4x4 patch
embedding gives a 64x64 token grid (96 ch); four stages of windowed self-attention (window 8, every second
block shifted by 4 with an attention mask) run at 64, 32, 16 and 8 tokens per side (96, 192, 384, 768 ch),
with 2x2 patch merging between them. The last grid equals one window, so it is never shifted. The neck is
FPN-like: each stage output is layer-normalised, projected to ``fpn_dim`` by a 1x1 conv, upsampled
(bilinear) to 64x64 and summed; SAM's conv/LayerNorm2d neck then gives 256 channels.

Token tensors are channels-last (B, H, W, C) inside the stages; windows are (B * nW, N, C) with
N = window_size**2, ordered row-major over the grid (window rows first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import image_neck


@dataclass(frozen=True)
class SwinConfig:
    """Swin-T by default: embed 96, depths 2/2/6/2, heads 3/6/12/24, window 8, patch 4."""

    img_size: int = 256
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 8
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    fpn_dim: int = 256
    out_chans: int = 256

    @property
    def dims(self) -> tuple[int, ...]:
        """Channels per stage: embed_dim * 2**i."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def grid_sizes(self) -> tuple[int, ...]:
        """Token grid side per stage (64, 32, 16, 8 for a 256 input and patch 4)."""
        first = self.img_size // self.patch_size
        return tuple(first // 2**i for i in range(len(self.depths)))


SWIN_T = SwinConfig()
SWIN_TINY_TEST = SwinConfig(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), drop_path_rate=0.0)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows row-major; H and W must be multiples of ``ws``."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws*ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (nW, N, N) mask, True where two tokens of a window may attend to each other.

    After the cyclic shift by ``-shift`` a window at the bottom/right edge holds tokens that were far apart
    in the image; tokens are labelled by the region they came from (3x3 regions from the slices
    ``[0, -ws)``, ``[-ws, -shift)``, ``[-shift, end)`` per axis) and may only attend within their region.
    With ``shift == 0`` every entry is True.
    """
    region = torch.zeros(1, h, w, 1, device=device)
    if shift > 0:
        label = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                region[:, hs, wsl, :] = label
                label += 1
    lab = window_partition(region, ws).squeeze(-1)  # (nW, N)
    return lab[:, :, None] == lab[:, None, :]


def relative_position_index(ws: int) -> torch.Tensor:
    """(N, N) index into the ((2ws-1)**2)-entry bias table for every pair of tokens in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # (2, N, N), each in [0, 2ws-2]
    return rel[0] * (2 * ws - 1) + rel[1]


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` during training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias.

    Input/output (B * nW, N, C); ``mask`` (nW, N, N) boolean (True = may attend) or None.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)

    def bias(self) -> torch.Tensor:
        """Relative position bias (heads, N, N)."""
        n = self.window_size**2
        table = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return table.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B*nW, heads, N, d)
        attn_bias = self.bias().to(q.dtype)[None]  # (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            neg = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
            attn_bias = (attn_bias + neg[:, None]).repeat(bw // nw, 1, 1, 1)  # (B*nW, heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention + MLP on (B, H, W, C) tokens."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.window_size, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        _, h, w, _ = x.shape
        ws, s = self.window_size, self.shift
        y = self.norm1(x)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), mask if s else None), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood, LayerNorm, linear 4C -> 2C: (B, H, W, C) -> (B, H/2, W/2, 2C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain and shifted windows on (B, H, W, C); no shift when H <= window."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        grid: int,
        mlp_ratio: float,
        drop_paths: list[float],
    ) -> None:
        super().__init__()
        ws = min(window_size, grid)
        shift = ws // 2 if grid > ws else 0
        self.window_size, self.shift = ws, shift
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, ws, shift if i % 2 else 0, mlp_ratio, drop_paths[i]) for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        if h % self.window_size or w % self.window_size:
            raise ValueError(f"token grid {h}x{w} is not a multiple of the window {self.window_size}")
        mask = shifted_window_mask(h, w, self.window_size, self.shift, x.device) if self.shift else None
        for blk in self.blocks:
            x = blk(x, mask)
        return x


class SwinEncoder(nn.Module):
    """(B, 3, 256, 256) -> (B, 256, 64, 64).

    ``stage_features``: per-stage (B, C_i, 64 / 2**i, 64 / 2**i) maps (layer-normalised);
    ``forward_features``: their FPN sum (B, fpn_dim, 64, 64), the pre-neck map.
    """

    def __init__(self, cfg: SwinConfig = SWIN_T) -> None:
        super().__init__()
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError("depths and num_heads need one entry per stage")
        self.cfg = cfg
        dims, grids = cfg.dims, cfg.grid_sizes
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.patch_norm = nn.LayerNorm(cfg.embed_dim)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        start = 0
        for i, depth in enumerate(cfg.depths):
            self.stages.append(
                SwinStage(
                    dims[i],
                    depth,
                    cfg.num_heads[i],
                    cfg.window_size,
                    grids[i],
                    cfg.mlp_ratio,
                    rates[start : start + depth],
                )
            )
            start += depth
            if i < len(cfg.depths) - 1:
                self.merges.append(PatchMerging(dims[i]))
        self.out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        self.lateral = nn.ModuleList(nn.Conv2d(d, cfg.fpn_dim, kernel_size=1) for d in dims)
        self.neck = image_neck(cfg.fpn_dim, cfg.out_chans)
        self.apply(_init_weights)

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> per-stage (B, C_i, H / 4 / 2**i, W / 4 / 2**i)."""
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats.append(self.out_norms[i](x).permute(0, 3, 1, 2))
            if i < len(self.merges):
                x = self.merges[i](x)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> FPN sum (B, fpn_dim, H / 4, W / 4)."""
        feats = self.stage_features(x)
        size = feats[0].shape[-2:]
        out = self.lateral[0](feats[0])
        for lat, f in zip(self.lateral[1:], feats[1:]):
            out = out + F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
