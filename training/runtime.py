"""Process setup shared by the training scripts: device, torchrun/DDP, logging, atomic state files."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from medsam_desktop.atomic import atomic_write


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: ``world``/``rank`` from torchrun (1/0 when run directly) and its device."""

    world: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(threads: int = 0) -> Runtime:
    """Join the torchrun process group when there is one (nccl on GPU, gloo on CPU), pick the device,
    configure logging (INFO on rank 0, warnings elsewhere) and the CPU thread count."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s"
    )
    if threads:
        torch.set_num_threads(threads)
    return Runtime(world, rank, device)


def any_rank(flag: bool, rt: Runtime) -> bool:
    """True when ``flag`` is true on any rank (so all ranks stop together instead of hanging in all-reduce)."""
    if rt.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=rt.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_rank0(value: float, rt: Runtime) -> float:
    """Rank 0's ``value`` on every rank (e.g. a schedule's budget fraction, which each rank's clock would put
    slightly apart: the same lr everywhere keeps the ranks' weights equal)."""
    if rt.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=rt.device)
    dist.broadcast(t, 0)
    return float(t.item())


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` through :func:`medsam_desktop.atomic.atomic_write` (a temporary file beside ``path``,
    fsynced, then renamed): a crash never leaves a half-written state file."""
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
