"""The training loop the training scripts share (``distill.py``, ``train_teacher.py``, ``distill_online.py``).

* :func:`optimizer_step` / :meth:`Trainer.step`: forward under bf16 autocast when asked, the loss in fp32,
  backward, gradient-norm clip, the update applied only when the loss and the gradient norm are finite (a
  non-finite step stops the run, or with ``skip_nonfinite`` is skipped and counted).
* :meth:`Trainer.run`: the loop: step, validation every ``val_every`` steps (the scheduler steps on the value,
  ``best.pt`` is written on improvement), the stop on ``max_steps``/``max_hours`` agreed by all ranks, and a
  resumable ``last.pt`` at the stop and at least every ``checkpoint_minutes`` (at most 15), written atomically.
* :meth:`Trainer.resume`: continue from ``last.pt`` (model, optimizer, scheduler, loop state, optionally the
  torch RNG).
* :class:`CsvLog`: the ``log.csv`` curve (appended across resumed runs, flushed per row).

Only rank 0 writes files; under torchrun the model is wrapped by :meth:`Trainer.distribute`.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from medsam_desktop.model import save_checkpoint
from training.runtime import Runtime, any_rank, save_atomic

MAX_CHECKPOINT_MINUTES = 15.0  # a crash never loses more than this
HISTORY = 1000  # recent steps kept in Trainer.recent
STATE_FORMAT = 1  # last.pt's format_version

LossFn = Callable[[Any], "tuple[torch.Tensor, dict[str, torch.Tensor]] | torch.Tensor"]


@dataclass
class StepResult:
    """One optimiser step: fp32 loss, gradient norm (before clipping), whether the update was applied, and the
    loss parts the loss function reported (as floats)."""

    loss: float
    grad_norm: float
    applied: bool
    parts: dict[str, float] = field(default_factory=dict)


def optimizer_step(
    net: torch.nn.Module,
    params: Iterable[torch.nn.Parameter],
    opt: torch.optim.Optimizer,
    inputs: Sequence[torch.Tensor],
    loss_fn: LossFn,
    clip: float,
    bf16: bool,
) -> StepResult:
    """Forward ``net(*inputs)`` (bf16 autocast if asked), ``loss_fn(output)`` -> loss (fp32) or (loss, parts),
    backward, clip the gradient norm of ``params`` to ``clip`` (<= 0: off); the update is applied only when the
    loss and the gradient norm are finite."""
    return accumulated_step(net, params, opt, [(inputs, loss_fn, 1.0)], clip, bf16)


def accumulated_step(
    net: torch.nn.Module,
    params: Iterable[torch.nn.Parameter],
    opt: torch.optim.Optimizer,
    micro: Sequence[tuple[Sequence[torch.Tensor], LossFn, float]],
    clip: float,
    bf16: bool,
) -> StepResult:
    """One update from several micro-batches ``(inputs, loss_fn, weight)``: each is forwarded and backpropagated
    in turn with its loss times ``weight`` (the weights of a batch split by size sum to 1, so the gradient is the
    whole batch's), then the clip and the finite-only update of :func:`optimizer_step` once. The loss and the
    parts reported are the weighted sums. Only one micro-batch's activations are alive at a time; under DDP
    every micro-batch's backward all-reduces (the same gradient, more traffic)."""
    params = list(params)
    opt.zero_grad(set_to_none=True)
    total = torch.zeros(())
    parts: dict[str, float] = {}
    for inputs, loss_fn, weight in micro:
        with torch.autocast(inputs[0].device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(*inputs)
        loss = loss_fn(out)
        loss, loss_parts = loss if isinstance(loss, tuple) else (loss, {})
        (loss * weight).backward()
        total = total + weight * loss.detach().cpu()
        for k, v in loss_parts.items():
            parts[k] = parts.get(k, 0.0) + weight * float(v)
    gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
    applied = bool(torch.isfinite(total)) and bool(torch.isfinite(gnorm))
    if applied:
        opt.step()
    return StepResult(total.item(), float(gnorm), applied, parts)


class CsvLog:
    """``log.csv`` on rank 0 (a no-op elsewhere): the header when the file is new (or ``append=False``), one
    flushed row per :meth:`row`."""

    def __init__(self, path: Path, fields: Sequence[str], enabled: bool = True, append: bool = True) -> None:
        self._fh = None
        self._writer: Any = None
        if enabled:
            new = not append or not path.exists()
            self._fh = path.open("a" if append else "w", newline="")
            self._writer = csv.writer(self._fh)
            if new:
                self.row(fields)

    @property
    def enabled(self) -> bool:
        return self._fh is not None

    def row(self, values: Sequence[Any]) -> None:
        if self._fh is not None:
            self._writer.writerow(values)
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: the columns of :meth:`Trainer.step_row`, the log of a single-process trainer
STEP_FIELDS = ("step", "seconds", "lr", "loss", "val")


class Trainer:
    """The shared training loop of one model and its optimizer.

    ``model`` is the trained module (its parameters are clipped; :meth:`distribute` wraps it for the forward),
    ``saved`` the module whose weights go into ``last.pt`` and ``best.pt`` (default ``model``; e.g. the whole
    student around the trained encoder). ``state`` is the loop state saved in ``last.pt`` (``step``,
    ``seconds``, ``best_val`` and whatever the script adds). ``best.pt`` is our checkpoint format
    (``save_checkpoint(saved, ..., arch, {**best_info, "step", val_key, "seconds"})``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        *,
        sched: Any = None,
        clip: float = 1.0,
        bf16: bool = False,
        rt: Runtime | None = None,
        out: Path | None = None,
        saved: torch.nn.Module | None = None,
        arch: str = "",
        state: dict[str, Any] | None = None,
        best_info: dict[str, Any] | None = None,
        val_key: str = "val_loss",
        val_label: str = "val loss",
        val_every: int = 0,
        validate_at_stop: bool = False,
        max_steps: int = 0,
        max_hours: float = 0.0,
        checkpoint_minutes: float = 10.0,
        keep_rng: bool = False,
        skip_nonfinite: bool = False,
        log: logging.Logger | None = None,
    ) -> None:
        self.model, self.net, self.opt, self.sched = model, model, opt, sched
        self.saved = saved if saved is not None else model
        self.clip, self.bf16, self.skip_nonfinite = clip, bf16, skip_nonfinite
        self.rt = rt if rt is not None else Runtime(1, 0, next(model.parameters()).device)
        self.out, self.arch = out, arch
        self.state: dict[str, Any] = {"step": 0, "seconds": 0.0, "best_val": math.inf, **(state or {})}
        self.best_info = dict(best_info or {})
        self.val_key, self.val_label = val_key, val_label
        self.val_every, self.validate_at_stop = val_every, validate_at_stop
        self.max_steps, self.max_hours = max_steps, max_hours
        self.log = log or logging.getLogger("trainer")
        if checkpoint_minutes > MAX_CHECKPOINT_MINUTES:
            self.log.warning(
                "--checkpoint-minutes %g: last.pt is written every %g minutes at most",
                checkpoint_minutes,
                MAX_CHECKPOINT_MINUTES,
            )
        self.checkpoint_minutes = min(checkpoint_minutes, MAX_CHECKPOINT_MINUTES)
        self.keep_rng = keep_rng
        self.skipped = 0  # non-finite steps skipped (skip_nonfinite)
        self.recent: list[StepResult] = []  # the last HISTORY steps of this session
        self.session_steps = 0
        self.t_start = self.t_ckpt = time.time()

    # ------------------------------------------------------------------------------------------------- state

    @property
    def is_main(self) -> bool:
        return self.rt.is_main

    @property
    def last_path(self) -> Path:
        assert self.out is not None, "this trainer writes no files"
        return self.out / "last.pt"

    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def resume(self, mismatch: Callable[[dict[str, Any]], str | None] | None = None) -> bool:
        """Continue from ``last.pt`` when it exists: model, optimizer, scheduler, loop state (and the torch RNG
        with ``keep_rng``). ``mismatch(saved state)`` returns why that run cannot be continued (stop), or None."""
        last = self.last_path
        if not last.is_file():
            return False
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        reason = mismatch(ckpt["state"]) if mismatch is not None else None
        if reason:
            raise SystemExit(f"{last} {reason}")
        self.saved.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(ckpt["scheduler"])
        self.state = ckpt["state"]
        if self.keep_rng:
            torch.set_rng_state(ckpt["torch_rng"])
        self.log.info("resumed at step %d (best val %.5f)", self.state["step"], self.state["best_val"])
        return True

    def save_state(self) -> None:
        """``last.pt``: everything :meth:`resume` needs, written atomically."""
        payload: dict[str, Any] = {"model": self.saved.state_dict(), "optimizer": self.opt.state_dict()}
        if self.sched is not None:
            payload["scheduler"] = self.sched.state_dict()
        payload["state"] = self.state
        if self.keep_rng:
            payload["torch_rng"] = torch.get_rng_state()
        payload["format_version"] = STATE_FORMAT
        save_atomic(payload, self.last_path)

    def checkpoint(self, force: bool = False) -> None:
        """Rank 0 writes ``last.pt`` when ``force`` or ``checkpoint_minutes`` have passed since the last one."""
        if self.is_main and (force or time.time() - self.t_ckpt >= self.checkpoint_minutes * 60):
            self.save_state()
            self.t_ckpt = time.time()

    # -------------------------------------------------------------------------------------------------- step

    def distribute(self, **ddp: Any) -> torch.nn.Module:
        """Under torchrun: the forward goes through DistributedDataParallel (built after :meth:`resume`, so
        every rank starts from rank 0's resumed weights)."""
        if self.rt.world > 1:
            device = self.rt.device
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids, **ddp)
        return self.net

    def step(self, inputs: Sequence[torch.Tensor], loss_fn: LossFn) -> StepResult:
        """One optimiser step (:func:`optimizer_step`). A non-finite loss or gradient stops the run (no update
        made), or with ``skip_nonfinite`` is counted in ``skipped``."""
        return self.step_micro([(inputs, loss_fn, 1.0)])

    def step_micro(self, micro: Sequence[tuple[Sequence[torch.Tensor], LossFn, float]]) -> StepResult:
        """:meth:`step` from micro-batches ``(inputs, loss_fn, weight)`` (:func:`accumulated_step`)."""
        result = accumulated_step(self.net, self.model.parameters(), self.opt, micro, self.clip, self.bf16)
        if not result.applied:
            if not self.skip_nonfinite:
                raise SystemExit(
                    f"non-finite loss/gradient at step {self.state['step']}: stop and inspect (no update made)"
                )
            self.skipped += 1
        return result

    # ---------------------------------------------------------------------------------------------- validate

    def validated(self, value: float) -> bool:
        """Record a validation value: the scheduler steps on it; True (and ``best_val`` updated) on rank 0 when
        it improves on the best so far."""
        if self.sched is not None:
            self.sched.step(value)
        if self.is_main and value < self.state["best_val"]:
            self.state["best_val"] = value
            return True
        return False

    def save_best(self, value: float) -> None:
        assert self.out is not None
        info = {**self.best_info, "step": self.state["step"], self.val_key: value, "seconds": self.state["seconds"]}
        save_checkpoint(self.saved, self.out / "best.pt", self.arch, info)

    def _validate(self, validate: Callable[[], float]) -> str:
        v = validate()
        if self.validated(v):
            self.save_best(v)
        self.log.info(
            "step %d %s %.5f (best %.5f) lr %.2e",
            self.state["step"],
            self.val_label,
            v,
            self.state["best_val"],
            self.lr(),
        )
        return f"{v:.6f}"

    # -------------------------------------------------------------------------------------------------- loop

    def should_stop(self) -> bool:
        """``max_steps`` reached or ``max_hours`` passed on any rank (all ranks stop together: a rank that left
        early would hang the others in their next all-reduce)."""
        stop = bool(self.max_steps and self.state["step"] >= self.max_steps) or bool(
            self.max_hours and time.time() - self.t_start >= self.max_hours * 3600
        )
        return any_rank(stop, self.rt)

    def step_row(self, result: StepResult, val: str) -> list[str]:
        """The :data:`STEP_FIELDS` row of the step just taken (``val`` as :meth:`run` passes it)."""
        st = self.state
        return [str(st["step"]), f"{st['seconds']:.0f}", f"{self.lr():.2e}", f"{result.loss:.4f}", val]

    def seconds_per_step(self) -> float:
        return (time.time() - self.t_start) / max(1, self.session_steps)

    def run(
        self,
        batches: Iterable[Any],
        step: Callable[[Any], StepResult],
        validate: Callable[[], float] | None = None,
        on_step: Callable[[StepResult, str], None] | None = None,
    ) -> None:
        """Train until :meth:`should_stop`: ``step(batch)`` (normally via :meth:`step`), then validation when the
        step is a multiple of ``val_every`` (and at the stop with ``validate_at_stop``), then ``on_step(result,
        val)`` (``val``: the formatted value, "" when none), then :meth:`checkpoint` (always at the stop)."""
        self.t_start = self.t_ckpt = time.time()
        seconds0 = self.state["seconds"]
        for batch in batches:
            result = step(batch)
            self.state["step"] += 1
            self.session_steps += 1
            self.recent.append(result)
            self.state["seconds"] = seconds0 + time.time() - self.t_start
            stop = self.should_stop() if self.validate_at_stop else False
            due = self.val_every > 0 and self.state["step"] % self.val_every == 0
            val = self._validate(validate) if validate is not None and (due or stop) else ""
            if not self.validate_at_stop:
                stop = self.should_stop()
            if on_step is not None:
                on_step(result, val)
            self.recent = self.recent[-HISTORY:]
            self.checkpoint(force=stop)
            if stop:
                break

    def close(self) -> None:
        """Leave the torchrun process group (after every rank got here)."""
        if self.rt.world > 1:
            dist.barrier()
            dist.destroy_process_group()


def cosine_lr(peak: float, step: int, frac: float, warmup: int, floor: float = 0.02) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``peak`` to ``floor * peak`` over ``frac``
    (elapsed / budget, clipped to [0, 1])."""
    frac = min(max(frac, 0.0), 1.0)
    return peak * min(1.0, (step + 1) / max(1, warmup)) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac)))
