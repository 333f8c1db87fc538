"""Distils the bundled decoder into a narrower one (arch stcn-effl0-ld), the largest per-object cost.

    OMP_NUM_THREADS=1 nice -n 19 python -m edge_vos.train.distill_decoder capture --out runs/lightdecoder
    OMP_NUM_THREADS=1 nice -n 19 python -m edge_vos.train.distill_decoder train --out runs/lightdecoder

`capture` records the teacher tracker's decoder inputs and logits (decoder_capture.py says from what and why).
`train` fits the student's decoder alone (everything else is the teacher's, copied and frozen) to the
teacher's probabilities, a soft-target binary cross-entropy per pixel; it starts from the teacher's decoder
with the channels whose outgoing weights are largest kept (`narrow_decoder`). The run directory holds
checkpoint.pt (decoder, optimizer, step: rerunning resumes), log.csv (training loss and, every `eval_every`
steps, the student's mask agreement with the teacher on the monitor frames) and at the end final.safetensors,
a full network that `model.weights` can name.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_vos.model.archs import ARCHS
from edge_vos.model.checkpoint import load_network, save_network
from edge_vos.model.network import STCN, Decoder, build_network
from edge_vos.train.decoder_capture import CAPTURE, MONITOR, CaptureConfig, capture
from edge_vos.train.distill_runs import decay_scale, export_part, resume_part, save_part

log = logging.getLogger(__name__)

STUDENT_ARCH = "stcn-effl0-ld"
_PART = "decoder"  # the checkpoint's key of the part learnt


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = "edge_vos/weights/default.safetensors"
    out: str = "runs/lightdecoder"
    steps: int = 4000
    max_objects: int = 4  # objects of one stored frame per step (a random subset beyond)
    lr: float = 5e-4
    decay_from: float = 0.5  # share of the steps after which the learning rate decays linearly to 0.05x
    seed: int = 0
    eval_every: int = 250
    checkpoint_every: int = 50
    # extra loss weight where the teacher is unsure: pixels count 1 + W * 4p(1-p) (p the teacher's probability),
    # so the student spends its capacity where the teacher's decisions are made (0: every pixel alike)
    boundary_weight: float = 0.0


def _conv_slice(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> nn.Conv2d:
    """A copy of `conv` keeping the given output and input channels (None: all)."""
    w, b = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
    if out_idx is not None:
        w = w[out_idx]
        b = b[out_idx] if b is not None else None
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, padding=conv.padding, bias=b is not None)  # type: ignore[arg-type]
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None and new.bias is not None:
            new.bias.copy_(b)
    return new


def _largest(consumers: list[torch.Tensor], keep: int) -> torch.Tensor:
    """The `keep` channels whose weights in the consuming convolutions ([out, channels, k, k] each) are
    largest (summed squared norm), in their original order."""
    score = sum(w.detach().pow(2).sum(dim=(0, 2, 3)) for w in consumers)
    assert isinstance(score, torch.Tensor)
    return torch.sort(torch.topk(score, keep).indices).values


def narrow_decoder(teacher: Decoder, dims: tuple[int, int, int]) -> Decoder:
    """A decoder of widths `dims` cut from `teacher`'s: at each width the channels the next layers weigh most.

    The channel axes: the first block's hidden channels, its outputs (shared with the /8 skip convolution's,
    which are added to them), each upsampling block's hidden channels and outputs (shared likewise with the
    next skip convolution), and the prediction's input."""
    d16, d8, d4 = dims
    c, u8, u4 = teacher.compress, teacher.up_16_8, teacher.up_8_4
    assert c.downsample is not None and u8.out_conv.downsample is not None and u4.out_conv.downsample is not None
    hidden16 = _largest([c.conv2.weight], d16)
    out16 = _largest([u8.out_conv.conv1.weight, u8.out_conv.downsample.weight], d16)
    hidden8 = _largest([u8.out_conv.conv2.weight], d8)
    out8 = _largest([u4.out_conv.conv1.weight, u4.out_conv.downsample.weight], d8)
    hidden4 = _largest([u4.out_conv.conv2.weight], d4)
    out4 = _largest([teacher.pred.weight], d4)
    f8_channels, f4_channels = u8.skip_conv.in_channels, u4.skip_conv.in_channels
    student = Decoder(f8_channels, f4_channels, c.conv1.in_channels // 2, dims)
    s = student
    s.compress.conv1 = _conv_slice(c.conv1, hidden16, None)
    s.compress.conv2 = _conv_slice(c.conv2, out16, hidden16)
    s.compress.downsample = _conv_slice(c.downsample, out16, None)
    s.up_16_8.skip_conv = _conv_slice(u8.skip_conv, out16, None)
    s.up_16_8.out_conv.conv1 = _conv_slice(u8.out_conv.conv1, hidden8, out16)
    s.up_16_8.out_conv.conv2 = _conv_slice(u8.out_conv.conv2, out8, hidden8)
    s.up_16_8.out_conv.downsample = _conv_slice(u8.out_conv.downsample, out8, out16)
    s.up_8_4.skip_conv = _conv_slice(u4.skip_conv, out8, None)
    s.up_8_4.out_conv.conv1 = _conv_slice(u4.out_conv.conv1, hidden4, out8)
    s.up_8_4.out_conv.conv2 = _conv_slice(u4.out_conv.conv2, out4, hidden4)
    s.up_8_4.out_conv.downsample = _conv_slice(u4.out_conv.downsample, out4, out8)
    s.pred = _conv_slice(teacher.pred, None, out4)
    return student


def student_from_teacher(teacher: STCN, arch: str = STUDENT_ARCH) -> STCN:
    """`arch` (the teacher's but for the decoder's widths) with the teacher's weights and a narrowed decoder."""
    spec = ARCHS[arch]
    if replace(spec, name=teacher.spec.name, decoder_dims=teacher.spec.decoder_dims) != teacher.spec:
        raise ValueError(f"{arch} differs from the teacher's arch {teacher.arch} beyond the decoder's widths")
    if any(s >= t for s, t in zip(spec.decoder_dims, teacher.spec.decoder_dims, strict=True)):
        raise ValueError(f"the teacher's decoder {teacher.spec.decoder_dims} is not wider than {arch}'s "
                         f"{spec.decoder_dims}: give the model it was distilled from")
    student = build_network(arch, use_cbam=teacher.use_cbam)
    state = {k: v for k, v in teacher.state_dict().items() if not k.startswith("decoder.")}
    missing = student.load_state_dict(state, strict=False).missing_keys
    if any(not k.startswith("decoder.") for k in missing):
        raise ValueError(f"student does not take the teacher's weights: {missing[:10]}")
    student.decoder = narrow_decoder(teacher.decoder, spec.decoder_dims)
    return student


# ---- training -----------------------------------------------------------------------------------------------


def load_entry(path: Path, objects: int | None = None, rng: np.random.Generator | None = None,
               ) -> dict[str, torch.Tensor]:
    """One stored frame in float32; with `objects`, a random subset of at most that many of its objects."""
    entry = {k: v.float() for k, v in torch.load(str(path), map_location="cpu", weights_only=True).items()}
    n = entry["readout"].shape[0]
    if objects is not None and rng is not None and n > objects:
        rows = torch.from_numpy(np.sort(rng.choice(n, objects, replace=False)))
        entry["readout"], entry["logits"] = entry["readout"][rows], entry["logits"][rows]
    return entry


def distill_loss(decoder: Decoder, entry: dict[str, torch.Tensor], boundary_weight: float = 0.0) -> torch.Tensor:
    """Soft-target binary cross-entropy of the student's logits against the teacher's probabilities; with
    `boundary_weight` W, each pixel weighted by 1 + W * 4p(1-p) and the weights normalised to mean 1."""
    logits = decoder(entry["readout"], entry["query_value"], entry["f8"], entry["f4"])
    target = torch.sigmoid(entry["logits"])
    if boundary_weight <= 0:
        return F.binary_cross_entropy_with_logits(logits, target)
    weight = 1.0 + boundary_weight * 4.0 * target * (1.0 - target)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weight * per_pixel).sum() / weight.sum()


