"""Readout time per frame on this CPU and the output error of the approximate SVDs, on real-frame keys.

Keys come from `encode_key` on consecutive DAVIS val-dev frames (memory: every 5th frame, like the
tracker; queries: the frames that follow the last memory frame), values from `encode_value` with the GT
masks (one object). The network is the trained default if edge_vos/weights/default.safetensors exists,
else a random init (what exists today: the table says which). Each configuration runs every method on
the same consecutive query frames, interleaved so machine noise hits all methods alike; the time is the
median over those frames. svd="fast" carries an SvdState across the frames; its first (cold) frame is
reported separately and left out of the median.

    nice .venv/bin/python -m tools.bench_readout            # full table -> docs/benchmarks.md
    nice .venv/bin/python -m tools.bench_readout --quick    # smoke test, writes nothing
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import edge_vos.readout.svd as svd_module  # noqa: E402
from edge_vos.model import build_network, load_network  # noqa: E402
from edge_vos.model.preprocess import frame_geometry, image_to_tensor, masks_to_tensor  # noqa: E402
from edge_vos.readout import SvdState, stcn_readout, tmrn_readout  # noqa: E402
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench_readout")

DATA = ROOT.parent / "shared" / "data" / "davis2016"
WEIGHTS = ROOT / "edge_vos" / "weights" / "default.safetensors"
RESOLUTIONS = {"240p": 240, "480p": 480}
MEM_EVERY = 5
MID_PERPLEXITY = 40.0  # affinity perplexity of the second error check (keys rescaled to it; table note)


@dataclass
class Keys:
    """Real-frame features at one working resolution: memory slots and consecutive query frames."""

    mk: torch.Tensor  # [1, Tmax, Ck, h, w]
    mv: torch.Tensor  # [1, 1, Tmax, Cv, h, w]
    queries: list[torch.Tensor]  # each [1, Ck, h, w]
    network: str


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    return (np.array(Image.open(path)) > 0).astype(np.float32)


def load_network_for_bench() -> tuple[torch.nn.Module, str]:
    if WEIGHTS.exists():
        net = load_network(WEIGHTS).eval()
        return net, f"{getattr(net, 'arch', '?')}, trained ({WEIGHTS.name})"
    torch.manual_seed(0)  # the benchmark process's own init; no library code depends on it
    return build_network("stcn-r18").eval(), "stcn-r18, random init (no trained weights yet)"


@torch.no_grad()
def real_keys(sequence: str, short_side: int, t_max: int, n_queries: int) -> Keys:
    """Encodes frames 0, 5, 10, ... (memory) and the n_queries frames after the last one (queries)."""
    net, label = load_network_for_bench()
    frames = sorted((DATA / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    masks = sorted((DATA / "Annotations" / "480p" / sequence).glob("*.png"))
    mem_ids = [i * MEM_EVERY for i in range(t_max)]
    query_ids = [mem_ids[-1] + 1 + i for i in range(n_queries)]
    if query_ids[-1] >= len(frames):
        raise ValueError(f"{sequence} has {len(frames)} frames; need {query_ids[-1] + 1}")
    image0 = _read_rgb(frames[0])
    geo = frame_geometry(image0.shape[0], image0.shape[1], short_side)
    keys, values, queries = [], [], []
    for i in mem_ids + query_ids:
        image = image_to_tensor(_read_rgb(frames[i]), geo)
        key, _, f16, _, _ = net.encode_key(image)
        if i in mem_ids:
            mask = masks_to_tensor(torch.from_numpy(_read_mask(masks[i]))[None, None], geo)
            values.append(net.encode_value(image, f16, mask, torch.zeros_like(mask)))
            keys.append(key)
        else:
            queries.append(key)
    mk = torch.stack(keys, dim=1)
    mv = torch.stack(values, dim=1)[:, None]
    return Keys(mk, mv, queries, label)


def fast_fp32(
    q: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor, state: SvdState
) -> torch.Tensor:
    """svd="fast" with all its GEMMs in float32 (FAST_GEMM_DTYPES emptied for the call; benchmark only):
    what the bf16 GEMMs of the fast variant buy and cost."""
    saved = dict(svd_module.FAST_GEMM_DTYPES)
    svd_module.FAST_GEMM_DTYPES.clear()
    try:
        return tmrn_readout(q, mk, mv, valid, svd="fast", state=state)
    finally:
        svd_module.FAST_GEMM_DTYPES.update(saved)


Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, SvdState], torch.Tensor]
METHODS: dict[str, Method] = {
    "stcn top-20": lambda q, mk, mv, valid, state: stcn_readout(q, mk, mv, valid, top_k=20),
    "stcn": lambda q, mk, mv, valid, state: stcn_readout(q, mk, mv, valid),
    "tmrn exact": lambda q, mk, mv, valid, state: tmrn_readout(q, mk, mv, valid, svd="exact"),
    "tmrn lowrank": lambda q, mk, mv, valid, state: tmrn_readout(q, mk, mv, valid, svd="lowrank"),
    "tmrn fast": lambda q, mk, mv, valid, state: tmrn_readout(q, mk, mv, valid, svd="fast", state=state),
    "tmrn fast fp32": fast_fp32,
}
APPROX = ("tmrn lowrank", "tmrn fast", "tmrn fast fp32")
WARM = ("stcn", "stcn top-20", "tmrn fast", "tmrn fast fp32")  # run on the warm-up frame


def random_agents_readout(q: torch.Tensor, mk: torch.Tensor, mv: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Yardstick: TMRN with random orthonormal U, V instead of the SVD (how much the agents matter at all).

    Swaps the module's SVD function for the duration of the call (benchmark only).
    """
    import edge_vos.readout.tmrn as tmrn_module

    def random_singular(s: torch.Tensor, k: int, kind: str, **_: object) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(1)
        n, hw_q, hw_m = s.shape
        u = torch.linalg.qr(torch.randn(n, hw_q, k, generator=gen)).Q
        v = torch.linalg.qr(torch.randn(n, hw_m, k, generator=gen)).Q
        return u.to(s.dtype), v.to(s.dtype)

    original = tmrn_module.top_singular
    tmrn_module.top_singular = random_singular  # type: ignore[assignment]
    try:
        return tmrn_readout(q, mk, mv, valid)
    finally:
        tmrn_module.top_singular = original  # type: ignore[assignment]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x >= 1e-4 else f"{100 * x:.0e}%"


