"""ONNX export and the candidate backends (ONNX Runtime, OpenVINO) agree with the torch backend.

Skips a runtime that is not installed (both are optional; see docs/performance.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import MODEL_FRAME_BOXES

from medsam_desktop.core.backends import InferenceBackend
from medsam_desktop.core.backends.export import PREPARE_FILE, export_onnx
from medsam_desktop.core.backends.layout import DECODER_SIZES, NetworkFiles, decoder_stem, split_boxes
from medsam_desktop.core.backends.torch_backend import TorchBackend
from medsam_desktop.core.inference.predictor import Predictor
from medsam_desktop.model import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = build_model("repvit_m0_6").eval()
    folder = tmp_path_factory.mktemp("onnx")
    export_onnx(model, folder)
    return model, folder


def _candidate(kind: str, folder: Path) -> InferenceBackend:
    if kind == "onnxruntime":
        pytest.importorskip("onnxruntime")
        from medsam_desktop.core.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(NetworkFiles.in_folder(folder, ".onnx"), threads=2)
    pytest.importorskip("openvino")
    from medsam_desktop.core.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(NetworkFiles.in_folder(folder, ".onnx"), threads=2, cache=False)


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_candidate_matches_torch(exported: tuple[torch.nn.Module, Path], kind: str) -> None:
    model, folder = exported
    ref, cand = TorchBackend(model), _candidate(kind, folder)
    x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    e_ref, e_cand = ref.encode(x), cand.encode(x)
    assert e_cand.shape == (1, 256, 64, 64)
    np.testing.assert_allclose(e_cand, e_ref, atol=2e-4, rtol=1e-3)
    # 7 boxes: chunks of every exported size, results in the order given
    boxes = MODEL_FRAME_BOXES
    (l_ref, i_ref), (l_cand, i_cand) = ref.decode(e_ref, boxes), cand.decode(e_ref, boxes)
    assert l_cand.shape == (7, 256, 256) and i_cand.shape == (7,)
    np.testing.assert_allclose(l_cand, l_ref, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(i_cand, i_ref, atol=1e-4)
    empty_logits, empty_iou = cand.decode(e_ref, np.zeros((0, 4), np.float32))
    assert empty_logits.shape == (0, 256, 256) and empty_iou.shape == (0,)


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_candidate_serves_the_predictor(exported: tuple[torch.nn.Module, Path], kind: str) -> None:
    """Through Predictor (the app's and CLIs' path): same masks as torch on a 300x200 slice."""
    model, folder = exported
    image = (np.random.default_rng(1).random((300, 200)) * 255).astype(np.uint8)
    box = np.array([20.0, 30.0, 150.0, 260.0])
    masks = [
        Predictor(b).decode(Predictor(b).encode(image), box).masks
        for b in (TorchBackend(model), _candidate(kind, folder))
    ]
    assert masks[0].shape == (1, 300, 200)
    assert np.mean(masks[0] == masks[1]) > 0.999


def test_openvino_bf16_keeps_each_calls_prepared_image(exported: tuple[torch.nn.Module, Path]) -> None:
    """bf16 OpenVINO hands the prepared image to the decoders in its own buffers: calls from two threads at once
    (three boxes: a pair and a single per call) get exactly their serial results, close to torch's masks."""
    import threading

    pytest.importorskip("openvino")
    from medsam_desktop.core.backends.openvino_backend import OpenVinoBackend

    model, folder = exported
    backend = OpenVinoBackend(NetworkFiles.in_folder(folder, ".onnx"), threads=2, precision="bf16", cache=False)
    rng = np.random.default_rng(3)
    embeddings = [rng.standard_normal((1, 256, 64, 64)).astype(np.float32) * s for s in (0.5, 1.5)]
    boxes = np.array([[10, 20, 120, 140], [50, 50, 250, 200], [100, 30, 200, 90]], dtype=np.float32)
    serial = [backend.decode(e, boxes)[0] for e in embeddings]
    assert not np.allclose(serial[0], serial[1], atol=1e-2)  # the two calls are told apart
    torch_logits = TorchBackend(model).decode(embeddings[0], boxes)[0]
    assert np.mean((serial[0] > 0) == (torch_logits > 0)) > 0.99
    results: list[tuple[int, np.ndarray]] = []

    def work(i: int) -> None:
        for _ in range(4):
            results.append((i, backend.decode(embeddings[i], boxes)[0]))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    for i, logits in results:
        np.testing.assert_array_equal(logits, serial[i])


