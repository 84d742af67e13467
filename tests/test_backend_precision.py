"""Backend precision: fp32 / bf16 / auto, cache separation by name, bf16 close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import MODEL_FRAME_BOXES

from medsam_desktop.core.backends.torch_backend import TorchBackend, native_bf16_available, resolve_precision
from medsam_desktop.model import build_model


def test_resolve_precision(monkeypatch) -> None:
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    monkeypatch.setattr("medsam_desktop.core.backends.torch_backend.native_bf16_available", lambda: False)
    assert resolve_precision("auto") == "fp32"
    monkeypatch.setattr("medsam_desktop.core.backends.torch_backend.native_bf16_available", lambda: True)
    assert resolve_precision("auto") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")


def test_bf16_backend_names_its_precision_and_returns_fp32() -> None:
    torch.manual_seed(0)
    model = build_model("repvit_m0_6").eval()
    fp32 = TorchBackend(model, name="student")
    bf16 = TorchBackend(model, name="student", precision="bf16")
    assert (fp32.name, bf16.name) == ("student", "student+bf16")  # cache keys never mix precisions
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    e32, e16 = fp32.encode(x), bf16.encode(x)
    assert e16.dtype == np.float32 and e16.shape == e32.shape == (1, 256, 64, 64)
    rel = np.linalg.norm(e16 - e32) / np.linalg.norm(e32)
    assert 0 < rel < 0.05, rel  # bf16 really ran (not bit-identical) and stayed close
    boxes = np.array([[20.0, 30.0, 200.0, 220.0]], dtype=np.float32)
    (l32, i32), (l16, i16) = fp32.decode(e32, boxes), bf16.decode(e32, boxes)
    assert l16.dtype == np.float32 and l16.shape == l32.shape == (1, 256, 256)
    assert i16.dtype == np.float32 and abs(float(i16[0]) - float(i32[0])) < 0.05
    assert np.mean((l16 > 0) == (l32 > 0)) > 0.98


def test_native_bf16_probe_returns_a_bool() -> None:
    assert isinstance(native_bf16_available(), bool)


def test_numpy_blas_runs_single_threaded_once_a_backend_exists() -> None:
    """The model runtime owns the cores: numpy's BLAS pool must not fight it (docs/performance.md)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    TorchBackend(build_model("repvit_m0_6").eval(), name="student")
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_boxes_decode_to_empty_arrays(precision: str) -> None:
    """Like the exported runtimes: zero boxes give (0, 256, 256) logits and (0,) IoU, not an exception."""
    backend = TorchBackend(build_model("repvit_m0_6").eval(), precision=precision)
    logits, iou = backend.decode(np.zeros((1, 256, 64, 64), np.float32), np.zeros((0, 4), np.float32))
    assert logits.shape == (0, 256, 256) and logits.dtype == np.float32
    assert iou.shape == (0,) and iou.dtype == np.float32


def test_backend_decodes_with_the_reference_decoder_when_the_rewrite_is_off() -> None:
    """benchmarks/decoder_rewrite.py switches the rewrite off on a built backend: decode still works, through SAM's
    decoder as written, and gives the rewrite's masks (6 boxes: two chunks)."""
    torch.manual_seed(1)
    backend = TorchBackend(build_model("repvit_m0_6").eval())
    emb = np.random.default_rng(2).standard_normal((1, 256, 64, 64)).astype(np.float32)
    boxes = MODEL_FRAME_BOXES[:6]
    new, new_iou = backend.decode(emb, boxes)
    backend.model.mask_decoder.single_mask_rewrite = False
    old, old_iou = backend.decode(emb, boxes)
    assert old.shape == new.shape == (6, 256, 256)
    np.testing.assert_allclose(new, old, atol=1e-4 * np.abs(old).max())
    np.testing.assert_allclose(new_iou, old_iou, atol=1e-5)
