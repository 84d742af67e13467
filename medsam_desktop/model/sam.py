"""The LiteMedSAM network: an image encoder, SAM's prompt encoder and SAM's mask decoder."""

from __future__ import annotations

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .single_mask import PreparedImage, predict_prepared, prepare_image

IMAGE_SIZE = 256
EMBED_SIZE = 64


class MedSAMLite(nn.Module):
    """Box-prompted segmentation network working in the 256x256 model input frame.

    ``encode``: images (B, 3, 256, 256) in [0, 1] -> embeddings (B, 256, 64, 64).
    ``decode``: embeddings (B or 1, 256, 64, 64) + boxes (B, 4) as x0, y0, x1, y1 in input-frame pixels
    -> mask logits (B, 1, 256, 256) in the input frame and IoU estimates (B, 1).
    ``prepare_decode`` + ``decode_prepared``: the same as ``decode`` in two steps, the first made once per image
    for any number of box chunks (fused inference model only, see :mod:`.single_mask`).
    """

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)

    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = boxes.reshape(-1, 4).to(embeddings.dtype)
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        dense = dense[:1]  # without mask prompts every row is the same no-mask embedding: keep one (see decoder)
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe().to(embeddings.dtype),
            sparse_prompt_embeddings=sparse.to(embeddings.dtype),
            dense_prompt_embeddings=dense.to(embeddings.dtype),
            multimask_output=False,
        )

    def prepare_decode(self, embeddings: torch.Tensor) -> PreparedImage:
        """The box-independent part of decoding ``embeddings`` (B or 1, 256, 64, 64), for :meth:`decode_prepared`.

        Raises RuntimeError unless the decoder is fused for inference (``fuse_for_inference``).
        """
        if not self.mask_decoder.single_mask_rewrite:
            raise RuntimeError("prepare_decode needs the decoder fused for inference (fuse_for_inference)")
        h, w = embeddings.shape[-2:]
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return prepare_image(self.mask_decoder, embeddings, self.prompt_encoder.get_dense_pe(), dense)

    def decode_prepared(self, image: PreparedImage, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``decode`` for an image made by :meth:`prepare_decode`: boxes (B, 4) -> logits (B, 1, 256, 256), IoU
        (B, 1); B is the image's batch or any number when the image batch is 1."""
        dtype = self.prompt_encoder.no_mask_embed.weight.dtype
        sparse, _ = self.prompt_encoder(points=None, boxes=boxes.reshape(-1, 4).to(dtype), masks=None)
        return predict_prepared(self.mask_decoder, image, self.prompt_encoder.get_dense_pe(), sparse)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.encode(images), boxes)
