"""RepViT image encoders (the distilled students).

A RepViT family as typed blocks plus one config per variant. The MedSAM seed variant ``repvit_m0_6`` uses a
stride-4 stem and no further downsampling, so every stage runs at 64x64 for a 256x256 input:
(B, 3, 256, 256) -> stages (B, 320, 64, 64) -> neck (B, 256, 64, 64).

Every block that holds parallel or BatchNorm branches has ``fuse()`` returning an equivalent inference
module; :func:`medsam_desktop.model.fuse.fuse_for_inference` applies them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import ConvBN, image_neck
from .conv_gelu import ConvGELU


@dataclass(frozen=True)
class RepViTConfig:
    """Channels and depths per stage; the first block of stages 1.. changes the width (stride 1)."""

    channels: tuple[int, ...] = (40, 80, 160, 320)
    depths: tuple[int, ...] = (2, 3, 10, 2)
    se_ratio: float = 0.25
    mlp_ratio: int = 2
    out_chans: int = 256


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class SqueezeExcite(nn.Module):
    """Channel attention: global mean -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid gate."""

    def __init__(self, chans: int, ratio: float) -> None:
        super().__init__()
        rd = _make_divisible(chans * ratio)
        self.fc1 = nn.Conv2d(chans, rd, 1)
        self.fc2 = nn.Conv2d(rd, chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class RepVGGDW(nn.Module):
    """BN(dw3x3-BN(x) + dw1x1(x) + x); ``fuse()`` folds all branches into one biased 3x3 depthwise conv."""

    def __init__(self, chans: int) -> None:
        super().__init__()
        self.conv = ConvBN(chans, chans, 3, 1, 1, groups=chans)
        self.conv1 = nn.Conv2d(chans, chans, 1, 1, 0, groups=chans)
        self.bn = nn.BatchNorm2d(chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv = self.conv.fuse()
        w = conv.weight.clone()
        b = conv.bias.clone()
        w[:, :, 1:2, 1:2] += self.conv1.weight + 1.0  # 1x1 branch and identity at the kernel centre
        b += self.conv1.bias
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, groups=conv.groups, bias=True)
        fused.weight.copy_(w * scale[:, None, None, None])
        fused.bias.copy_(bn.bias + (b - bn.running_mean) * scale)
        return fused


class ConvFFN(nn.Module):
    """Residual channel mixer: x + 1x1-BN(GELU(1x1-BN(x)))."""

    def __init__(self, chans: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = ConvBN(chans, hidden)
        self.act = nn.GELU()
        self.pw2 = ConvBN(hidden, chans, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw2(self.act(self.pw1(x)))

    @torch.no_grad()
    def fuse(self) -> ConvFFN:
        """Conv+BN folded; the first convolution and GELU become one :class:`ConvGELU` (``act`` an identity).
        Idempotent, as fusing an already fused model must be."""
        if isinstance(self.pw1, ConvGELU):
            return self
        self.pw1 = ConvGELU(self.pw1.fuse())
        self.act = nn.Identity()
        self.pw2 = self.pw2.fuse()
        return self


class RepViTBlock(nn.Module):
    """Token mixer (RepVGG depthwise, optional SE) then residual ConvFFN; same width, same resolution."""

    def __init__(self, chans: int, mlp_ratio: int, use_se: bool, se_ratio: float) -> None:
        super().__init__()
        self.token_mixer = RepVGGDW(chans)
        self.se = SqueezeExcite(chans, se_ratio) if use_se else nn.Identity()
        self.channel_mixer = ConvFFN(chans, chans * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.se(self.token_mixer(x)))


class RepViTTransition(nn.Module):
    """Width change without downsampling: dw3x3-BN, optional SE, 1x1-BN to the new width, ConvFFN."""

    def __init__(self, in_chans: int, out_chans: int, mlp_ratio: int, use_se: bool, se_ratio: float) -> None:
        super().__init__()
        self.dw = ConvBN(in_chans, in_chans, 3, 1, 1, groups=in_chans)
        self.se = SqueezeExcite(in_chans, se_ratio) if use_se else nn.Identity()
        self.pw = ConvBN(in_chans, out_chans)
        self.channel_mixer = ConvFFN(out_chans, out_chans * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.pw(self.se(self.dw(x))))


class Stem(nn.Module):
    """Two stride-2 3x3 conv-BN with GELU: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, out_chans: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, out_chans // 2, 3, 2, 1)
        self.act = nn.GELU()
        self.conv2 = ConvBN(out_chans // 2, out_chans, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))

    @torch.no_grad()
    def fuse(self) -> Stem:
        """As :meth:`ConvFFN.fuse`: conv1+BN+GELU one :class:`ConvGELU`, conv2+BN one convolution."""
        if isinstance(self.conv1, ConvGELU):
            return self
        self.conv1 = ConvGELU(self.conv1.fuse())
        self.act = nn.Identity()
        self.conv2 = self.conv2.fuse()
        return self


class RepViTEncoder(nn.Module):
    """RepViT image encoder with a SAM neck. SE on every other block (counting across the network)."""

    def __init__(self, cfg: RepViTConfig = RepViTConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = Stem(cfg.channels[0])
        stages: list[nn.Module] = []
        block_idx = 0
        prev = cfg.channels[0]
        for chans, depth in zip(cfg.channels, cfg.depths):
            blocks: list[nn.Module] = []
            for _ in range(depth):
                use_se = block_idx % 2 == 0
                if chans != prev:
                    blocks.append(RepViTTransition(prev, chans, cfg.mlp_ratio, use_se, cfg.se_ratio))
                else:
                    blocks.append(RepViTBlock(chans, cfg.mlp_ratio, use_se, cfg.se_ratio))
                prev = chans
                block_idx += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.neck = image_neck(cfg.channels[-1], cfg.out_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) -> (B, 320, 64, 64), the map before the neck."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.forward_features(x))
