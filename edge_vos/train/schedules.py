"""The recipe's schedules: stage, learning rate, frame gap and bootstrap share as pure functions of the step.

Pure functions of the global step, so resuming a run needs no schedule state.
"""

from __future__ import annotations

from edge_vos.train.config import StageSection, TrainConfig


def stage_at(cfg: TrainConfig, step: int) -> tuple[str, StageSection, int]:
    """(name, section, step within the stage) of global step `step` (0-based)."""
    if step < cfg.static.steps:
        return "static", cfg.static, step
    return "video", cfg.video, step - cfg.static.steps


def lr_at(stage: StageSection, local: int) -> float:
    return stage.lr * (stage.lr_decay if local >= stage.lr_decay_at * stage.steps else 1.0)


def max_gap_at(stage: StageSection, local: int) -> int:
    ramp = max(1.0, stage.gap_ramp * stage.steps)
    frac = min(1.0, local / ramp)
    return int(round(stage.max_gap_start + frac * (stage.max_gap_end - stage.max_gap_start)))


def bootstrap_p_at(cfg: TrainConfig, stage: StageSection, local: int) -> float:
    """Share of hardest pixels kept: 1 during warm-up, then linear to p_end at anneal_end of the stage."""
    start, end = cfg.loss.warmup * stage.steps, cfg.loss.anneal_end * stage.steps
    if local < start:
        return 1.0
    if local >= end or end <= start:
        return cfg.loss.p_end
    return 1.0 + (cfg.loss.p_end - 1.0) * (local - start) / (end - start)
