"""The batch of each training step, built in the loop's process or by DataLoader workers (GPU runs).

A step's batch is a pure function of (seed, step): one numpy Generator seeded with both draws the torch
seed of the step first, then every sample. Workers therefore change when a batch is built, never what it
holds, and a resumed or parallel run computes what a serial one computes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from edge_vos.train.config import TrainConfig
from edge_vos.train.data import TrainData, collate
from edge_vos.train.schedules import max_gap_at, stage_at

StepBatch = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # torch seed, frames, masks, selector


class StepBatches(torch.utils.data.Dataset[StepBatch]):
    """Item `step` = the batch of global step `step` (its stage, frame gap and batch size from the recipe)."""

    def __init__(self, cfg: TrainConfig, data: TrainData) -> None:
        self.cfg = cfg
        self.data = data

    def __len__(self) -> int:
        return self.cfg.total_steps

    def __getitem__(self, step: int) -> StepBatch:
        name, stage, local = stage_at(self.cfg, step)
        rng = np.random.default_rng([self.cfg.seed, step])
        torch_seed = int(rng.integers(2**62))
        batch = collate([self.data.sample(rng, name, max_gap_at(stage, local)) for _ in range(stage.batch_size)])
        return (torch_seed, *batch)


def step_batches(cfg: TrainConfig, data: TrainData, start: int, end: int) -> Iterator[StepBatch]:
    """The batches of steps start..end-1 in order; `cfg.data_workers` > 0 builds them ahead in workers."""
    batches = StepBatches(cfg, data)
    if cfg.data_workers == 0:
        return (batches[step] for step in range(start, end))
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=list(range(start, end)),
        num_workers=cfg.data_workers,
        prefetch_factor=4,
        persistent_workers=False,
        worker_init_fn=_one_thread,
    )
    return iter(loader)


def _one_thread(_: int) -> None:
    """Workers build samples with numpy/OpenCV; torch threads there would only compete with the loop."""
    torch.set_num_threads(1)
