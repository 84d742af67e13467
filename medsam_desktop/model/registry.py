"""Builder functions and a plain registry of model variants (names used on the command line)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .repvit import RepViTConfig, RepViTEncoder
from .sam import EMBED_SIZE, IMAGE_SIZE, MedSAMLite
from .swin import SWIN_T, SWIN_TINY_TEST, SwinEncoder
from .tiny_vit import TinyViTConfig, TinyViTEncoder
from .transformer import TwoWayTransformer

REPVIT_M0_6 = RepViTConfig(channels=(40, 80, 160, 320), depths=(2, 3, 10, 2))


def build_tinyvit_encoder() -> nn.Module:
    """LiteMedSAM's TinyViT-5M encoder (the teacher)."""
    return TinyViTEncoder(TinyViTConfig())


def build_repvit_m0_6_encoder() -> nn.Module:
    """RepViT-M0.6, stride 4 then 64x64 throughout (the seed student)."""
    return RepViTEncoder(REPVIT_M0_6)


def build_swin_t_encoder() -> nn.Module:
    """Swin-T with an FPN neck (the stage-1 teacher trained from scratch)."""
    return SwinEncoder(SWIN_T)


def build_swin_tiny_test_encoder() -> nn.Module:
    """A very small Swin (embed 24, one block per stage) for fast tests and smoke runs only."""
    return SwinEncoder(SWIN_TINY_TEST)


ENCODER_REGISTRY: dict[str, Callable[[], nn.Module]] = {
    "litemedsam": build_tinyvit_encoder,
    "repvit_m0_6": build_repvit_m0_6_encoder,
    "swin_t": build_swin_t_encoder,
    "swin_tiny_test": build_swin_tiny_test_encoder,
}


def build_prompt_encoder() -> PromptEncoder:
    return PromptEncoder(256, (EMBED_SIZE, EMBED_SIZE), (IMAGE_SIZE, IMAGE_SIZE), 16)


def build_mask_decoder() -> MaskDecoder:
    transformer = TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048)
    return MaskDecoder(256, transformer, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256)


def build_model(arch: str) -> MedSAMLite:
    """Full network with the named image encoder (random weights)."""
    try:
        encoder_builder = ENCODER_REGISTRY[arch]
    except KeyError:
        raise ValueError(f"unknown model '{arch}'; choose one of {', '.join(sorted(ENCODER_REGISTRY))}") from None
    return MedSAMLite(encoder_builder(), build_prompt_encoder(), build_mask_decoder())


def build_litemedsam() -> MedSAMLite:
    return build_model("litemedsam")


def build_repvit_m0_6() -> MedSAMLite:
    return build_model("repvit_m0_6")


def build_swin_t() -> MedSAMLite:
    return build_model("swin_t")


def build_swin_tiny_test() -> MedSAMLite:
    return build_model("swin_tiny_test")


MODEL_REGISTRY: dict[str, Callable[[], MedSAMLite]] = {
    "litemedsam": build_litemedsam,
    "repvit_m0_6": build_repvit_m0_6,
    "swin_t": build_swin_t,
    "swin_tiny_test": build_swin_tiny_test,
}
