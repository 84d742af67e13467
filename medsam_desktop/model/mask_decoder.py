"""SAM mask decoder: image embedding + prompt embeddings -> low-resolution mask logits and IoU scores."""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .single_mask import predict_single_mask
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts (B, M, 256, 256) mask logits in the model input frame and (B, M) IoU estimates.

    M is 1 (single mask) or 3 (``multimask_output``). The image embedding batch is either the prompt batch
    or 1 (shared by all prompts of one image). After :meth:`fuse` a single-mask call takes the exact
    inference rewrite in :mod:`.single_mask` (about half the multiply-adds per box); training never fuses.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: TwoWayTransformer | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer = transformer if transformer is not None else TwoWayTransformer()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        self.single_mask_rewrite = False
        self._key_pe_memo: tuple[torch.Tensor, torch.Tensor] | None = None  # see single_mask._key_pe

    def fuse(self) -> MaskDecoder:
        """Switch single-mask calls to the inference rewrite (same parameters, same state dict)."""
        self.single_mask_rewrite = True
        return self

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.single_mask_rewrite and not multimask_output:
            return predict_single_mask(
                self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
            )
        masks, iou = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou[:, sl]

    def prompt_tokens(self, sparse_prompt_embeddings: torch.Tensor, image_batch: int) -> torch.Tensor:
        """(B, P, C) prompt embeddings -> (B, 1 + 4 + P, C) tokens: IoU token, mask tokens, prompts.

        Raises ValueError unless the image batch is B or 1 (one image shared by all prompts).
        """
        n = sparse_prompt_embeddings.shape[0]
        if image_batch not in (1, n):
            raise ValueError(f"image batch {image_batch} must equal the prompt batch {n} or be 1")
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        out_tokens = out_tokens.unsqueeze(0).expand(n, -1, -1).to(sparse_prompt_embeddings.dtype)
        return torch.cat([out_tokens, sparse_prompt_embeddings], dim=1)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.prompt_tokens(sparse_prompt_embeddings, image_embeddings.shape[0])
        # batch 1 stays batch 1 (with a batch-1 dense prompt): the transformer broadcasts it per prompt late
        src = image_embeddings + dense_prompt_embeddings
        pos = image_pe
        h, w = src.shape[-2:]
        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]
        b, c = src.shape[0], src.shape[2]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
