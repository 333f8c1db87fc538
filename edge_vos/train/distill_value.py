"""Distils the bundled value encoder into the light one (edge_vos.model.mask_branch, arch stcn-effl0-mb).

    OMP_NUM_THREADS=1 nice -n 19 python -m edge_vos.train.distill_value --out runs/lightvalue --steps 1500

The student network is the teacher's for everything but the value encoder (key encoder, key projection,
decoder: copied, frozen); its value encoder starts from the teacher's fusion tail (CBAM, second residual
block) and its first block's shortcut convolution of the key features. Loss per sample: relative squared error
of the values plus half that of the pre-attention features; with --object-weight W the /16 cells within
--object-radius cells of any object count 1 + W times (object_cell_weight; the logged errors stay unweighted).
The run directory holds checkpoint.pt (student, optimizer, step: rerunning resumes), log.csv (training loss
and, every `eval_every` steps, the relative value error on frames of the six left-out training sequences) and,
at the end, final.safetensors, a full network that `model.weights` can name.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_vos.model.checkpoint import load_network, save_network
from edge_vos.model.mask_branch import MaskBranchValueEncoder
from edge_vos.model.network import STCN, LiteValueEncoder, build_network
from edge_vos.train.distill_data import DistillData, DistillFrames, Sample
from edge_vos.train.distill_runs import decay_scale, export_part, resume_part, save_part

log = logging.getLogger(__name__)

STUDENT_ARCH = "stcn-effl0-mb"
_PART = "value_encoder"  # the checkpoint's key of the part learnt
_FEATURE_WEIGHT = 0.5  # weight of the pre-attention features' error beside the values'


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = "edge_vos/weights/default.safetensors"
    out: str = "runs/lightvalue"
    steps: int = 1500
    batch: int = 2  # samples per step (each with its own 1-4 objects)
    lr: float = 1e-3  # new layers; the teacher's copied layers take lr * tail_lr_scale
    tail_lr_scale: float = 0.1
    decay_from: float = 0.6  # share of the steps after which the learning rate decays linearly to 0.05x
    seed: int = 0
    eval_every: int = 100
    eval_samples: int = 24
    checkpoint_every: int = 25
    object_weight: float = 0.0  # extra loss weight of the /16 cells near an object (0: every cell alike)
    object_radius: int = 2  # "near": within this many /16 cells of any object's mask


def student_from_teacher(teacher: STCN) -> STCN:
    """stcn-effl0-mb with the teacher's weights everywhere but the value encoder, whose fusion tail and key
    shortcut start from the teacher's fusion block."""
    if not isinstance(teacher.value_encoder, LiteValueEncoder):
        raise ValueError(f"the teacher must have the EfficientNet value encoder (stcn-effl0), got {teacher.arch}")
    student = build_network(STUDENT_ARCH, use_cbam=teacher.use_cbam)
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("value_encoder.")}
    missing = student.load_state_dict(state, strict=False).missing_keys
    if any(not k.startswith("value_encoder.") for k in missing):
        raise ValueError(f"student does not take the teacher's weights: {missing[:10]}")
    fuser, tfuser = student.value_encoder.fuser, teacher.value_encoder.fuser
    if fuser.attention is not None and tfuser.attention is not None:
        fuser.attention.load_state_dict(tfuser.attention.state_dict())
    fuser.block2.load_state_dict(tfuser.block2.state_dict())
    shortcut = tfuser.block1.downsample
    if shortcut is None:
        raise ValueError("teacher's first fusion block has no shortcut convolution")
    key_channels = fuser.key_shortcut.in_channels
    with torch.no_grad():  # the teacher's block1 input is cat(value f16, key f16): the key half is last
        fuser.key_shortcut.weight.copy_(shortcut.weight[:, -key_channels:])
        fuser.key_shortcut.bias.copy_(shortcut.bias)
        torch.nn.init.zeros_(fuser.mix_out.weight)
        torch.nn.init.zeros_(fuser.mix_out.bias)
    return student


