"""LiteMedSAM's TinyViT image encoder (the teacher).

Input (B, 3, 256, 256) in [0, 1]; output embedding (B, 256, 64, 64). The LiteMedSAM variant keeps the
patch embedding at full resolution (two 1x1 conv+BN), then: stage 0 MBConv at 256x256 (64 ch), merge to
128x128; stage 1 windowed attention (128 ch, window 7), merge to 64x64; stage 2 (160 ch, window 14), merge
with stride 1; stage 3 (320 ch, window 7) at 64x64; SAM neck to 256 channels. Parameter names follow the
``lite_medsam.pth`` checkpoint so it loads strictly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .common import ConvBN, image_neck


@dataclass(frozen=True)
class TinyViTConfig:
    img_size: int = 256
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    out_chans: int = 256


class PatchEmbed(nn.Module):
    """Two 1x1 conv+BN with GELU, no downsampling: (B, 3, H, W) -> (B, C, H, W)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, embed_dim // 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU. (B, C, H, W) in and out."""

    def __init__(self, chans: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(chans * expand_ratio)
        self.conv1 = ConvBN(chans, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, chans, bn_weight_init=0.0)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(x + self.conv3(y))


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise (stride 2, or 1 for the last merge), 1x1 conv: (B, C, H, W) -> (B, C', H', W')."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative-offset bias.

    Input/output (B*, N, C) with N = window_size**2 tokens.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window_size), range(window_size)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        n = len(points)
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(n, n), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TinyViTBlock(nn.Module):
    """Windowed attention + 3x3 depthwise local conv + MLP, on (B, H, W, C) tokens."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = ConvBN(dim, dim, local_conv, 1, local_conv // 2, groups=dim)
        self.mlp = _TokenMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = F.pad(x, (0, 0, 0, pad_r, 0, pad_b)) if (pad_b or pad_r) else x
        ph, pw = h + pad_b, w + pad_r
        y = y.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        y = self.attn(y)
        y = y.view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        x = x + y[:, :h, :w]
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class _TokenMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class ConvStage(nn.Module):
    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class AttentionStage(nn.Module):
    """Attention blocks on (B, H, W, C) tokens; the optional merge works on (B, C, H, W)."""

    def __init__(self, blocks: list[TinyViTBlock], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            y = blk(y)
        x = y.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViTEncoder(nn.Module):
    """(B, 3, 256, 256) -> (B, 256, 64, 64); ``forward_features`` gives the (B, 320, 64, 64) pre-neck map."""

    def __init__(self, cfg: TinyViTConfig = TinyViTConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        dims = cfg.embed_dims
        n = len(dims)
        self.patch_embed = PatchEmbed(3, dims[0])
        layers: list[nn.Module] = []
        for i in range(n):
            down = None
            if i < n - 1:
                stride = 1 if i == n - 2 else 2
                down = PatchMerging(dims[i], dims[i + 1], stride)
            if i == 0:
                layers.append(ConvStage(dims[0], cfg.depths[0], cfg.mbconv_expand_ratio, down))
            else:
                blocks = [
                    TinyViTBlock(dims[i], cfg.num_heads[i], cfg.window_sizes[i], cfg.mlp_ratio, cfg.local_conv_size)
                    for _ in range(cfg.depths[i])
                ]
                layers.append(AttentionStage(blocks, down))
        self.layers = nn.ModuleList(layers)
        self.neck = image_neck(dims[-1], cfg.out_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.forward_features(x))