@torch.no_grad()
def mask_agreement(decoder: Decoder, paths: list[Path]) -> float:
    """IoU of the student's masks (p > 0.5) with the teacher's, over every object of the given frames."""
    inter = union = 0.0
    for path in paths:
        entry = load_entry(path)
        student = decoder(entry["readout"], entry["query_value"], entry["f8"], entry["f4"]) > 0
        teacher = entry["logits"] > 0
        inter += float((student & teacher).sum())
        union += float((student | teacher).sum())
    return inter / union if union else 1.0


def _stored(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pt"))


def distill(cfg: DistillConfig) -> Path:
    """Runs (or resumes) the distillation from `cfg.out`'s capture; returns the final network's path."""
    out = Path(cfg.out)
    train_paths, monitor_paths = _stored(out / CAPTURE), _stored(out / MONITOR)
    if not train_paths:
        raise FileNotFoundError(f"nothing captured under {out / CAPTURE}: run the capture first")
    teacher = load_network(cfg.teacher).eval()
    student = student_from_teacher(teacher)
    decoder = student.decoder
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    step = resume_part(out, _PART, decoder, opt) or 0
    watched = monitor_paths[:: max(1, len(monitor_paths) // 24)]
    log_path = out / "log.csv"
    new_log = not log_path.is_file()
    with log_path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["step", "loss", "monitor_mask_iou", "seconds"])
            start_iou = mask_agreement(decoder, watched)
            writer.writerow([step, "", f"{start_iou:.4f}", 0])
            # the teacher's decoder on the stored float16 inputs against its stored logits: the recording's fidelity
            log.info("monitor: %d frames; the teacher on its recorded inputs %.4f, the student at start %.4f",
                     len(watched), mask_agreement(teacher.decoder, watched), start_iou)
        started = time.monotonic()
        decoder.train()
        while step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = cfg.lr * decay_scale(step, cfg.steps, cfg.decay_from)
            rng = np.random.default_rng([cfg.seed, step])
            entry = load_entry(train_paths[int(rng.integers(len(train_paths)))], cfg.max_objects, rng)
            opt.zero_grad()
            loss = distill_loss(decoder, entry, cfg.boundary_weight)
            loss.backward()
            opt.step()
            step += 1
            watched_iou = ""
            if step % cfg.eval_every == 0 or step == cfg.steps:
                decoder.eval()
                watched_iou = f"{mask_agreement(decoder, watched):.4f}"
                decoder.train()
            writer.writerow([step, f"{float(loss.detach()):.5f}", watched_iou, f"{time.monotonic() - started:.0f}"])
            handle.flush()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_part(out, _PART, decoder, opt, step)
    decoder.eval()
    final = out / "final.safetensors"
    save_network(student, final, {"distilled_from": cfg.teacher, "distill": asdict(cfg)})
    log.info("wrote %s", final)
    return final


def export_checkpoint(cfg: DistillConfig) -> Path:
    """Writes the run's current checkpoint as OUT/step<N>.safetensors (to evaluate a run in progress)."""
    student = student_from_teacher(load_network(cfg.teacher))
    return export_part(Path(cfg.out), _PART, student, student.decoder,
                       {"distilled_from": cfg.teacher, "distill": asdict(cfg)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_vos.train.distill_decoder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("capture", "train", "export-checkpoint"))
    defaults = DistillConfig()
    parser.add_argument("--out", default=defaults.out, help="run directory (its capture, a checkpoint to resume)")
    parser.add_argument("--teacher", default=defaults.teacher, help="stcn-effl0 weights to distil")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--boundary-weight", type=float, default=defaults.boundary_weight,
                        help="train: pixels weighted 1 + W * 4p(1-p) by the teacher's probability p (0: alike)")
    parser.add_argument("--synthetic-sequences", type=int, default=CaptureConfig().synthetic_sequences,
                        help="capture: seeded synthetic scenes of 3-8 objects at 480x854")
    parser.add_argument("--mirrored", action="store_true",
                        help="capture: also every DAVIS sequence mirrored left to right")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    cfg = DistillConfig(teacher=args.teacher, out=args.out, steps=args.steps, lr=args.lr,
                        eval_every=args.eval_every, seed=args.seed, boundary_weight=args.boundary_weight)
    try:
        if args.command == "capture":
            capture(CaptureConfig(teacher=args.teacher, synthetic_sequences=args.synthetic_sequences,
                                  mirrored=args.mirrored), Path(args.out))
        elif args.command == "export-checkpoint":
            log.info("wrote %s", export_checkpoint(cfg))
        else:
            distill(cfg)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
