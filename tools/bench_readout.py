"""Readout time per frame on this CPU, the error of each sparse mode against dense exact TMRN, and the
whole tracker step with each readout at the shipped CPU config, on real frames with the trained network.

Readouts: keys from `encode_key` on consecutive DAVIS val-dev frames (memory: every 5th frame, like the
tracker; queries: the frames that follow the last memory frame), values from `encode_value` with the GT
mask (O = 4: the same values rescaled per object). Every method runs on the same query frames,
interleaved so machine noise hits all alike; the time is the median over those frames. Stateful methods
(the shipped TMRN) keep their state across frames after one warm-up frame.

Tracker: one `Tracker` per readout built from configs/cpu.yaml's tracker section (same weights), all fed
the same frames of one sequence in turn; medians of the step's total and readout times once the memory
is full.

    /work/bin/bench-lock .venv/bin/python -m tools.bench_readout          # -> docs/benchmarks.md
    .venv/bin/python -m tools.bench_readout --quick                       # smoke test, writes nothing
    .venv/bin/python -m tools.bench_readout --device cuda                 # fp16 on CUDA -> docs/gpu.md
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_vos.config import from_dict, load_yaml, read_yaml  # noqa: E402
from edge_vos.model import load_network  # noqa: E402
from edge_vos.model.preprocess import frame_geometry, image_to_tensor, masks_to_tensor  # noqa: E402
from edge_vos.program import RunConfig  # noqa: E402
from edge_vos.readout import Readout, StcnOptions, TmrnOptions, TmrnReadout  # noqa: E402
from edge_vos.readout.common import sim_logits_flat  # noqa: E402
from edge_vos.readout.stcn import stcn_readout  # noqa: E402
from edge_vos.tracker import Tracker  # noqa: E402
from edge_vos.tracker.config import ReadoutConfig, TrackerConfig  # noqa: E402
from tests.readout_reference import AblatedTmrn, DenseTmrn, reference_tmrn  # noqa: E402
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench_readout")

DATA = ROOT.parent / "shared" / "data" / "davis2016"
WEIGHTS = ROOT / "edge_vos" / "weights" / "default.safetensors"
SHIPPED = ROOT / "configs" / "cpu.yaml"
RESOLUTIONS = {"240p": 240, "480p": 480}
MEM_EVERY = 5
SHIPPED_RESOLUTION_MAX = 240  # tracker table: the dense TMRN tracker only up to this working size
SLOT_K_ALT = 20  # the sparse TMRN's previous setting, for comparison with the shipped slot_top_k
STCN_TOP_K = StcnOptions().top_k  # official STCN's
EXACT_MAX_HW = 1000  # no dense exact TMRN (the error reference) above this hw: a full SVD per slot takes minutes


def shipped_config(**readout: object) -> TrackerConfig:
    """configs/cpu.yaml's tracker section (stage timings on), its readout section replaced by `readout`."""
    config = from_dict(TrackerConfig, read_yaml(SHIPPED)["tracker"], "tracker")
    config.profile = True
    if readout:
        config.readout = from_dict(ReadoutConfig, readout, "readout")
    return config


def shipped_torch_threads() -> int:
    """configs/cpu.yaml's `pipeline.torch_threads` (0 = torch's default): the tracker table runs with it."""
    return load_yaml(RunConfig, SHIPPED).pipeline.torch_threads or torch.get_num_threads()


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    return (np.array(Image.open(path)) > 0).astype(np.uint8)