def teacher_targets(teacher: STCN, sample: Sample, key_f16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's values and pre-attention features (its first fusion block's output)."""
    with torch.no_grad():
        features = teacher.encode_value_local(sample.image, key_f16, sample.masks, sample.others)
        return teacher.encode_value_global(features), features


def relative_error(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """||s - t||^2 / ||t||^2 per object, averaged; with `weight` ([O or 1,1,h,w], per cell) both sums are
    weighted, so it stays a relative error."""
    dims = tuple(range(1, teacher.dim()))
    if weight is None:
        return ((student - teacher).pow(2).sum(dims) / teacher.pow(2).sum(dims).clamp_min(1e-8)).mean()
    return ((weight * (student - teacher).pow(2)).sum(dims)
            / (weight * teacher.pow(2)).sum(dims).clamp_min(1e-8)).mean()


def object_cell_weight(sample: Sample, size: tuple[int, int], object_weight: float, radius: int) -> torch.Tensor:
    """Per /16 cell: 1 + object_weight where the cell is within `radius` cells of any object's mask, else 1
    -> [1,1,h,w] (the same for every object of the sample).

    Why: the readout mixes memory values by key affinity, and the query pixels of the objects and of their
    borders attend mostly to memory cells on and around the objects; an error far from every object reaches the
    masks little, so an unweighted loss spends much of the student's capacity where it matters least."""
    union = (sample.masks[:1] + sample.others[:1]).clamp(0.0, 1.0)  # own + others' = every object, [1,1,H,W]
    near = (F.adaptive_max_pool2d(union, size) > 0.5).float()
    if radius > 0:
        near = F.max_pool2d(near, 2 * radius + 1, 1, radius)
    return 1.0 + object_weight * near


def sample_loss(student: STCN, teacher: STCN, sample: Sample, object_weight: float = 0.0,
                object_radius: int = 2) -> tuple[torch.Tensor, float]:
    """Training loss of one sample (cells near the objects weighted by 1 + `object_weight`, see
    object_cell_weight) and its values' unweighted relative error."""
    with torch.no_grad():
        key_f16 = teacher.key_encoder(sample.image)[0]
    values_t, features_t = teacher_targets(teacher, sample, key_f16)
    encoder = student.value_encoder
    assert isinstance(encoder, MaskBranchValueEncoder)
    features = encoder.encode_local(sample.image, key_f16, sample.masks, sample.others)
    values = encoder.fuser.finish(features)
    value_error = relative_error(values, values_t)
    if object_weight <= 0:
        return value_error + _FEATURE_WEIGHT * relative_error(features, features_t), float(value_error.detach())
    weight = object_cell_weight(sample, tuple(values_t.shape[-2:]), object_weight, object_radius)
    loss = relative_error(values, values_t, weight) + _FEATURE_WEIGHT * relative_error(features, features_t, weight)
    return loss, float(value_error.detach())


def held_out_error(student: STCN, teacher: STCN, samples: list[Sample]) -> float:
    """Mean relative value error over fixed samples of the left-out sequences."""
    errors = []
    with torch.no_grad():
        for sample in samples:
            key_f16 = teacher.key_encoder(sample.image)[0]
            values_t, _ = teacher_targets(teacher, sample, key_f16)
            errors.append(float(relative_error(student.encode_value(sample.image, key_f16, sample.masks,
                                                                    sample.others), values_t)))
    return float(np.mean(errors))