@dataclass
class Result:
    wall_ms: dict[str, float]  # median wall time over the timed frames, 2 torch threads
    cpu_ms: dict[str, float]  # median CPU time of the same call with 1 torch thread (robust to load)
    errors: dict[str, float]  # median relative error against svd="exact"
    fast_cold_ms: float


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def _cpu_ms(fn: Callable[[], torch.Tensor]) -> float:
    """CPU time of fn with one torch thread: what the call costs, whatever else the machine runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        fn()
        return (time.process_time() - start) * 1e3
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def bench_config(
    keys: Keys, t: int, frames: int, key_scale: float = 1.0, methods: tuple[str, ...] = (), cpu: bool = True
) -> Result:
    """Runs every method on `frames` consecutive query frames after one warm-up frame.

    The warm-up frame runs only the cheap methods (allocator warm-up, and the fast state's cold start,
    timed as fast_cold_ms). Each timed frame runs all methods with 2 threads (wall time, and outputs for
    the errors), then again with 1 thread for CPU time. Each method has its own SvdState per thread
    setting (only the fast variants use one).
    """
    names = methods or tuple(METHODS)
    mk, mv = keys.mk[:, :t] * key_scale, keys.mv[:, :, :t]
    valid = torch.ones(1, t, dtype=torch.bool)
    states: defaultdict[str, SvdState] = defaultdict(SvdState)
    cpu_states: defaultdict[str, SvdState] = defaultdict(SvdState)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu_t: dict[str, list[float]] = {n: [] for n in names if n != "tmrn exact"}
    errors: dict[str, list[float]] = {n: [] for n in APPROX if n in names}
    cold_ms = float("nan")
    for f, q in enumerate(keys.queries[: frames + 1]):
        q = q * key_scale
        if f == 0:
            for name in names:
                if name in WARM:
                    start = time.perf_counter()
                    METHODS[name](q, mk, mv, valid, states[name])
                    cold_ms = (time.perf_counter() - start) * 1e3 if name == "tmrn fast" else cold_ms
                    if cpu and name in cpu_t:
                        _cpu_ms(lambda n=name, q=q: METHODS[n](q, mk, mv, valid, cpu_states[n]))
            continue
        outs = {}
        for name in names:
            start = time.perf_counter()
            outs[name] = METHODS[name](q, mk, mv, valid, states[name])
            wall[name].append((time.perf_counter() - start) * 1e3)
            if cpu and name in cpu_t:
                cpu_t[name].append(_cpu_ms(lambda n=name, q=q: METHODS[n](q, mk, mv, valid, cpu_states[n])))
        if "tmrn exact" in outs:
            for name in APPROX:
                if name in outs:
                    errors[name].append(rel_err(outs[name], outs["tmrn exact"]))
            errors.setdefault("random agents", []).append(
                rel_err(random_agents_readout(q, mk, mv, valid), outs["tmrn exact"])
            )
        log.info("T=%d frame %d wall %s cpu %s", t, f, {n: round(v[-1]) for n, v in wall.items()},
                 {n: round(v[-1]) for n, v in cpu_t.items() if v})
    return Result(
        {n: statistics.median(v) for n, v in wall.items()},
        {n: statistics.median(v) for n, v in cpu_t.items() if v},
        {n: statistics.median(v) for n, v in errors.items() if v},
        cold_ms,
    )


@torch.no_grad()
def bench_objects(keys: Keys, t: int, objects: int, frames: int) -> tuple[float, float]:
    """CPU time (1 thread) of stcn and tmrn fast with `objects` objects (values of object 1, rescaled)."""
    mk = keys.mk[:, :t]
    mv = torch.cat([keys.mv[:, :, :t] * (1 + 0.1 * o) for o in range(objects)], dim=1)
    valid = torch.ones(1, t, dtype=torch.bool)
    state = SvdState()
    stcn, fast = [], []
    for f, q in enumerate(keys.queries[: frames + 1]):
        a = _cpu_ms(lambda q=q: stcn_readout(q, mk, mv, valid))
        b = _cpu_ms(lambda q=q: tmrn_readout(q, mk, mv, valid, svd="fast", state=state))
        if f > 0:
            stcn.append(a)
            fast.append(b)
    return statistics.median(stcn), statistics.median(fast)


@torch.no_grad()
def perplexity(keys: Keys, scale: float) -> float:
    """Median over query pixels of exp(entropy) of the affinity row of slot 0 (first query frame)."""
    ck = keys.mk.shape[2]
    q = keys.queries[0][0].reshape(ck, -1).T.double() * scale
    m = keys.mk[0, 0].reshape(ck, -1).T.double() * scale
    p = torch.softmax((2 * q @ m.T - (m * m).sum(1)[None]) / ck**0.5, dim=-1)
    return float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum(-1)).median())


def scale_for_perplexity(keys: Keys, target: float) -> float:
    """Key scale giving `target` perplexity (bisection in log scale; perplexity falls as keys grow)."""
    lo, hi = 1e-3, 1e3
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if perplexity(keys, mid) > target else (lo, mid)
    return (lo * hi) ** 0.5


def _fmt(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"


def run(quick: bool, write: bool, sequence: str, frames: int) -> str:
    torch.set_num_threads(2)
    resolutions = ["240p"] if quick else list(RESOLUTIONS)
    ts = [2] if quick else [2, 4, 8, 16]
    frames = 2 if quick else frames
    load_before = os.getloadavg()[0]
    rows, err_rows, obj_rows = [], [], []
    label = ""
    for res in resolutions:
        keys = real_keys(sequence, RESOLUTIONS[res], max(ts), frames + 1)
        label = keys.network
        hw = keys.mk.shape[-2] * keys.mk.shape[-1]
        for t in ts:
            r = bench_config(keys, t, frames)
            w, c = r.wall_ms, r.cpu_ms
            rows.append([
                res, hw, t,
                *(f"{_fmt(w[n])} / {_fmt(c[n])}" for n in ("stcn top-20", "stcn")),
                _fmt(w["tmrn exact"]),
                *(f"{_fmt(w[n])} / {_fmt(c[n])} ({_pct(r.errors[n])})" for n in APPROX),
                _pct(r.errors["random agents"]),
                _fmt(r.fast_cold_ms),
                f"{c['tmrn fast'] / c['stcn']:.2f}x / {c['tmrn fast'] / c['stcn top-20']:.2f}x"
                f" ({c['tmrn fast fp32'] / c['stcn']:.2f}x)",
            ])
            log.info("%s", rows[-1])
        if not quick and res == "480p":
            for objects in (1, 2, 4, 8):
                stcn_ms, fast_ms = bench_objects(keys, 8, objects, frames)
                obj_rows.append([res, 8, objects, _fmt(stcn_ms), _fmt(fast_ms), f"{fast_ms / stcn_ms:.2f}x"])
                log.info("%s", obj_rows[-1])
        if not quick:  # sharpened keys: affinities as peaky as a trained network's
            scale = scale_for_perplexity(keys, MID_PERPLEXITY)
            r = bench_config(keys, 8, frames, key_scale=scale, methods=("tmrn exact", *APPROX), cpu=False)
            err_rows.append([res, 8, f"{scale:.3g}", f"{perplexity(keys, 1.0):.0f} -> {perplexity(keys, scale):.0f}",
                             *(_pct(r.errors[n]) for n in (*APPROX, "random agents"))])
    load_after = os.getloadavg()[0]
    md = "\n".join([
        "## Readouts (CPU)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `tools/bench_readout.py`"
        f"{' --quick' if quick else ''}. Network: {label}. Keys: `encode_key` on DAVIS val-dev"
        f" `{sequence}` (memory: every {MEM_EVERY}th frame from 0; queries: the frames after the last memory"
        " frame); values: `encode_value` with the GT mask, **O = 1 object**;"
        f" Ck {keys.mk.shape[2]}, Cv {keys.mv.shape[3]}, K = 128 agents,"
        f" float32 input, no grad. `tmrn fast` runs its big GEMMs (agent correlation C, aligned keys, the two"
        " power-iteration products) in bfloat16 on this CPU (`FAST_GEMM_DTYPES`, AVX512-bf16); `fast fp32`"
        " is the same variant with every GEMM in float32, for comparison. Each cell `wall / cpu`: median"
        f" over {frames} consecutive query frames (after one"
        " warm-up frame) of the wall time with 2 torch threads and of the CPU time (`process_time`) of the"
        " same call with 1 torch thread; all methods interleaved on each frame. The machine's 2 cores were"
        f" shared with other engineers' jobs (load average {load_before:.1f} before, {load_after:.1f} after), so"
        " wall times are inflated several-fold and erratic (2-thread OpenMP regions stall when a core is"
        " taken); the 1-thread CPU times measure the work itself and give the ratios. Error: median"
        " ||out - out_exact|| / ||out_exact|| over the same frames. `fast` carries an `SvdState` from frame"
        " to frame; *fast cold* is the wall time of its first frame (no state). Ratio: CPU time of fast /"
        " stcn (dense) and fast / stcn top-20; in brackets fast fp32 / stcn (dense).",
        "",
        markdown_table(
            ["res", "hw", "T", "stcn top-20", "stcn", "tmrn exact (wall)", "tmrn lowrank (err)",
             "tmrn fast (err)", "tmrn fast fp32 (err)", "random agents err", "fast cold (wall)",
             "fast / stcn, / top-20 (fp32 / stcn) (cpu)"],
            rows,
        ),
    ])
    if err_rows:
        md += "\n\n" + "\n".join([
            "*random agents err* is a yardstick, not a method: TMRN with random orthonormal U, V instead of"
            " the SVD, against exact. It shows how much the output depends on the agents at all, so that a"
            " small error of lowrank/fast means a match rather than indifference. The network's own keys"
            f" (std {float(keys.mk.std()):.3g} at the last resolution) give the affinity perplexity in the"
            " table below (median over query pixels, slot 0; ~hw: near-uniform, ~1: one-hot, where the"
            " renormalised C * S is S whatever the agents and every error is ~0). The same errors with the keys"
            f" rescaled (the scale column) to a perplexity of ~{MID_PERPLEXITY:g}, a middle regime where the"
            " output depends on the agents, T = 8:",
            "",
            markdown_table(["res", "T", "key scale", "perplexity (own -> rescaled)", "lowrank err", "fast err",
                            "fast fp32 err", "random agents err"], err_rows),
        ])
    if obj_rows:
        md += "\n\n" + "\n".join([
            "More objects (values of the one GT object, rescaled per object; CPU ms, 1 thread): the"
            " aggregation, identical in both readouts, grows with O while TMRN's extra work does not.",
            "",
            markdown_table(["res", "T", "O", "stcn", "tmrn fast", "fast / stcn"], obj_rows),
        ])
    if write:
        write_section(ROOT / "docs" / "benchmarks.md", "readout", md)
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 240p, T=2, one frame; writes nothing")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    parser.add_argument("--sequence", default="cows", help="val-dev sequence (needs 5*16+frames+1 frames)")
    parser.add_argument("--frames", type=int, default=3, help="timed query frames per configuration")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not DATA.exists():
        raise SystemExit(f"no data at {DATA}")
    print(run(args.quick, not (args.quick or args.no_write), args.sequence, args.frames))


if __name__ == "__main__":
    main()