@torch.no_grad()
def real_keys(sequence: str, short_side: int, t_max: int, n_queries: int, objects: int):
    """Encodes frames 0, 5, 10, ... (memory) and the n_queries frames after the last one (queries)."""
    net = load_network(WEIGHTS).eval()
    frames = sorted((DATA / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    masks = sorted((DATA / "Annotations" / "480p" / sequence).glob("*.png"))
    mem_ids = [i * MEM_EVERY for i in range(t_max)]
    query_ids = [mem_ids[-1] + 1 + i for i in range(n_queries)]
    if query_ids[-1] >= len(frames):
        raise ValueError(f"{sequence} has {len(frames)} frames; need {query_ids[-1] + 1}")
    geo = frame_geometry(*_read_rgb(frames[0]).shape[:2], short_side)
    keys, values, queries = [], [], []
    for i in mem_ids + query_ids:
        image = image_to_tensor(_read_rgb(frames[i]), geo)
        key, _, f16, _, _ = net.encode_key(image)
        if i in mem_ids:
            mask = masks_to_tensor(torch.from_numpy(_read_mask(masks[i]).astype(np.float32))[None, None], geo)
            values.append(net.encode_value(image, f16, mask, torch.zeros_like(mask)))
            keys.append(key)
        else:
            queries.append(key)
    mk = torch.stack(keys, dim=1)
    mv = torch.stack(values, dim=1)[:, None]
    mv = torch.cat([mv * (1 + 0.1 * o) for o in range(objects)], dim=1)
    mv = mv.permute(0, 1, 2, 4, 5, 3).contiguous().permute(0, 1, 2, 5, 3, 4)  # channels-last, as tracker.memory
    return mk, mv, queries


Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def methods(config: TrackerConfig) -> dict[str, Method]:
    """Each a readout keeping its own state across the frames of one run (a new one per call of this)."""
    tmrn = config.readout.tmrn or TmrnOptions()
    k = STCN_TOP_K
    every_frame = dataclasses.replace(tmrn, agents_every=1)
    return {
        "stcn": lambda q, mk, mv, valid: stcn_readout(q, mk, mv, valid),
        f"stcn top-{k}": lambda q, mk, mv, valid: stcn_readout(q, mk, mv, valid, top_k=k),
        "tmrn sparse": TmrnReadout(tmrn),
        "tmrn sparse pixels": AblatedTmrn(every_frame, agent_source="pixels"),
        f"tmrn sparse slot-top-{SLOT_K_ALT}": TmrnReadout(dataclasses.replace(every_frame, slot_top_k=SLOT_K_ALT)),
        "tmrn sparse exact-svd": AblatedTmrn(every_frame, svd="exact"),
    }


TIMED_OUT = ("tmrn sparse exact-svd",)  # error only (a full SVD of the densified sparse S)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


@torch.no_grad()
def bench_readouts(mk, mv, queries, t: int, objects: int, config: TrackerConfig, with_exact: bool):
    """Median wall ms per method, median error vs dense exact TMRN of each sparse mode."""
    fns = methods(config)
    mk, mv = mk[:, :t], mv[:, :objects, :t]
    valid = torch.ones(1, t, dtype=torch.bool, device=mk.device)
    wall: dict[str, list[float]] = {n: [] for n in fns if n not in TIMED_OUT}
    errors: dict[str, list[float]] = {}
    for f, q in enumerate(queries):
        outs = {}
        for name, fn in fns.items():
            if name in TIMED_OUT and not (with_exact and f > 0):
                continue
            _sync(mk.device)
            start = time.perf_counter()
            outs[name] = fn(q, mk, mv, valid)
            _sync(mk.device)
            if f > 0 and name in wall:
                wall[name].append((time.perf_counter() - start) * 1e3)
        if f == 0:
            continue
        errors.setdefault(f"stcn top-{STCN_TOP_K} vs stcn", []).append(
            rel_err(outs[f"stcn top-{STCN_TOP_K}"], outs["stcn"]))
        if with_exact:
            exact = reference_tmrn(q, mk, mv, valid, agents=(config.readout.tmrn or TmrnOptions()).agents, svd="exact")
            for name in ("tmrn sparse", "tmrn sparse pixels", f"tmrn sparse slot-top-{SLOT_K_ALT}",
                         "tmrn sparse exact-svd"):
                errors.setdefault(name, []).append(rel_err(outs[name], exact))
            errors.setdefault("stcn vs tmrn exact", []).append(rel_err(outs["stcn"], exact))
    return ({n: statistics.median(v) for n, v in wall.items()}, {n: statistics.median(v) for n, v in errors.items()})


@torch.no_grad()
def perplexity(mk: torch.Tensor, q: torch.Tensor) -> float:
    """Median over query pixels of exp(entropy) of the affinity row of slot 0."""
    ck = mk.shape[2]
    qq = q[0].reshape(ck, -1).T.double()
    m = mk[0, 0].reshape(ck, -1).T.double()
    p = torch.softmax((2 * qq @ m.T - (m * m).sum(1)[None]) / ck**0.5, dim=-1)
    return float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum(-1)).median())