def test_openvino_compiles_decoders_without_a_setting_it_does_not_know(
    exported: tuple[torch.nn.Module, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A decoder setting an OpenVINO release does not take (DECODER_CONFIG's key is internal) is dropped with an
    INFO line, not an error; the backend still decodes like torch."""
    pytest.importorskip("openvino")
    import logging

    from medsam_desktop.core.backends import openvino_backend as eb

    model, folder = exported
    monkeypatch.setattr(eb, "DECODER_CONFIG", {"NO_SUCH_OPENVINO_KEY": "X"})
    with caplog.at_level(logging.INFO, logger=eb.__name__):
        backend = eb.OpenVinoBackend(NetworkFiles.in_folder(folder, ".onnx"), threads=2, cache=False)
    assert "NO_SUCH_OPENVINO_KEY" in caplog.text
    emb = np.random.default_rng(4).standard_normal((1, 256, 64, 64)).astype(np.float32)
    boxes = np.array([[10, 20, 120, 140]], dtype=np.float32)
    np.testing.assert_allclose(
        backend.decode(emb, boxes)[0], TorchBackend(model).decode(emb, boxes)[0], atol=2e-3, rtol=1e-3
    )


def test_layernorm2d_export_form_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """LayerNorm2d traces as reductions over the channel axis (no transposes, see model/common.py): same values
    as the fused layer_norm it uses in torch, with non-trivial weight and bias."""
    from medsam_desktop.model.common import LayerNorm2d

    torch.manual_seed(0)
    ln = LayerNorm2d(32)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 32, 8, 8) * 3 + 1
    ref = ln(x)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)


def test_boxes_split_into_exported_sizes(exported: tuple[torch.nn.Module, Path]) -> None:
    assert split_boxes(0) == [] and split_boxes(1) == [1]
    for n in range(40):
        chunks = split_boxes(n)
        assert sum(chunks) == n and set(chunks) <= set(DECODER_SIZES)
        assert chunks == sorted(chunks, reverse=True)  # largest first: as few calls as possible
        assert all(chunks.count(k) <= 1 for k in DECODER_SIZES[1:] if k * 2 in DECODER_SIZES)  # no 1+1 for a 2
    _, folder = exported
    assert all((folder / f"{decoder_stem(k)}.onnx").is_file() for k in DECODER_SIZES)
    assert (folder / PREPARE_FILE).is_file()


def test_exported_image_side_transposes_batched_tensors_only(exported: tuple[torch.nn.Module, Path]) -> None:
    """OpenVINO runs a 2-D transpose of the 4096 x 256 image tokens ~4x slower than the 3-D one (single_mask's
    ``_transposed``), so the exported graphs transpose (1, N, C) tensors, never a squeezed (N, C) one; torch
    itself keeps the faster 2-D copy, and both give the same tokens."""
    import onnx

    from medsam_desktop.model.single_mask import _transposed

    _, folder = exported
    graph = onnx.load(str(folder / PREPARE_FILE)).graph
    perms = [list(a.ints) for n in graph.node if n.op_type == "Transpose" for a in n.attribute if a.name == "perm"]
    assert perms and all(len(p) == 3 for p in perms), perms
    x = torch.randn(1, 40, 24)
    torch.testing.assert_close(_transposed(x), x.transpose(1, 2), rtol=0, atol=0)
