"""``torchrun --nproc_per_node=2`` on CPU (gloo): the teacher trainer and the distiller run and checkpoint."""

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

from medsam_desktop.model import build_model, load_checkpoint, save_checkpoint
from medsam_desktop.model.checkpoint import sha256_of

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_labelled import write_labelled_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        f"--master_port={_free_port()}",
        script,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


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
    )
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]
    assert state["step"] == 3
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
    )
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["state"]
    assert state["step"] == 3
    student = load_checkpoint(out / "best.pt", arch="repvit_m0_6")
    assert student.image_encoder.__class__.__name__ == "RepViTEncoder"
