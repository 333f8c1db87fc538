"""The training loop: STCN's recipe on T-frame clips, selectable readout, resumable checkpoints, CSV log.

The parts live beside it: schedules.py (stage, lr, gap, bootstrap share), loss.py, setup.py
(network, initialisation, freezing), checkpoints.py, data.py (samples); the readout in the loop comes from
readout.build_readout, the tracker's own constructor.

Per sample (`data.max_objects` slots, unused ones zeroed by a selector): frame 0 is encoded into memory
with its true masks; each later frame is read out from all frames before it, decoded, soft-aggregated over
objects and (except the last) encoded into memory with its *predicted* probabilities. The loss is
bootstrapped cross-entropy over [background, objects] on frames 1..T-1.

Reproducibility: the model is initialised from `seed`; step s draws its samples from a numpy Generator
seeded (seed, s) and reseeds torch from the same pair, so a run resumed from a checkpoint (weights,
optimizer state, step) computes exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_vos.config import ConfigError, to_dict
from edge_vos.model.network import STCN
from edge_vos.model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from edge_vos.readout.build import Readout, build_readout
from edge_vos.train.batches import step_batches
from edge_vos.train.checkpoints import CHECKPOINT, export_checkpoint, export_network, load_checkpoint, save_checkpoint
from edge_vos.train.config import TrainConfig
from edge_vos.train.data import TrainData
from edge_vos.train.loss import bootstrapped_ce, labels_from_masks, soft_aggregate_logits
from edge_vos.train.schedules import bootstrap_p_at, lr_at, max_gap_at, stage_at
from edge_vos.train.setup import build_for_training, freeze_key_low_levels, set_train_mode

log = logging.getLogger(__name__)

LOG_CSV = "log.csv"
CSV_FIELDS = ("step", "stage", "loss", "p", "lr", "max_gap", "sec_per_step", "elapsed_s")

__all__ = [
    "CHECKPOINT", "TrainResult", "bootstrap_p_at", "bootstrapped_ce", "export_checkpoint", "forward_clip",
    "labels_from_masks", "lr_at", "max_gap_at", "soft_aggregate_logits", "stage_at", "train",
]


def forward_clip(
    net: STCN, readout: Readout, frames: torch.Tensor, masks: torch.Tensor, selector: torch.Tensor
) -> list[torch.Tensor]:
    """frames [B,T,3,H,W] normalised, masks [B,T,O,H,W], selector [B,O] -> log-probs of frames 1.. each [B,O+1,H,W]."""
    B, T, _, H, W = frames.shape
    O = masks.shape[2]
    key, qv, f16, f8, f4 = net.encode_key(frames.flatten(0, 1))
    key, qv, f16, f8, f4 = (x.unflatten(0, (B, T)) for x in (key, qv, f16, f8, f4))

    def encode(t: int, probs: torch.Tensor) -> torch.Tensor:
        """Values of frame t for all objects, probs [B,O,H,W] -> [B,O,Cv,h,w]."""
        others = probs.sum(dim=1, keepdim=True) - probs
        image = frames[:, t, None].expand(B, O, 3, H, W).flatten(0, 1)
        feat = f16[:, t, None].expand(B, O, *f16.shape[2:]).flatten(0, 1)
        v = net.encode_value(image, feat, probs.flatten(0, 1)[:, None], others.flatten(0, 1)[:, None])
        return v.unflatten(0, (B, O))

    values = [encode(0, masks[:, 0] * selector[:, :, None, None])]
    outputs = []
    for t in range(1, T):
        mk = key[:, :t]
        mv = torch.stack(values, dim=2)  # [B,O,t,Cv,h,w]
        valid = torch.ones(B, t, dtype=torch.bool, device=frames.device)
        mem = readout(key[:, t], mk, mv, valid)  # [B,O,Cv,h,w]

        qv_t, f8_t, f4_t = (x[:, t, None].expand(B, O, *x.shape[2:]).flatten(0, 1) for x in (qv, f8, f4))
        logits = net.decode(mem.flatten(0, 1), qv_t, f8_t, f4_t).float()  # the loss in fp32 under autocast
        probs = torch.sigmoid(logits.view(B, O, H, W)) * selector[:, :, None, None]
        log_probs = soft_aggregate_logits(probs)
        outputs.append(log_probs)
        if t < T - 1:
            values.append(encode(t, log_probs[:, 1:].exp() * selector[:, :, None, None]))
    return outputs


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    export: Path


def _to_tensors(
    frames: np.ndarray, masks: np.ndarray, selector: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """numpy arrays (or the tensors a DataLoader made of them) -> normalised frames, masks, selector on `device`."""
    x = torch.as_tensor(frames).to(device).float().div_(255).permute(0, 1, 4, 2, 3)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
    return (x - mean) / std, torch.as_tensor(masks).to(device), torch.as_tensor(selector).to(device)


def training_device(cfg: TrainConfig) -> torch.device:
    """The configured device; asking for CUDA where there is none is an error that says so."""
    cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not cuda:
        raise ConfigError("device", f"'cuda' asked but CUDA is not available (torch {torch.__version__})")
    if cfg.amp != "none" and not (cuda and cfg.device != "cpu"):
        raise ConfigError("amp", f"{cfg.amp!r} mixed precision is for CUDA runs; use 'none' on a CPU")
    return torch.device("cuda" if cuda and cfg.device != "cpu" else "cpu")


def train(cfg: TrainConfig, resume: bool = True, max_steps: int | None = None) -> TrainResult:
    """Runs (or resumes) training as configured; `max_steps` stops early (tests, interrupted runs)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = training_device(cfg)
    torch.manual_seed(cfg.seed)
    net = build_for_training(cfg).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    frozen = freeze_key_low_levels(net, cfg.model.freeze_key_to)
    if frozen:
        log.info("key trunk frozen up to %s (%d tensors)", cfg.model.freeze_key_to, frozen)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.static.lr, weight_decay=cfg.weight_decay)
    ckpt = out / CHECKPOINT
    end = cfg.total_steps if max_steps is None else min(cfg.total_steps, max_steps)
    start, loss_avg = 0, math.nan
    if resume and ckpt.is_file():
        start, loss_avg = load_checkpoint(ckpt, net, opt)
        log.info("resumed from %s at step %d", ckpt, start)
    _trim_csv(out / LOG_CSV, start)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    batches = step_batches(cfg, TrainData(cfg.data, cfg.seed), start, end)
    readout = build_readout(cfg.readout)
    set_train_mode(net, cfg.model.freeze_bn)

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    progress = None
    if cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=cfg.total_steps, initial=start, unit="step", dynamic_ncols=True, mininterval=2.0)
    t_start = time.perf_counter()
    step = start
    with (out / LOG_CSV).open("a", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=CSV_FIELDS)
        if csv_file.tell() == 0:
            writer.writeheader()
        for step in range(start, end):
            t0 = time.perf_counter()
            name, stage, local = stage_at(cfg, step)
            lr, gap, p = lr_at(stage, local), max_gap_at(stage, local), bootstrap_p_at(cfg, stage, local)
            for group in opt.param_groups:
                group["lr"] = lr
            torch_seed, *batch = next(batches)
            torch.manual_seed(int(torch_seed))
            frames, masks, selector = _to_tensors(*batch, device=device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                outputs = forward_clip(net, readout, frames, masks, selector)
            loss = sum(
                bootstrapped_ce(lp, labels_from_masks(masks[:, t + 1] * selector[:, :, None, None]), p)
                for t, lp in enumerate(outputs)
            ) / len(outputs)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[arg-type]
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            value = float(loss.detach())  # type: ignore[union-attr]
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {step}")
            loss_avg = value if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * value
            dt = time.perf_counter() - t0
            done = step + 1
            if done % cfg.log_every == 0 or done == end:
                writer.writerow({
                    "step": done, "stage": name, "loss": f"{value:.5f}", "p": f"{p:.3f}", "lr": f"{lr:.2e}",
                    "max_gap": gap, "sec_per_step": f"{dt:.3f}", "elapsed_s": f"{time.perf_counter() - t_start:.1f}",
                })
                csv_file.flush()
                log.debug("step %d %s loss %.4f p %.2f lr %.1e %.2fs", done, name, value, p, lr, dt)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(stage=name, loss=f"{loss_avg:.4f}", p=f"{p:.2f}", refresh=False)
            if done % cfg.checkpoint_every == 0 or done == end:
                save_checkpoint(ckpt, net, opt, done, cfg, loss_avg)
            if cfg.snapshot_every and done % cfg.snapshot_every == 0 and done < cfg.total_steps:
                export_network(net, out / f"step{done}.safetensors", cfg, done, {"partial": "true"})
            if cfg.time_limit_s and time.perf_counter() - t_start > cfg.time_limit_s and done < end:
                log.warning("time limit %.0f s reached at step %d of %d", cfg.time_limit_s, done, end)
                save_checkpoint(ckpt, net, opt, done, cfg, loss_avg)
                break
        else:
            done = end
        step = done
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - t_start
    export = Path(cfg.export) if cfg.export else out / "final.safetensors"
    if step == cfg.total_steps:
        export_network(net, export, cfg, step, {"train_seconds_last_session": round(seconds, 1)})
    elif step < end:  # stopped by the time limit: the network as far as it got, marked as such
        export_network(net, export, cfg, step, {"partial": "true", "stopped_by": "time_limit_s"})
    log.info("trained steps %d..%d in %.0f s, loss (running) %.4f", start, step, seconds, loss_avg)
    return TrainResult(steps=step, final_loss=loss_avg, seconds=seconds, export=export)


def _trim_csv(path: Path, step: int) -> None:
    """Drops log rows past `step` so a resumed run's log has no rows from the lost tail."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= step)
