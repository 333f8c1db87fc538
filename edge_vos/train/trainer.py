"""The training loop: STCN's recipe on T-frame clips, selectable readout, resumable checkpoints, CSV log.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_vos.config import to_dict
from edge_vos.model.network import STCN, build_network
from edge_vos.model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from edge_vos.readout.build import build_readout
from edge_vos.train.config import StageSection, TrainConfig
from edge_vos.train.data import TrainData, collate

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
LOG_CSV = "log.csv"
CSV_FIELDS = ("step", "stage", "loss", "p", "lr", "max_gap", "sec_per_step", "elapsed_s")

Readout = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# -- recipe schedules (pure functions of the step, so resuming needs no schedule state) -----------------


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


# -- loss and readout --------------------------------------------------------------------------------------


def soft_aggregate_logits(probs: torch.Tensor) -> torch.Tensor:
    """Per-object probabilities [B,O,H,W] -> log-probabilities [B,O+1,H,W] (STCN's soft aggregation)."""
    background = torch.prod(1 - probs, dim=1, keepdim=True)
    stacked = torch.cat([background, probs], dim=1).clamp(1e-7, 1 - 1e-7)
    return torch.log_softmax(torch.log(stacked / (1 - stacked)), dim=1)


def bootstrapped_ce(log_probs: torch.Tensor, labels: torch.Tensor, p: float) -> torch.Tensor:
    """Mean cross-entropy over the hardest share `p` of all pixels in the batch (STCN's BootstrappedCE)."""
    raw = F.nll_loss(log_probs, labels, reduction="none").flatten()
    if p >= 1.0:
        return raw.mean()
    k = max(1, int(raw.numel() * p))
    return raw.topk(k, sorted=False).values.mean()


def labels_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Object masks [B,O,H,W] (0/1) -> class map [B,H,W] (0 = background, k = object k)."""
    background = (masks.sum(dim=1, keepdim=True) < 0.5).float()
    return torch.cat([background, masks], dim=1).argmax(dim=1)


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
        valid = torch.ones(B, t, dtype=torch.bool)
        mem = readout(key[:, t], mk, mv, valid)  # [B,O,Cv,h,w]

        qv_t, f8_t, f4_t = (x[:, t, None].expand(B, O, *x.shape[2:]).flatten(0, 1) for x in (qv, f8, f4))
        logits = net.decode(mem.flatten(0, 1), qv_t, f8_t, f4_t)
        probs = torch.sigmoid(logits.view(B, O, H, W)) * selector[:, :, None, None]
        log_probs = soft_aggregate_logits(probs)
        outputs.append(log_probs)
        if t < T - 1:
            values.append(encode(t, log_probs[:, 1:].exp() * selector[:, :, None, None]))
    return outputs


# -- network set-up ----------------------------------------------------------------------------------------


def build_for_training(cfg: TrainConfig) -> STCN:
    """The network of `cfg.model`, initialised as configured (ImageNet trunks, weights file or scratch)."""
    from edge_vos.model.checkpoint import init_trunks_from_torchvision, load_into, read_state_dict
    from edge_vos.model.efficientnet import init_trunks_from_efficientnet

    m = cfg.model
    net = build_network(m.arch, use_cbam=m.use_cbam)
    if m.init_weights:
        load_into(net, read_state_dict(m.init_weights))
        log.info("initialised from %s", m.init_weights)
        return net
    if m.init == "scratch":
        log.info("trunks from scratch (random)")
        return net
    done = init_trunks_from_efficientnet(net) if m.init in ("auto", "imagenet") else []
    if m.key_imagenet and not any(n == "key_encoder" for n in done):
        init_trunks_from_torchvision(net, m.key_imagenet, m.value_imagenet or None)
        done.append("key_encoder (torchvision file)")
    if m.init == "imagenet" and not done:
        raise FileNotFoundError(
            f"{m.arch}: init 'imagenet' needs model.key_imagenet (a torchvision ResNet file) for ResNet trunks"
        )
    if not done:
        log.warning("%s: no ImageNet source for its trunks; training them from scratch", m.arch)
    return net


def freeze_key_low_levels(net: STCN, upto: str) -> int:
    """Stops gradients into the key trunk up to f4 or f8 (stem included); returns the frozen tensor count."""
    from edge_vos.model.efficientnet import EfficientNetLiteTrunk

    if not upto:
        return 0
    enc = net.key_encoder
    if isinstance(enc, EfficientNetLiteTrunk):
        last = enc.f4_block if upto == "f4" else enc.f8_block
        modules: list[nn.Module] = [enc.conv1, enc.bn1, *list(enc.blocks)[: last + 1]]
    else:
        modules = [enc.conv1, enc.bn1, getattr(enc, enc.first_stage_name)]
        if upto == "f8":
            modules.append(enc.layer2)
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    return len(params)


def set_train_mode(net: nn.Module, freeze_bn: bool) -> None:
    net.train()
    if freeze_bn:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


# -- checkpoints -------------------------------------------------------------------------------------------


def save_checkpoint(
    path: Path, net: STCN, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig, loss_avg: float = math.nan
) -> None:
    """Weights + optimizer state + step in one safetensors file (written atomically)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    state = opt.state_dict()
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{index}.{name}"] = tensor.detach().contiguous()
    meta = {
        "step": str(step), "loss_avg": repr(loss_avg), "arch": net.arch, "cbam": str(net.use_cbam),
        "config": json.dumps(to_dict(cfg)), "param_groups": json.dumps(state["param_groups"]),
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_checkpoint(path: Path, net: STCN, opt: torch.optim.Optimizer) -> tuple[int, float]:
    """Restores weights and optimizer state; returns the steps already done and the running loss."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, index, name = k.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), float(meta.get("loss_avg", "nan"))


def export_network(net: STCN, path: Path, cfg: TrainConfig, step: int, extra: dict[str, object]) -> None:
    """Final weights via save_network (arch in the header); float16 storage when asked."""
    import copy

    from edge_vos.model.checkpoint import save_network

    out = copy.deepcopy(net).eval()
    if cfg.export_fp16:
        out = out.half()  # floating tensors only; BN's num_batches_tracked stays int64
    meta = {
        "steps": step, "readout": cfg.readout.kind, "seed": cfg.seed, "dtype": "fp16" if cfg.export_fp16 else "fp32",
    }
    meta.update(extra)
    save_network(out, path, meta)
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)


# -- the loop ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    export: Path


def _to_tensors(batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[torch.Tensor, ...]:
    frames, masks, selector = batch
    x = torch.from_numpy(frames).float().div_(255).permute(0, 1, 4, 2, 3)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    return (x - mean) / std, torch.from_numpy(masks), torch.from_numpy(selector)


def export_checkpoint(cfg: TrainConfig, path: Path | None = None) -> Path:
    """Writes the network of the run's current checkpoint (any step) as our safetensors, for evaluation."""
    out = Path(cfg.out)
    net = build_network(cfg.model.arch, use_cbam=cfg.model.use_cbam)
    freeze_key_low_levels(net, cfg.model.freeze_key_to)  # the optimizer state lists trainable tensors only
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad])
    step, _ = load_checkpoint(out / CHECKPOINT, net, opt)
    path = path or out / f"step{step}.safetensors"
    export_network(net, path, cfg, step, {"partial": "true"})
    return path


