"""Several cameras in one service against one service process per camera: frames per second per stream and
in total, capture-to-publish latency per stream, resident memory. Writes the "streams" section of
docs/benchmarks.md.

    /work/bin/bench-lock .venv/bin/python tools/bench_streams.py                 # 1, 2, 4 streams; 30 s each
    /work/bin/bench-lock .venv/bin/python tools/bench_streams.py --streams 1 4 --seconds 20 --no-doc

Every run is a real `edge-vos run` process with the shipped config (configs/cpu.yaml) and synthetic 240x432
scenes (two objects, a different seed per stream) at `pace: fastest` (every frame processed, nothing
dropped): for each N, one process with `streams:` of N cameras, and N processes with one camera each. All
runs are started in one invocation and kept paused (SIGSTOP) except the one being measured; each is measured
in `--rounds` windows interleaved with the others' (load drift on a shared machine hits every run alike),
from the moment every stream of the run has published a frame captured after its resumption (the frames
queued before the pause are out by then). Engine
exports and each run's first `--warmup` masks per stream come before any window. This process only reads the
mask headers (no payload decoding) from every publish socket; a stream's rate is its masks in the windows
over their length; capture-to-publish is `t_publish_ns - t_capture_ns` of those masks (in `fastest` it
includes the wait in the bounded frame queue, as docs/benchmarks.md "service" explains); RSS is the largest
VmRSS of a run's processes, summed, at the end of its windows (and VmHWM, the peak, at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_vos.wire.protocol import loads_header  # noqa: E402
from tools.doc_tables import markdown_table, write_section  # noqa: E402

SIZE = "240x432"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uri(seed: int) -> str:
    return f"synthetic:seed={seed}&frames=90&size={SIZE}&objects=2&distractors=1"


def start(config: Path, ids: list[str], seeds: list[int], log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """One `edge-vos run` process serving the streams `ids`; returns it and its publish endpoint."""
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    sets = {"publish.endpoint": endpoint, "control.endpoint": "", "source.pace": "fastest", "source.loop": True,
            "metrics.enabled": False, "publish.hwm": 1000, "view.listen": ""}
    if len(ids) == 1:
        sets.update({"stream_id": ids[0], "source.uri": _uri(seeds[0])})
    else:
        sets["streams"] = [{"id": i, "source": _uri(s)} for i, s in zip(ids, seeds, strict=True)]
    argv = [sys.executable, "-m", "edge_vos.cli", "run", "--config", str(config)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    log = (log_dir / f"{'-'.join(ids)}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env), endpoint


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


class Run:
    """One configuration: N streams in one process, or N processes of one stream each (ids unique per run)."""

    def __init__(self, config: Path, n: int, separate: bool, log_dir: Path) -> None:
        self.n, self.separate = n, separate
        self.label = f"{'sep' if separate else 'one'}{n}"
        self.ids = [f"{self.label}-cam{i}" for i in range(n)]
        seeds = list(range(3, 3 + n))
        groups = [([i], [s]) for i, s in zip(self.ids, seeds, strict=True)] if separate else [(self.ids, seeds)]
        launched = [start(config, ids, group_seeds, log_dir) for ids, group_seeds in groups]
        self.procs = [p for p, _ in launched]
        self.endpoints = [e for _, e in launched]
        self.counts = dict.fromkeys(self.ids, 0)
        self.latency_ms: dict[str, list[float]] = {i: [] for i in self.ids}
        self.seconds = 0.0
        self.rss_mib = 0.0

    def signal(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)

    def check_alive(self) -> None:
        if any(p.poll() is not None for p in self.procs):
            raise RuntimeError(f"a service process of run {self.label} exited; see its log under the run folder")

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    def result(self) -> dict[str, Any]:
        per_stream = {i: {"fps": self.counts[i] / self.seconds, "frames": self.counts[i],
                          "p50_ms": float(np.percentile(v, 50)) if v else float("nan"),
                          "p95_ms": float(np.percentile(v, 95)) if v else float("nan")}
                      for i, v in self.latency_ms.items()}
        return {"n": self.n, "processes": len(self.procs), "seconds": self.seconds, "streams": per_stream,
                "total_fps": sum(s["fps"] for s in per_stream.values()), "rss_mib": self.rss_mib,
                "hwm_mib": sum(memory_mib(p.pid)[1] for p in self.procs)}


class Masks:
    """One SUB socket on every run's publish socket; reads headers only."""

    def __init__(self, endpoints: list[str]) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 100000)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"masks")
        for endpoint in endpoints:
            self.sock.connect(endpoint)

    def headers(self, seconds: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(int(min(left, 0.2) * 1000)):
                yield loads_header(self.sock.recv_multipart()[1])

    def close(self) -> None:
        self.sock.close(linger=0)
        self.context.term()


def warm_up(run: Run, masks: Masks, warmup: int, timeout: float) -> None:
    """Runs `run` alone until each of its streams published `warmup` masks, then pauses it (SIGSTOP)."""
    seen = dict.fromkeys(run.ids, 0)
    run.signal(signal.SIGCONT)
    deadline = time.monotonic() + timeout
    while min(seen.values()) < warmup:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run.label} did not warm up within {timeout:.0f} s: {seen}")
        run.check_alive()
        for header in masks.headers(0.5):
            if header["stream"] in seen:
                seen[header["stream"]] += 1
    run.signal(signal.SIGSTOP)


