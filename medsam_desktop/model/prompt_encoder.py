"""SAM prompt encoder: boxes, points and mask prompts -> sparse and dense embeddings.

Coordinates are in the model's input frame (pixels of the 256x256 padded input, x to the right, y down).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d


class RandomFourierPositionEncoding(nn.Module):
    """Positional encoding with a fixed random Gaussian projection (SAM's ``PositionEmbeddingRandom``)."""

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (..., 2) normalised to [0, 1] as (x, y) -> (..., 2 * num_pos_feats)."""
        proj = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix.to(coords.dtype)
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid -> (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self._encode(coords).permute(2, 0, 1)

    def encode_points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """coords (B, N, 2) in pixels of an (h, w) image -> (B, N, C)."""
        norm = coords.clone().float()
        norm[..., 0] = norm[..., 0] / image_size[1]
        norm[..., 1] = norm[..., 1] / image_size[0]
        return self._encode(norm)


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Args:
        embed_dim: embedding width (256).
        image_embedding_size: (64, 64), the spatial size of the image embedding.
        input_image_size: (256, 256), the model input frame the prompt coordinates live in.
        mask_in_chans: hidden channels of the mask-prompt downscaler.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (256, 256),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = RandomFourierPositionEncoding(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: torch.Tensor | None = None  # set by fuse(): the grid encoding never changes after training

    def fuse(self) -> PromptEncoder:
        """For inference: compute the grid encoding once; :meth:`get_dense_pe` then returns that same tensor."""
        with torch.no_grad():
            self._dense_pe = self.pe_layer.grid(self.image_embedding_size).unsqueeze(0)
        return self

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, 256, 64, 64)."""
        if self._dense_pe is not None:
            return self._dense_pe
        return self.pe_layer.grid(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, torch.zeros_like(points[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        emb = self.pe_layer.encode_points(points, self.input_image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, torch.zeros_like(emb), emb)
        emb = emb + (lab == -1) * self.not_a_point_embed.weight
        emb = emb + (lab == 0) * self.point_embeddings[0].weight
        emb = emb + (lab == 1) * self.point_embeddings[1].weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.encode_points(corners, self.input_image_size)
        emb[:, 0, :] += self.point_embeddings[2].weight[0]
        emb[:, 1, :] += self.point_embeddings[3].weight[0]
        return emb

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse (B, N, 256) and dense (B, 256, 64, 64) embeddings.

        points: ((B, N, 2) xy coordinates, (B, N) labels 1=fg 0=bg); boxes: (B, 4) or (B, 1, 4) as
        x0, y0, x1, y1; masks: (B, 1, 256, 256) low-resolution logits.
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            sparse = torch.cat([sparse, self._embed_points(points[0], points[1], pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
