"""What the distillations of one network part (distill_value.py, distill_decoder.py) share: the learning-rate
decay, and a run directory's resumable checkpoint of the part being learnt with its optimizer."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from edge_vos.model.checkpoint import save_network
from edge_vos.model.network import STCN

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def decay_scale(step: int, steps: int, decay_from: float) -> float:
    """The learning rate's factor at `step`: 1 until `decay_from` of `steps`, then linearly down to 0.05."""
    start = int(decay_from * steps)
    if step < start:
        return 1.0
    return 1.0 - 0.95 * (step - start) / max(1, steps - start)


def save_part(run: Path, key: str, part: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    """Writes RUN/checkpoint.pt (the part's weights under `key`, the optimizer, the step) atomically."""
    checkpoint = run / CHECKPOINT
    tmp = checkpoint.with_suffix(".tmp")
    torch.save({key: part.state_dict(), "optimizer": opt.state_dict(), "step": step}, str(tmp))
    tmp.replace(checkpoint)


def resume_part(run: Path, key: str, part: nn.Module, opt: torch.optim.Optimizer | None = None) -> int | None:
    """Loads RUN/checkpoint.pt into `part` (and `opt`); its step, or None when the run has no checkpoint."""
    checkpoint = run / CHECKPOINT
    if not checkpoint.is_file():
        return None
    saved = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    part.load_state_dict(saved[key])
    if opt is not None:
        opt.load_state_dict(saved["optimizer"])
    step = int(saved["step"])
    log.info("resumed %s at step %d", checkpoint, step)
    return step


def export_part(run: Path, key: str, student: STCN, part: nn.Module, metadata: dict[str, object]) -> Path:
    """Writes the run's checkpoint, loaded into `part` of `student`, as RUN/step<N>.safetensors (to evaluate a run
    in progress)."""
    step = resume_part(run, key, part)
    if step is None:
        raise FileNotFoundError(f"no checkpoint to export: {run / CHECKPOINT}")
    path = run / f"step{step}.safetensors"
    save_network(student, path, {**metadata, "step": step})
    return path
