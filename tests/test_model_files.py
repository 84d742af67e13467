"""Weights files that must be refused: corrupt, truncated, foreign pickles (never executed), wrong architecture.

Through ``load_checkpoint``/``load_named_model`` (typed one-line errors naming the file) and through the CLIs'
``--weights`` (exit 1, one ``error:`` line, nothing written).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import SideEffect

from medsam_desktop.cli import infer, segment
from medsam_desktop.model.checkpoint import (
    InvalidCheckpointError,
    ModelNotAvailableError,
    load_checkpoint,
    load_named_model,
)


@pytest.fixture(scope="module")
def good(random_weights: Path) -> Path:
    """A valid random-weights student checkpoint (the shared conftest fixture)."""
    return random_weights


def _state(good: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(good, weights_only=True)["model"])


def random_bytes(tmp: Path, good: Path) -> Path:
    (tmp / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp / "noise.pt"


def zero_bytes(tmp: Path, good: Path) -> Path:
    (tmp / "empty.pt").write_bytes(b"")
    return tmp / "empty.pt"


def truncated(tmp: Path, good: Path) -> Path:
    data = good.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    return tmp / "truncated.pt"


def foreign_torch_pickle(tmp: Path, good: Path) -> Path:
    torch.save({"model": SideEffect(tmp / "PWNED"), "format_version": 1}, tmp / "evil_torch.pt")
    return tmp / "evil_torch.pt"


def foreign_plain_pickle(tmp: Path, good: Path) -> Path:
    with open(tmp / "evil_plain.pt", "wb") as fh:
        pickle.dump({"model": SideEffect(tmp / "PWNED")}, fh)
    return tmp / "evil_plain.pt"


def not_a_dict(tmp: Path, good: Path) -> Path:
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    return tmp / "tensor.pt"


def unknown_arch(tmp: Path, good: Path) -> Path:
    torch.save({"model": _state(good), "config": {"arch": "resnet9000"}, "format_version": 1}, tmp / "alien.pt")
    return tmp / "alien.pt"


def future_format(tmp: Path, good: Path) -> Path:
    torch.save({"model": {}, "config": {"arch": "repvit_m0_6"}, "format_version": 7}, tmp / "future.pt")
    return tmp / "future.pt"


def no_model_key(tmp: Path, good: Path) -> Path:
    torch.save({"config": {"arch": "repvit_m0_6"}, "format_version": 1}, tmp / "no_model.pt")
    return tmp / "no_model.pt"


def mismatched_tensors(tmp: Path, good: Path) -> Path:
    state = _state(good)
    first, last = next(iter(state)), list(state)[-1]
    state[first] = torch.zeros(3)
    del state[last]
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model": state, "config": {"arch": "repvit_m0_6"}, "format_version": 1}, tmp / "mismatch.pt")
    return tmp / "mismatch.pt"


def bare_student_state(tmp: Path, good: Path) -> Path:
    """A bare state_dict of the student, loaded as LiteMedSAM (the default for bare state_dicts)."""
    torch.save(_state(good), tmp / "bare.pt")
    return tmp / "bare.pt"


Builder = Callable[[Path, Path], Path]

#: id -> (builder, text the message must contain)
BAD_WEIGHTS: dict[str, tuple[Builder, str]] = {
    "random_bytes": (random_bytes, "corrupt or not a MedSAM checkpoint"),
    "zero_bytes": (zero_bytes, "corrupt or not a MedSAM checkpoint"),
    "truncated": (truncated, "corrupt or not a MedSAM checkpoint"),
    "foreign_torch_pickle": (foreign_torch_pickle, "corrupt or not a MedSAM checkpoint"),
    "foreign_plain_pickle": (foreign_plain_pickle, "corrupt or not a MedSAM checkpoint"),
    "not_a_dict": (not_a_dict, "not a MedSAM checkpoint"),
    "unknown_arch": (unknown_arch, "unknown architecture 'resnet9000'"),
    "future_format": (future_format, "checkpoint format 7"),
    "no_model_key": (no_model_key, "holds no weight tensors"),
    "mismatched_tensors": (mismatched_tensors, "1 missing"),
}


def _check(err: Exception, path: Path, text: str) -> None:
    message = str(err)
    assert "\n" not in message and len(message) < 400, message
    assert path.name in message and text in message, message


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_load_checkpoint_refuses(tmp_path: Path, good: Path, case: str) -> None:
    build, text = BAD_WEIGHTS[case]
    path = build(tmp_path, good)
    with warnings.catch_warnings(), pytest.raises(InvalidCheckpointError) as info:
        warnings.simplefilter("error")  # no stray library warnings on the user's terminal
        load_checkpoint(path)
    _check(info.value, path, text)
    with pytest.raises(InvalidCheckpointError) as info:
        load_named_model("repvit_m0_6", path)
    assert not (tmp_path / "PWNED").exists(), "a pickle's __reduce__ was executed"


def test_wrong_architecture_is_named(tmp_path: Path, good: Path) -> None:
    with pytest.raises(InvalidCheckpointError) as info:
        load_named_model("litemedsam", good)
    _check(info.value, good, "holds 'repvit_m0_6', not the requested 'litemedsam'")
    bare = bare_student_state(tmp_path, good)
    with pytest.raises(InvalidCheckpointError) as info:
        load_checkpoint(bare)  # a bare state_dict is taken for LiteMedSAM
    _check(info.value, bare, "does not match the model architecture")
    assert "missing" in str(info.value) and "unexpected" in str(info.value)
    with pytest.raises(ModelNotAvailableError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    assert load_checkpoint(good).training is False  # the good file itself loads


def _segment_argv(tmp: Path, weights: Path) -> list[str]:
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp / "img.png")
    return [
        str(tmp / "img.png"),
        "--box",
        "2",
        "2",
        "20",
        "20",
        "-o",
        str(tmp / "out" / "mask.png"),
        "--model",
        "repvit_m0_6",
        "--weights",
        str(weights),
        "--threads",
        "1",
        "-q",
    ]


def _infer_argv(tmp: Path, weights: Path) -> list[str]:
    (tmp / "imgs").mkdir()
    np.savez(tmp / "imgs" / "2DBox_US_a.npz", imgs=np.zeros((32, 32, 3), np.uint8), boxes=np.array([[2, 2, 20, 20]]))
    return [
        "-i",
        str(tmp / "imgs"),
        "-o",
        str(tmp / "out"),
        "--model",
        "repvit_m0_6",
        "--weights",
        str(weights),
        "--threads",
        "1",
        "-q",
    ]


@pytest.mark.parametrize(
    "case", ["truncated", "foreign_torch_pickle", "foreign_plain_pickle", "mismatched_tensors", "missing"]
)
@pytest.mark.parametrize("tool", ["segment", "infer"])
def test_cli_weights_refused_with_one_line(
    tmp_path: Path, good: Path, case: str, tool: str, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "nope.pt" if case == "missing" else BAD_WEIGHTS[case][0](tmp_path, good)
    (tmp_path / "out").mkdir() if tool == "segment" else None
    main, argv = (segment.main, _segment_argv) if tool == "segment" else (infer.main, _infer_argv)
    code = main(argv(tmp_path, weights))
    err = capsys.readouterr().err
    assert code == 1
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and weights.name in lines[0], err
    assert "Traceback" not in err
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir()), f"output left behind: {list(out.iterdir())}"
    assert not (tmp_path / "PWNED").exists(), "a pickle's __reduce__ was executed"
