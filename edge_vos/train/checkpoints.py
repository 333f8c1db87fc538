"""Checkpoints of a run (weights + optimizer state + step, resumable) and exported networks (for the tracker)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from edge_vos.config import to_dict
from edge_vos.model.network import STCN, build_network
from edge_vos.train.config import TrainConfig
from edge_vos.train.setup import freeze_key_low_levels

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"


def save_checkpoint(
    path: Path, net: STCN, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig, loss_avg: float = math.nan
) -> None:
    """Weights + optimizer state + step in one safetensors file (written atomically)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    state = opt.state_dict()
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{index}.{name}"] = tensor.detach().cpu().contiguous()
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

    out = copy.deepcopy(net).cpu().eval()
    if cfg.export_fp16:
        out = out.half()  # floating tensors only; BN's num_batches_tracked stays int64
    meta = {
        "steps": step, "readout": cfg.readout.kind, "seed": cfg.seed, "dtype": "fp16" if cfg.export_fp16 else "fp32",
    }
    meta.update(extra)
    save_network(out, path, meta)
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)


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
