"""Conv+GELU in one oneDNN call (model/conv_gelu.py): same values as the two ops, used only where safe."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsam_desktop.model import build_model, fuse_for_inference
from medsam_desktop.model import conv_gelu as cg
from medsam_desktop.model.repvit import ConvFFN, Stem


@pytest.fixture
def fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """Records the input dtype of every call that took the fused op."""
    calls: list[torch.dtype] = []
    real = cg._fused

    def counting(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
        calls.append(x.dtype)
        return real(x, weight, bias, conv)

    monkeypatch.setattr(cg, "_fused", counting)
    return calls


def _conv(kind: str) -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 1) if kind == "1x1" else nn.Conv2d(16, 32, 3, 2, 1)  # the FFN's and the stem's
    return conv.eval()


def test_the_op_is_there_on_this_torch() -> None:
    """The development machine's torch has it; if a torch upgrade drops it, this says so (the model still runs)."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    assert cg.fused_conv_gelu_available()


@pytest.mark.parametrize("kind", ["1x1", "3x3s2"])
def test_fp32_matches_conv_then_gelu(kind: str, fused_calls: list[torch.dtype]) -> None:
    conv = _conv(kind)
    x = torch.randn(2, 16, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = F.gelu(conv(x))
        got = cg.ConvGELU(conv)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert fused_calls == ([torch.float32] if cg.fused_conv_gelu_available() else [])


def test_bf16_autocast_matches_the_autocast_path(fused_calls: list[torch.dtype]) -> None:
    if not cg.fused_conv_gelu_available():
        pytest.skip("oneDNN conv+GELU not available")
    expected = [torch.bfloat16] if cg.fused_conv_gelu_bf16_available() else []  # AVX2-only CPUs: none
    fused_calls.clear()  # the probe's own calls
    conv = _conv("1x1")
    x = torch.randn(1, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.gelu(conv(x))
        got = cg.ConvGELU(conv)(x)
    assert got.dtype == torch.bfloat16 and fused_calls == expected
    torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=2e-2)


def test_bf16_falls_back_where_onednn_has_no_bf16_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an AVX2-only CPU oneDNN refuses bf16 convolutions ("bf16 path needs the cpu support avx_ne_convert or
    avx512bw, ..."): a bf16 request must still run, through autocast's own convolution."""
    if not cg.fused_conv_gelu_available():
        pytest.skip("oneDNN conv+GELU not available")
    real = cg._fused

    def no_bf16(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
        if x.dtype == torch.bfloat16:
            raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx_ne_convert or avx512bw")
        return real(x, weight, bias, conv)

    monkeypatch.setattr(cg, "_fused", no_bf16)
    cg.fused_conv_gelu_bf16_available.cache_clear()
    try:
        assert not cg.fused_conv_gelu_bf16_available()
        conv = _conv("1x1")
        x = torch.randn(1, 16, 16, 16).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            want = F.gelu(conv(x))
            got = cg.ConvGELU(conv)(x)
        torch.testing.assert_close(got, want)
    finally:
        cg.fused_conv_gelu_bf16_available.cache_clear()


def test_plain_path_with_autograd_and_under_export(fused_calls: list[torch.dtype]) -> None:
    conv = _conv("1x1")
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    y = cg.ConvGELU(conv)(x)
    y.sum().backward()  # autograd on: the plain ops, which have gradients
    assert x.grad is not None and fused_calls == []
    pytest.importorskip("onnx")
    import onnx

    buf = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(cg.ConvGELU(conv), (x.detach(),), buf, opset_version=17, dynamo=False)
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert fused_calls == [] and ops[0] == "Conv" and "mkldnn" not in " ".join(ops)


def test_student_fuse_uses_it_and_keeps_the_encoder_output(fused_calls: list[torch.dtype]) -> None:
    torch.manual_seed(0)
    model = build_model("repvit_m0_6").eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        ref = model.encode(x)
    fuse_for_inference(model)
    fuse_for_inference(model)  # fusing twice (a backend, then an export of the same model) changes nothing
    ffns = [m for m in model.modules() if isinstance(m, ConvFFN)]
    stems = [m for m in model.modules() if isinstance(m, Stem)]
    assert len(ffns) == 17 and len(stems) == 1
    assert all(isinstance(m.pw1, cg.ConvGELU) and isinstance(m.act, nn.Identity) for m in ffns)
    with torch.inference_mode():
        out = model.encode(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert len(fused_calls) == (18 if cg.fused_conv_gelu_available() else 0)


def test_opt_out_by_environment(monkeypatch: pytest.MonkeyPatch, fused_calls: list[torch.dtype]) -> None:
    monkeypatch.setenv("MEDSAM_FUSED_CONV_GELU", "0")
    cg.fused_conv_gelu_available.cache_clear()
    try:
        assert not cg.fused_conv_gelu_available()
        conv = _conv("1x1")
        with torch.inference_mode():
            cg.ConvGELU(conv)(torch.randn(1, 16, 4, 4))
        assert fused_calls == []
    finally:
        cg.fused_conv_gelu_available.cache_clear()  # the next test decides afresh, without the variable


def test_the_check_gives_the_same_answer_inside_autocast() -> None:
    """The first call usually comes from the encoder under bf16 autocast; the answer must not depend on that (it
    did: the app's fresh process said no, the CLI's said yes, and their masks differed by a few pixels)."""
    cg.fused_conv_gelu_available.cache_clear()
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            inside = cg.fused_conv_gelu_available()
        cg.fused_conv_gelu_available.cache_clear()
        assert inside == cg.fused_conv_gelu_available() == torch.backends.mkldnn.is_available()
    finally:
        cg.fused_conv_gelu_available.cache_clear()