def distill(cfg: DistillConfig, data: DistillData) -> Path:
    """Runs (or resumes) the distillation; returns the final network's path."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_network(cfg.teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = student_from_teacher(teacher)
    encoder = student.value_encoder
    tail = [p for n, p in encoder.named_parameters() if n.startswith(("fuser.attention.", "fuser.block2.",
                                                                       "fuser.key_shortcut."))]
    fresh = [p for n, p in encoder.named_parameters() if not n.startswith(("fuser.attention.", "fuser.block2.",
                                                                            "fuser.key_shortcut."))]
    opt = torch.optim.Adam([{"params": fresh, "lr": cfg.lr}, {"params": tail, "lr": cfg.lr * cfg.tail_lr_scale}])
    base_lrs = [g["lr"] for g in opt.param_groups]
    step = resume_part(out, _PART, encoder, opt) or 0
    frames = DistillFrames(data, seed=cfg.seed)
    left_out = DistillFrames(data, seed=cfg.seed, sequences=data.exclude_sequences)
    eval_samples = [left_out.sample(np.random.default_rng([cfg.seed, 99, i])) for i in range(cfg.eval_samples)]
    log_path = out / "log.csv"
    new_log = not log_path.is_file()
    with log_path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["step", "loss", "train_value_error", "held_out_value_error", "seconds"])
            writer.writerow([step, "", "", f"{held_out_error(student, teacher, eval_samples):.4f}", 0])
        started = time.monotonic()
        while step < cfg.steps:
            for group, lr in zip(opt.param_groups, base_lrs, strict=True):
                group["lr"] = lr * decay_scale(step, cfg.steps, cfg.decay_from)
            opt.zero_grad()
            losses, errors = [], []
            for i in range(cfg.batch):
                loss, error = sample_loss(student, teacher, frames.sample(np.random.default_rng([cfg.seed, step, i])),
                                          cfg.object_weight, cfg.object_radius)
                (loss / cfg.batch).backward()
                losses.append(float(loss.detach()))
                errors.append(error)
            opt.step()
            step += 1
            held = ""
            if step % cfg.eval_every == 0 or step == cfg.steps:
                held = f"{held_out_error(student, teacher, eval_samples):.4f}"
            writer.writerow([step, f"{np.mean(losses):.4f}", f"{np.mean(errors):.4f}", held,
                             f"{time.monotonic() - started:.0f}"])
            handle.flush()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_part(out, _PART, encoder, opt, step)
    final = out / "final.safetensors"
    save_network(student, final, {"distilled_from": cfg.teacher, "distill": asdict(cfg), "data": asdict(data)})
    log.info("wrote %s", final)
    return final


def export_checkpoint(cfg: DistillConfig) -> Path:
    """Writes the run's current checkpoint as OUT/step<N>.safetensors (to evaluate a run in progress)."""
    student = student_from_teacher(load_network(cfg.teacher))
    return export_part(Path(cfg.out), _PART, student, student.value_encoder,
                       {"distilled_from": cfg.teacher, "distill": asdict(cfg)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_vos.train.distill_value", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DistillConfig()
    parser.add_argument("--out", default=defaults.out, help="run directory (a checkpoint there is resumed)")
    parser.add_argument("--teacher", default=defaults.teacher, help="stcn-effl0 weights to distil")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--crop", type=int, default=DistillData().crop, help="square training crop (multiple of 16)")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--decay-from", type=float, default=defaults.decay_from,
                        help="share of --steps after which the learning rate decays linearly to 0.05x")
    parser.add_argument("--object-weight", type=float, default=defaults.object_weight,
                        help="loss weight 1 + W on the /16 cells near any object (0: every cell alike)")
    parser.add_argument("--object-radius", type=int, default=defaults.object_radius,
                        help="'near an object' for --object-weight: within this many /16 cells of its mask")
    parser.add_argument("--export-checkpoint", action="store_true",
                        help="only write the run's checkpoint as OUT/step<N>.safetensors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    cfg = DistillConfig(teacher=args.teacher, out=args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                        eval_every=args.eval_every, seed=args.seed, decay_from=args.decay_from,
                        object_weight=args.object_weight, object_radius=args.object_radius)
    try:
        if args.export_checkpoint:
            log.info("wrote %s", export_checkpoint(cfg))
            return 0
        distill(cfg, DistillData(crop=args.crop))
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