def window(run: Run, masks: Masks, seconds: float, timeout: float) -> None:
    """Resumes `run` alone; once every one of its streams has published a mask of a frame captured after the
    resumption (the frames queued before the pause are out), counts its masks and their capture-to-publish
    latency for `seconds`, then pauses it again."""
    resumed_ns = time.monotonic_ns()  # CLOCK_MONOTONIC: the services' t_capture_ns use the same clock
    run.signal(signal.SIGCONT)
    fresh: set[str] = set()
    deadline = time.monotonic() + timeout
    while fresh != set(run.ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run.label}: no fresh mask of {set(run.ids) - fresh} within {timeout:.0f} s")
        fresh |= {h["stream"] for h in masks.headers(0.2)
                  if h["stream"] in run.counts and h["t_capture_ns"] > resumed_ns}
    t0 = time.monotonic()
    for header in masks.headers(seconds):
        stream = header["stream"]
        if stream in run.counts:
            run.counts[stream] += 1
            run.latency_ms[stream].append((header["t_publish_ns"] - header["t_capture_ns"]) / 1e6)
    run.seconds += time.monotonic() - t0
    run.check_alive()
    run.rss_mib = max(run.rss_mib, sum(memory_mib(p.pid)[0] for p in run.procs))
    run.signal(signal.SIGSTOP)