SPARSITY_RATIO = 1e-6  # row sparsity: entries whose softmax weight is within this factor of the row's largest


@torch.no_grad()
def row_sparsity(mk: torch.Tensor, q: torch.Tensor) -> list[str]:
    """How peaky trained affinity rows are, over every slot's rows for one query (float32 logits as the
    readouts compute them): the median gap between a row's first and second logit, and how many entries
    lie within SPARSITY_RATIO of the row's largest weight (mean, median, p90, p99, max)."""
    ck = mk.shape[2]
    logits = sim_logits_flat(q[0].reshape(ck, -1).T.float(), mk[0].reshape(mk.shape[1], ck, -1).float())
    top2 = logits.topk(2, dim=-1).values
    near = (logits >= logits.amax(dim=-1, keepdim=True) + math.log(SPARSITY_RATIO)).sum(-1).double().flatten()
    quantiles = torch.quantile(near, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))
    return [f"{float((top2[..., 0] - top2[..., 1]).median()):.1f}", f"{float(near.mean()):.2f}",
            *(f"{float(x):.0f}" for x in quantiles), f"{float(near.max()):.0f}"]


def tracker_variants(resolution: int, device: torch.device) -> dict[str, tuple[TrackerConfig, Readout | None]]:
    """name -> (config, a reference readout replacing the config's, or None)."""
    shipped = shipped_config()
    tmrn = shipped.readout.tmrn or TmrnOptions()
    variants: dict[str, tuple[TrackerConfig, Readout | None]] = {
        "tmrn (shipped: sparse)": (shipped, None),
        f"stcn top-{STCN_TOP_K}": (shipped_config(kind="stcn", stcn={"top_k": STCN_TOP_K}), None),
        "tmrn sparse pixels": (shipped_config(), AblatedTmrn(dataclasses.replace(tmrn, agents_every=1),
                                                             agent_source="pixels")),
    }
    if resolution <= SHIPPED_RESOLUTION_MAX:  # the dense reference: a second per step beyond
        variants["tmrn dense fast"] = (shipped_config(), DenseTmrn(tmrn.agents))
    for config, _ in variants.values():
        config.resolution = resolution
        if device.type == "cuda":
            config.device, config.precision = "cuda", "fp16"
    return variants


