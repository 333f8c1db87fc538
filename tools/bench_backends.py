"""Encoder and decoder time per frame for each CPU backend; writes the `backends` section of docs/benchmarks.md.

Variants: torch fp32 (contiguous), torch channels_last, torch channels_last + bf16 autocast (only where the
CPU has native bf16), onnxruntime with all graph optimisations. Median over `--repeats` timed calls after
`--warmup` calls, per part, for one object, at each padded working size. The fastest fp32 variant is the
CPU default of `backend: auto` (edge_vos.backends.CPU_FP32_DEFAULT); this tool prints which one won so the
constant can be checked against a new machine.

Usage: nice .venv/bin/python tools/bench_backends.py [--sizes 240x432,480x864] [--write-doc docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_vos.backends import create_runner  # noqa: E402
from edge_vos.backends.base import NetworkRunner  # noqa: E402
from edge_vos.backends.torch_backend import TorchRunner, cpu_supports_bf16  # noqa: E402
from edge_vos.model.network import STCN  # noqa: E402
from edge_vos.model.weights import random_network  # noqa: E402
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench_backends")
CPU = torch.device("cpu")


def interleaved_medians(calls: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Median ms of each call, timing them round-robin so that load from other processes on a shared
    machine hits every variant alike (timing variants one after another lets a burst favour one)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def variants(network: STCN, hw: tuple[int, int], cache: Path) -> dict[str, Callable[[], NetworkRunner]]:
    out: dict[str, Callable[[], NetworkRunner]] = {
        "torch fp32": lambda: TorchRunner(network, CPU, "fp32", channels_last=False),
        "torch channels_last": lambda: TorchRunner(network, CPU, "fp32"),
    }
    if cpu_supports_bf16():
        out["torch channels_last + bf16 autocast"] = lambda: TorchRunner(network, CPU, "bf16")
    out["onnxruntime (ORT_ENABLE_ALL)"] = lambda: create_runner(
        network, "onnxruntime", CPU, "fp32", hw, cache_dir=cache
    )
    return out


def bench(network: STCN, hw: tuple[int, int], cache: Path, warmup: int, repeats: int) -> dict[str, dict[str, float]]:
    """Per variant and part, the median ms for one object; parts timed on each runner's own outputs."""
    torch.manual_seed(0)
    h, w = hw
    image = torch.randn(1, 3, h, w)
    masks = torch.rand(1, 1, h, w)
    readout = torch.randn(1, network.value_dim, h // 16, w // 16)
    runners = {name: make() for name, make in variants(network, hw, cache).items()}
    feats = {name: r.encode_key(image) for name, r in runners.items()}
    per_part: dict[str, dict[str, float]] = {
        "key encoder": interleaved_medians(
            {n: (lambda r=r: r.encode_key(image)) for n, r in runners.items()}, warmup, repeats
        ),
        "value encoder": interleaved_medians(
            {n: (lambda r=r, f=feats[n]: r.encode_value(image, f[2], masks, 1 - masks)) for n, r in runners.items()},
            warmup, repeats,
        ),
        "decoder": interleaved_medians(
            {n: (lambda r=r, f=feats[n]: r.decode(readout, f[1], f[3], f[4])) for n, r in runners.items()},
            warmup, repeats,
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for name in runners:
        row = {part: per_part[part][name] for part in per_part}
        row["total"] = sum(row.values())
        results[name] = row
        log.info("%dx%d %-36s %s", w, h, name, "  ".join(f"{k} {v:.1f}" for k, v in row.items()))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="stcn-r18")
    parser.add_argument("--sizes", default="240x432,480x864", help="padded working sizes HxW, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads, torch and onnxruntime")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--engines", type=Path, default=Path("engines"), help="ONNX export cache")
    parser.add_argument("--note", action="append", default=[], help="a paragraph appended to the doc section")
    parser.add_argument("--write-doc", type=Path, help="write the `backends` section of this Markdown file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)  # the onnxruntime runner takes torch's thread count
    network = random_network(args.arch).eval()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    all_results = {hw: bench(network, hw, args.engines, args.warmup, args.repeats) for hw in sizes}  # type: ignore[arg-type]

    parts = ("key enc", "value enc", "decoder", "total")
    header = ["backend"] + [f"{p} {w}x{h}" for (h, w) in all_results for p in parts]
    names = list(next(iter(all_results.values())))
    rows = [[n] + [f"{all_results[hw][n][k]:.0f}" for hw in all_results
                   for k in ("key encoder", "value encoder", "decoder", "total")] for n in names]
    fp32 = [n for n in names if "bf16" not in n]
    winners = {hw: min(fp32, key=lambda n, hw=hw: r[n]["total"]) for hw, r in all_results.items()}
    overall = {hw: min(names, key=lambda n, hw=hw: r[n]["total"]) for hw, r in all_results.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    body = "\n".join([
        "## Backends: encoder and decoder time per frame on CPU (median ms)",
        "",
        f"`tools/bench_backends.py`, {args.arch}, one object, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} calls timed round-robin across backends after {args.warmup} warm-up calls; "
        f"{platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, native bf16: {cpu_supports_bf16()}, 1-min load average at the end {load:.1f} "
        "(shared machine: +-15-30% noise). Sizes are padded working sizes (HxW is 240p / 480p of a 16:9 frame).",
        "",
        markdown_table(header, rows),
        "",
        "Fastest fp32: " + ", ".join(f"{w}x{h}: {n}" for (h, w), n in winners.items())
        + ". Fastest overall: " + ", ".join(f"{w}x{h}: {n}" for (h, w), n in overall.items()) + ".",
        *(f"\n{note}" for note in args.note),
    ])
    print(body)  # noqa: T201 - the table is this tool's output
    if args.write_doc:
        write_section(args.write_doc, "backends", body)
        log.info("wrote section 'backends' of %s", args.write_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