def key_encoder_throughput(config: Path, batches: list[int], seconds: float) -> str:
    """Frames per second of the key encoder (eager PyTorch, fp16 on CUDA) at each batch size: what running the
    ready streams' frames as one batch would gain. A Markdown table."""
    import torch

    from edge_vos.config import load_yaml
    from edge_vos.model.weights import load_configured_network
    from edge_vos.program import RunConfig

    network = load_configured_network(load_yaml(RunConfig, config).tracker.model).eval().cuda().half()
    h, w = (int(v) for v in SIZE.split("x"))
    rows = []
    with torch.no_grad():
        for batch in batches:
            images = torch.rand(batch, 3, h, w, device="cuda", dtype=torch.half)
            for _ in range(5):
                network.encode_key(images)
            torch.cuda.synchronize()
            calls, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                network.encode_key(images)
                calls += 1
                if calls % 10 == 0:
                    torch.cuda.synchronize()
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            rows.append([batch, f"{elapsed / calls * 1000:.2f}", f"{batch * calls / elapsed:.0f}"])
    base = float(rows[0][2])
    for row in rows:
        row.append(f"{float(row[2]) / base:.2f}x")
    return "\n".join([
        f"### Key encoder at batch 1..{batches[-1]} ({torch.cuda.get_device_name()}, eager fp16, {SIZE} frames)", "",
        markdown_table(["batch", "ms per call", "frames per second", "vs batch 1"], rows)])


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    single = next(r for r in results if r["n"] == 1 and r["processes"] == 1)
    rows = []
    for r in results:
        rates = [s["fps"] for s in r["streams"].values()]
        spread = (max(rates) - min(rates)) / max(rates) if max(rates) else float("nan")
        where = "one process" if r["processes"] == 1 else f"{r['processes']} processes"
        rows.append([
            r["n"], where, " / ".join(f"{x:.2f}" for x in rates), f"{r['total_fps']:.2f}",
            f"{r['total_fps'] / single['total_fps']:.2f}x", f"{spread:.0%}",
            " / ".join(f"{s['p50_ms']:.0f}-{s['p95_ms']:.0f}" for s in r["streams"].values()),
            f"{r['rss_mib']:.0f} ({r['rss_mib'] / single['rss_mib']:.2f}x)", f"{r['hwm_mib']:.0f}",
        ])
    load = os.getloadavg()[0]
    import torch

    return "\n".join([
        f"## Several cameras: one process against one process per camera (`{args.config.name}`)", "",
        f"`/work/bin/bench-lock {args.command}`: `edge-vos run` processes with `configs/{args.config.name}` "
        f"(`configs/cpu.yaml`: the shipped tracker, `pipeline.torch_threads` 1), synthetic {SIZE} scenes with 2 "
        "objects (a seed per stream) "
        f"at `pace: fastest`; every run started in one invocation, paused except while measured, {args.seconds:.0f} s "
        f"per run in {args.rounds} windows interleaved with the other runs' (each from the moment every stream "
        "published a frame captured after the run was resumed; "
        f"engine exports and {args.warmup} masks per stream before); {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}; load average {load:.1f} at the end (a shared machine: absolute rates are "
        "noisy).", "",
        markdown_table(["streams", "run as", "fps per stream", "total fps", "total vs 1 stream", "spread of rates",
                        "capture->publish p50-p95 ms per stream", "RSS MiB (vs 1 stream)", "peak RSS MiB"], rows),
        "",
        "Spread = (fastest - slowest) / fastest stream. One process serves its streams from one inference thread "
        "(round robin over the streams with a frame ready) on one network and one set of runners (ONNX Runtime "
        "sessions on a CPU, TensorRT engines on a GPU); separate processes each load the network and their own "
        "runners and run an inference thread each: where cores are free (or, on a loaded machine, because the "
        "scheduler shares the CPU by runnable thread) they can add throughput, at the memory of the last column; "
        "one process gives its streams more cores through `pipeline.torch_threads`.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="windows per run, interleaved with the other runs'")
    parser.add_argument("--warmup", type=int, default=8, help="masks every stream publishes before the window")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_streams")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file (tools/gpu_check.sh)")
    parser.add_argument("--key-encoder-batches", type=int, nargs="*", default=[],
                        help="CUDA: first measure the key encoder's throughput at these batch sizes")
    parser.add_argument("--no-separate", action="store_true", help="only the one-process runs")
    args = parser.parse_args()
    sections = []
    if args.key_encoder_batches:
        import torch

        if not torch.cuda.is_available():
            print("bench_streams: --key-encoder-batches needs CUDA; nothing run", file=sys.stderr)  # noqa: T201
            return 2
        sections.append(key_encoder_throughput(args.config, sorted(args.key_encoder_batches), 3.0))
    args.command = "python tools/bench_streams.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    # The engines (ONNX exports) are built once, by a process that is not measured.
    first = Run(args.config, 1, False, args.out)
    masks = Masks(first.endpoints)
    try:
        warm_up(first, masks, args.warmup, args.startup_timeout)
    finally:
        first.stop()
        masks.close()
    runs = [Run(args.config, n, separate, args.out) for n in sorted(set(args.streams) | {1})
            for separate in ([False, True] if n > 1 and not args.no_separate else [False])]
    masks = Masks([e for run in runs for e in run.endpoints])
    try:
        for run in runs:
            run.signal(signal.SIGSTOP)
        for run in runs:
            warm_up(run, masks, args.warmup, args.startup_timeout)
        for _ in range(args.rounds):  # interleaved: load drift on a shared machine hits every run alike
            for run in runs:
                window(run, masks, args.seconds / args.rounds, args.startup_timeout)
        results = [run.result() for run in runs]
    finally:
        for run in runs:
            run.stop()
        masks.close()
    for result in results:
        print(json.dumps(result), flush=True)  # noqa: T201 - the measured numbers
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    text = report(results, args)
    print(text)  # noqa: T201 - the report
    if args.markdown:
        args.markdown.write_text("\n\n".join([text, *sections]) + "\n")
    if not args.no_doc:
        write_section(args.doc, "streams", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