@torch.no_grad()
def bench_tracker(
    sequence: str, resolution: int, skip: int, frames: int, device: torch.device, threads: int
) -> dict[str, tuple[float, float]]:
    """Median (step total ms, readout ms) per tracker variant over `frames` frames after `skip`, with
    `threads` torch threads (the shipped config's on CPU; the kernel tables keep the process's own count)."""
    variants = tracker_variants(resolution, device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _bench_trackers(variants, sequence, skip, frames)
    finally:
        torch.set_num_threads(threads_before)


def _bench_trackers(
    variants: dict[str, tuple[TrackerConfig, Readout | None]], sequence: str, skip: int, frames: int
) -> dict[str, tuple[float, float]]:
    network = load_network(WEIGHTS).eval()
    trackers = {name: Tracker(config, network=network, readout=readout) for name, (config, readout) in variants.items()}
    images = sorted((DATA / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    first = _read_mask(sorted((DATA / "Annotations" / "480p" / sequence).glob("*.png"))[0])
    totals: dict[str, list[float]] = {n: [] for n in trackers}
    readouts: dict[str, list[float]] = {n: [] for n in trackers}
    for i, path in enumerate(images[: skip + frames + 1]):
        image = _read_rgb(path)
        for name, tracker in trackers.items():
            result = tracker.step(image, first if i == 0 else None, [1] if i == 0 else None)
            if i > skip:
                totals[name].append(result.timings_ms["total"])
                readouts[name].append(result.timings_ms.get("readout", float("nan")))
    return {n: (statistics.median(totals[n]), statistics.median(readouts[n])) for n in trackers}


def _fmt(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x >= 1e-4 else f"{100 * x:.0e}%"


def run(quick: bool, write: bool, sequence: str, frames: int, tracker_frames: int, device_name: str = "cpu") -> str:
    device = torch.device(device_name)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    load_before = os.getloadavg()[0]
    config = shipped_config()
    r = config.readout.tmrn or TmrnOptions()
    stk = f"stcn top-{STCN_TOP_K}"
    alt = f"tmrn sparse slot-top-{SLOT_K_ALT}"
    resolutions = ["240p"] if quick else list(RESOLUTIONS)
    ts, objs = ([4], [1]) if quick else ([4, 8, 16], [1, 4])
    frames = 1 if quick else frames
    rows, err_rows, step_rows, sparsity_rows = [], [], [], []
    hw_of = {}
    for res in resolutions:
        mk, mv, queries = real_keys(sequence, RESOLUTIONS[res], max(ts), frames + 1, max(objs))
        mk, mv = mk.to(device, dtype), mv.to(device, dtype)
        queries = [q.to(device, dtype) for q in queries]
        hw_of[res] = mk.shape[-2] * mk.shape[-1]
        ppl = perplexity(mk, queries[0])
        sparsity_rows.append([res, max(ts), *row_sparsity(mk, queries[0])])
        for t in ts:
            for o in objs:
                exact = o == 1 and hw_of[res] <= EXACT_MAX_HW
                wall, errors = bench_readouts(mk, mv, queries, t, o, config, with_exact=exact)
                rows.append([res, hw_of[res], t, o, *(_fmt(wall[n]) for n in ("stcn", stk, "tmrn sparse",
                             "tmrn sparse pixels", alt)), *(f"{wall[n] / wall[stk]:.2f}x" for n in (
                                 "tmrn sparse", "tmrn sparse pixels", alt))])
                log.info("%s", rows[-1])
                if exact:
                    err_rows.append([res, t, f"{ppl:.2f}", *(_pct(errors[n]) for n in (
                        "tmrn sparse", "tmrn sparse exact-svd", "tmrn sparse pixels", alt, f"{stk} vs stcn",
                        "stcn vs tmrn exact"))])
                    log.info("%s", err_rows[-1])
    step_threads = shipped_torch_threads() if device.type == "cpu" else torch.get_num_threads()
    for res in resolutions:
        skip = 2 if quick else 30
        tracker_frames = 2 if quick else tracker_frames
        steps = bench_tracker(sequence, RESOLUTIONS[res], skip, tracker_frames, device, step_threads)
        ref_total, ref_readout = steps[stk]
        for name, (total, readout) in steps.items():
            step_rows.append([res, name, _fmt(total), _fmt(readout), f"{total / ref_total:.3f}x",
                              f"{readout / ref_readout:.2f}x"])
            log.info("%s", step_rows[-1])
    load_after = os.getloadavg()[0]
    md = "\n".join([
        "## Readouts (CPU)" if device.type == "cpu" else f"## Readouts ({torch.cuda.get_device_name(device)}, fp16)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `tools/bench_readout.py`"
        f"{' --quick' if quick else ''} (CPU: under `/work/bin/bench-lock`), {torch.get_num_threads()} torch threads"
        f" (load average {load_before:.1f} before, {load_after:.1f} after). Network: bundled stcn-effl0"
        f" (trained). Shipped CPU readout (configs/cpu.yaml): `{config.readout.kind}` (sparse, SVD agents by the"
        f" warm-started iteration), {r.agents} agents, slot_top_k {r.slot_top_k} (per slot), agents_every"
        f" {r.agents_every}; STCN's top_k {STCN_TOP_K} (over all slots, official STCN).",
        "",
        f"**Readout alone.** Keys: `encode_key` on DAVIS val-dev `{sequence}` (memory: every {MEM_EVERY}th"
        " frame from 0; queries: the frames after the last memory frame); values: `encode_value` with the GT"
        f" mask (O = 4: rescaled copies); {str(dtype).removeprefix('torch.')}, no grad. Wall ms, median over"
        f" {frames} query frames after"
        " one warm-up frame, all methods interleaved per frame. `tmrn sparse`: the tracker's default"
        f" (warm-started subspace iteration on the sparse S, each slot's agents recomputed one frame in"
        f" {r.agents_every}); `pixels`: SVD-free agents (top-K pixels);"
        f" `slot-top-{SLOT_K_ALT}`: the sparse TMRN keeping {SLOT_K_ALT} entries per row and slot;"
        " ratios against the STCN readout with its top-k.",
        "",
        markdown_table(["res", "hw", "T", "O", "stcn (dense)", stk, "tmrn sparse", "tmrn sparse pixels", alt,
                        f"sparse / {stk}", f"pixels / {stk}", f"slot-top-{SLOT_K_ALT} / {stk}"], rows),
        "",
        "**Error** (O = 1): median ||out - ref|| / ||ref|| over the same frames; ref = dense exact TMRN"
        f" (full SVD, {r.agents} agents) unless named. `exact-svd`: the sparse path with a full SVD of the"
        " (densified) sparse S, which separates the truncation from the subspace iteration. No dense exact"
        f" reference above hw {EXACT_MAX_HW} (a full SVD per slot: minutes per frame here). Perplexity:"
        " median over query pixels of exp(entropy) of a trained affinity row (1: one-hot).",
        "",
        markdown_table(["res", "T", "perplexity", "tmrn sparse", "tmrn sparse exact-svd", "tmrn sparse pixels",
                        alt, f"{stk} vs stcn (dense)", "stcn vs tmrn exact"], err_rows),
        "",
        f"**Row sparsity** (why `slot_top_k` can be small): the logits of one query frame against all"
        f" {max(ts)} memory slots, one row per (query pixel, slot); *gap*: median difference between a row's"
        f" first and second logit (the runner-up weighs e^-gap); *entries*: how many entries of a row have a"
        f" softmax weight within {SPARSITY_RATIO:g} of the row's largest.",
        "",
        markdown_table(["res", "T", "gap 1st-2nd logit", "entries: mean", "median", "p90", "p99", "max"],
                       sparsity_rows),
        "",
        f"**Whole tracker step** at the shipped CPU config ({step_threads} torch thread(s)"
        f"{' as `pipeline.torch_threads` ships' if device.type == 'cpu' else ''}; one Tracker per readout, same"
        " weights, fed the same"
        f" frames of `{sequence}` in turn; one object; median over {tracker_frames} frames after the memory"
        " filled): step total and its readout, ms; ratios against the STCN readout's tracker.",
        "",
        markdown_table(["res", "readout", "step ms", "readout ms", f"step / {stk}", f"readout / {stk}"],
                       step_rows),
    ])
    if write and device.type == "cpu":
        write_section(ROOT / "docs" / "benchmarks.md", "readout", md)
    elif write:
        write_section(ROOT / "docs" / "gpu.md", "readout-gpu", md, title="# GPU checks\n")
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 240p, T=4, one frame; writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave docs/benchmarks.md alone")
    parser.add_argument("--sequence", default="cows", help="val-dev sequence (needs 5*16+frames+1 frames)")
    parser.add_argument("--frames", type=int, default=3, help="timed query frames per readout configuration")
    parser.add_argument("--tracker-frames", type=int, default=20, help="timed tracker steps per resolution")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: readouts in fp16 and trackers with precision fp16; tables -> docs/gpu.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not DATA.exists():
        raise SystemExit(f"no data at {DATA}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine (torch.cuda.is_available() is False)")
    print(run(args.quick, not (args.quick or args.no_write), args.sequence, args.frames, args.tracker_frames,
              args.device))


if __name__ == "__main__":
    main()
