"""``torchrun --nproc_per_node=2`` on CPU (gloo): the teacher trainer and the distiller run, checkpoint and keep
the two ranks' parameters identical."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_labelled import write_labelled_folder

from medsam_desktop.model import build_model, load_checkpoint, save_checkpoint
from medsam_desktop.model.checkpoint import sha256_of

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs a training script (by path, as __main__) and then saves this rank's trained parameters: every
# DistributedDataParallel the script builds is recorded, so the wrapped module can be read after main() returns.
RECORD_PARAMS = """
import os, runpy, sys
import torch

wrapped = []


class Recording(torch.nn.parallel.DistributedDataParallel):
    def __init__(self, module, *args, **kwargs):
        super().__init__(module, *args, **kwargs)
        wrapped.append(module)


torch.nn.parallel.DistributedDataParallel = Recording
script, out = sys.argv[1], sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
assert len(wrapped) == 1, wrapped
params = {k: v.detach().cpu().clone() for k, v in wrapped[0].named_parameters()}
torch.save(params, os.path.join(out, "params_rank%s.pt" % os.environ["RANK"]))
"""


def _torchrun(script: str, *args: str, params_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``script`` under torchrun with 2 CPU ranks; with ``params_dir`` each rank saves its parameters there."""
    launch = [script]
    if params_dir is not None:
        params_dir.mkdir(parents=True, exist_ok=True)
        launcher = params_dir / "record_params.py"
        launcher.write_text(RECORD_PARAMS)
        launch = [str(launcher), script, str(params_dir)]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        f"--master_port={_free_port()}",
        *launch,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _assert_ranks_agree(params_dir: Path) -> None:
    """Both ranks hold the same trained parameters (DDP's averaged gradients, the same update on each)."""
    p0 = torch.load(params_dir / "params_rank0.pt", weights_only=True)
    p1 = torch.load(params_dir / "params_rank1.pt", weights_only=True)
    assert p0 and p0.keys() == p1.keys()
    for name, value in p0.items():
        torch.testing.assert_close(p1[name], value, rtol=0, atol=0, msg=f"ranks disagree on {name}")


def _write_shards(data: Path, tag: str, n: int = 6) -> None:
    """One shard of random (256, 256, 3) uint8 images, a manifest and fp16 (256, 64, 64) teacher targets."""
    rng = np.random.default_rng(0)
    np.save(data / "shard_0000.npy", rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8))
    cache = data / f"teacher_{tag}"
    cache.mkdir()
    with (data / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "shard", "row", "group", "modality", "source", "split", "h", "w", "rank"])
        for i in range(n):
            item = f"0000_{i:04d}"
            writer.writerow([item, 0, i, f"g{i}", "ct", "synth", "val" if i == n - 1 else "train", 256, 256, i])
            np.save(cache / f"{item}.npy", rng.standard_normal((256, 64, 64)).astype(np.float16))


def test_train_teacher_under_torchrun(tmp_path: Path) -> None:
    data = write_labelled_folder(tmp_path / "labelled")
    out = tmp_path / "run"
    _torchrun(
        "training/train_teacher.py",
        "--data",
        str(data),
        "--out",
        str(out),
        "--encoder-config",
        "tiny",
        "--batch-size",
        "2",
        "--max-steps",
        "3",
        "--val-every",
        "2",
        "--val-items",
        "2",
        "--threads",
        "1",
        params_dir=tmp_path / "params",
    )
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]
    assert state["step"] == 3
    _assert_ranks_agree(tmp_path / "params")
    assert load_checkpoint(out / "best.pt").image_encoder.__class__.__name__ == "SwinEncoder"


def test_distill_under_torchrun(tmp_path: Path) -> None:
    data, out = tmp_path / "shards", tmp_path / "distill"
    data.mkdir()
    teacher = data / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint(build_model("swin_tiny_test"), teacher, "swin_tiny_test")
    _write_shards(data, f"teacher-{sha256_of(teacher)[:8]}")
    _torchrun(
        "training/distill.py",
        "--data",
        str(data),
        "--out",
        str(out),
        "--teacher",
        str(teacher),
        "--batch-size",
        "2",
        "--max-steps",
        "3",
        "--val-every",
        "2",
        "--threads",
        "1",
        params_dir=tmp_path / "params",
    )
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]
    assert state["step"] == 3
    _assert_ranks_agree(tmp_path / "params")
    student = load_checkpoint(out / "best.pt", arch="repvit_m0_6")
    assert student.image_encoder.__class__.__name__ == "RepViTEncoder"