def train(cfg: TrainConfig, resume: bool = True, max_steps: int | None = None) -> TrainResult:
    """Runs (or resumes) training as configured; `max_steps` stops early (tests, interrupted runs)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    net = build_for_training(cfg)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    frozen = freeze_key_low_levels(net, cfg.model.freeze_key_to)
    if frozen:
        log.info("key trunk frozen up to %s (%d tensors)", cfg.model.freeze_key_to, frozen)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.static.lr, weight_decay=cfg.weight_decay)
    ckpt = out / CHECKPOINT
    start, loss_avg = 0, math.nan
    if resume and ckpt.is_file():
        start, loss_avg = load_checkpoint(ckpt, net, opt)
        log.info("resumed from %s at step %d", ckpt, start)
    _trim_csv(out / LOG_CSV, start)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    data = TrainData(cfg.data, cfg.seed)
    readout = build_readout(cfg.readout)
    end = cfg.total_steps if max_steps is None else min(cfg.total_steps, max_steps)
    set_train_mode(net, cfg.model.freeze_bn)

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
            rng = np.random.default_rng([cfg.seed, step])
            torch.manual_seed(int(rng.integers(2**62)))
            batch = collate([data.sample(rng, name, gap) for _ in range(stage.batch_size)])
            frames, masks, selector = _to_tensors(batch)
            outputs = forward_clip(net, readout, frames, masks, selector)
            loss = sum(
                bootstrapped_ce(lp, labels_from_masks(masks[:, t + 1] * selector[:, :, None, None]), p)
                for t, lp in enumerate(outputs)
            ) / len(outputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
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
        step = end
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - t_start
    export = Path(cfg.export) if cfg.export else out / "final.safetensors"
    if step == cfg.total_steps:
        export_network(net, export, cfg, step, {"train_seconds_last_session": round(seconds, 1)})
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
