"""What travels to a lent GPU and back for ``distill_online.py``: the bundle (a lossless pack of the training
slices plus float16 copies of the teacher's and the student's image encoders) and the assembly of a trained
encoder into a full student checkpoint."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from medsam_desktop.model import load_checkpoint, load_teacher, save_checkpoint
from medsam_desktop.model.checkpoint import load_state_into
from medsam_desktop.model.registry import ENCODER_REGISTRY
from training.gpu_augment import IMAGE
from training.pack_shards import decode_item, pack, packed_ids
from training.runtime import save_atomic

log = logging.getLogger("distill_online")

TEACHER_FILE, STUDENT_FILE, PACK_DIR = "teacher_encoder.pt", "student_encoder.pt", "pack"


def save_half_encoder(encoder: torch.nn.Module, arch: str, path: Path, tag: str) -> None:
    """An image encoder's state (float tensors as float16) with its registry name."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in encoder.state_dict().items()}
    save_atomic({"arch": arch, "tag": tag, "state": state}, path)


def load_encoder(path: Path, device: torch.device) -> tuple[torch.nn.Module, str, str]:
    """(encoder in float32 on ``device``, arch, tag) from :func:`save_half_encoder`'s file (strict)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    encoder = ENCODER_REGISTRY[obj["arch"]]()
    load_state_into(encoder, {k: v.float() if v.is_floating_point() else v for k, v in obj["state"].items()}, path.name)
    return encoder.to(device), obj["arch"], obj.get("tag", obj["arch"])


def bundle(
    data: Path,
    out: Path,
    max_mb: float,
    student: Path,
    teacher: Path | None,
    repack: bool = False,
    exclude_packs: list[Path] | None = None,
    pack_only: bool = False,
) -> None:
    """Write ``out/pack`` (none of the items of ``exclude_packs``) and, unless ``pack_only``, the encoders."""
    out.mkdir(parents=True, exist_ok=True)
    if not pack_only:
        t_model = load_teacher() if teacher is None else load_checkpoint(teacher)
        t_arch = "litemedsam" if teacher is None else _arch_of(teacher)
        save_half_encoder(
            t_model.image_encoder, t_arch, out / TEACHER_FILE, "litemedsam" if teacher is None else teacher.stem
        )
        save_half_encoder(load_checkpoint(student).image_encoder, _arch_of(student), out / STUDENT_FILE, student.stem)
    if (out / PACK_DIR / "manifest.csv").is_file() and not repack:
        log.info("keeping the existing pack in %s (--repack to rebuild it)", out / PACK_DIR)
    else:
        pack(data, out / PACK_DIR, max_mb, codec="webp", exclude_ids=packed_ids(exclude_packs or []))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("bundle %s: %.1f MiB", out, total / 2**20)


def _arch_of(checkpoint: Path) -> str:
    obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    config = obj.get("config") if isinstance(obj, dict) else None
    return config["arch"] if isinstance(config, dict) and "arch" in config else "litemedsam"


def load_pack(pack_dir: Path) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray]:
    """Manifest rows, (N, 256, 256, 3) uint8 images, (N, 2) content sizes."""
    blob = (pack_dir / "images.bin").read_bytes()
    offsets = np.load(pack_dir / "offsets.npy")
    with (pack_dir / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    hw = np.array([[int(r["h"]), int(r["w"])] for r in rows], dtype=np.int64)
    images = np.zeros((len(rows), IMAGE, IMAGE, 3), np.uint8)
    for i in range(len(rows)):
        images[i] = decode_item(blob[offsets[i] : offsets[i + 1]], *hw[i])
    return rows, images, hw.reshape(-1, 2)


def assemble(encoder_file: Path, base: Path, out: Path) -> None:
    """A trained encoder (``train``'s output) + ``base``'s prompt encoder and mask decoder -> a checkpoint."""
    obj = torch.load(encoder_file, map_location="cpu", weights_only=True)
    model = load_checkpoint(base, arch=obj["arch"])
    load_state_into(model.image_encoder, obj["encoder"], encoder_file.name)
    extra = {k: obj[k] for k in ("teacher", "step", "val_mse", "seconds", "images", "peak_lr") if k in obj}
    save_checkpoint(model, out, obj["arch"], {"distill_online": extra})
    log.info("wrote %s (%s)", out, extra)
