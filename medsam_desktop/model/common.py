"""Small building blocks shared by the encoders, the prompt encoder and the mask decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (SAM's definition, eps 1e-6).

    Statistics are always computed in float32, so the layer stays stable under bf16/fp16 autocast.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.num_channels = num_channels  # a plain int: stays a constant when traced for ONNX export

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # reductions over axis 1, no transposes: OpenVINO fuses this into one MVN on the NCHW map, where
            # the permuted form cost two 1.5 ms transposes per encoder call (its profiler, 2 threads)
            xf = x.float()
            u = xf.mean(1, keepdim=True)
            d = xf - u
            y = d * torch.rsqrt(d.pow(2).mean(1, keepdim=True) + self.eps)
            return (y * self.weight.float()[:, None, None] + self.bias.float()[:, None, None]).to(x.dtype)
        # one fused layer_norm over the channel axis (moved last): fewer memory passes than mean/var/rsqrt
        y = F.layer_norm(
            x.permute(0, 2, 3, 1).float(), (self.num_channels,), self.weight.float(), self.bias.float(), self.eps
        )
        return y.permute(0, 3, 1, 2).to(x.dtype)


class ConvBN(nn.Sequential):
    """Conv2d (no bias) followed by BatchNorm2d; ``fuse()`` folds them into one biased Conv2d.

    Children are named ``c`` and ``bn`` to match TinyViT/RepViT checkpoints.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_ch)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.constant_(bn.bias, 0.0)
        self.add_module("bn", bn)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
        )
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class MLP(nn.Module):
    """SAM's plain MLP: ``num_layers`` Linear layers with ReLU between them (``layers.i`` names)."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def image_neck(in_channels: int, out_channels: int = 256) -> nn.Sequential:
    """SAM-style neck: 1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d (indices 0..3 as in the checkpoints)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        LayerNorm2d(out_channels),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(out_channels),
    )
