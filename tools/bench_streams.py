"""Several cameras in one service against one service process per camera: frames per second per stream and
in total, capture-to-publish latency per stream, resident memory. Writes the "streams" section of
docs/benchmarks.md.

    /work/bin/bench-lock .venv/bin/python tools/bench_streams.py                 # 1, 2, 4 streams; 30 s each
    /work/bin/bench-lock .venv/bin/python tools/bench_streams.py --streams 1 4 --seconds 20 --no-doc

Every run is a real `edge-vos run` process with the shipped config (configs/cpu.yaml) and synthetic 240x432
scenes (two objects, a different seed per stream) at `pace: fastest` (every frame processed, nothing
dropped), all in one invocation: for each N, one process with `streams:` of N cameras, then N processes with
one camera each at the same time. This process only reads the mask headers (no payload decoding) from every
publish socket; a stream's rate is its masks in the measuring window (after every stream published
`--warmup` masks: engine exports and the first frames excluded) over the window; capture-to-publish is
`t_publish_ns - t_capture_ns` of those masks (in `fastest` it includes the wait in the bounded frame queue,
as docs/benchmarks.md "service" explains); RSS is VmRSS of each process at the window's end (and VmHWM, the
peak), summed over the processes of a run.
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


def measure(endpoints: list[str], ids: list[str], procs: list[subprocess.Popen[bytes]], warmup: int,
            seconds: float, startup_timeout: float) -> dict[str, Any]:
    context = zmq.Context()
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 10000)
    sock.setsockopt(zmq.SUBSCRIBE, b"masks")
    for endpoint in endpoints:
        sock.connect(endpoint)
    seen = dict.fromkeys(ids, 0)
    window: dict[str, list[float]] = {i: [] for i in ids}
    t_start: float | None = None
    deadline = time.monotonic() + startup_timeout
    try:
        while True:
            now = time.monotonic()
            if t_start is None and now > deadline:
                raise RuntimeError(f"streams did not warm up within {startup_timeout:.0f} s: {seen}")
            if t_start is not None and now - t_start >= seconds:
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a service process exited; see its log under the run folder")
            if not sock.poll(200):
                continue
            parts = sock.recv_multipart()
            header = loads_header(parts[1])
            stream = header["stream"]
            seen[stream] += 1
            if t_start is not None:
                window[stream].append((header["t_publish_ns"] - header["t_capture_ns"]) / 1e6)
            elif min(seen.values()) >= warmup:
                t_start = time.monotonic()
        elapsed = time.monotonic() - (t_start or time.monotonic())
        rss = [memory_mib(p.pid) for p in procs]
    finally:
        sock.close(linger=0)
        context.term()
    per_stream = {i: {"fps": len(v) / elapsed, "frames": len(v),
                      "p50_ms": float(np.percentile(v, 50)) if v else float("nan"),
                      "p95_ms": float(np.percentile(v, 95)) if v else float("nan")} for i, v in window.items()}
    return {"seconds": elapsed, "streams": per_stream, "total_fps": sum(s["fps"] for s in per_stream.values()),
            "rss_mib": sum(r for r, _ in rss), "hwm_mib": sum(h for _, h in rss)}


def run(config: Path, n: int, separate: bool, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    ids = [f"cam{i}" for i in range(n)]
    seeds = list(range(3, 3 + n))
    launches = [start(config, [i], [s], log_dir) for i, s in zip(ids, seeds, strict=True)] if separate else [
        start(config, ids, seeds, log_dir)]
    procs = [p for p, _ in launches]
    try:
        result = measure([e for _, e in launches], ids, procs, args.warmup, args.seconds, args.startup_timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    return {"n": n, "processes": len(procs), **result}


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
        "## Several cameras: one process against one process per camera (CPU)", "",
        f"`{args.command}`: `edge-vos run` processes with `configs/cpu.yaml` (the shipped tracker; "
        f"`pipeline.torch_threads` 1), synthetic {SIZE.replace('x', 'x')} scenes with 2 objects (a seed per stream) "
        f"at `pace: fastest`, all runs in one invocation; {args.seconds:.0f} s measured per run after every stream "
        f"published {args.warmup} masks; {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"load average {load:.1f} at the end (a shared machine: absolute rates are noisy).", "",
        markdown_table(["streams", "run as", "fps per stream", "total fps", "total vs 1 stream", "spread of rates",
                        "capture->publish p50-p95 ms per stream", "RSS MiB (vs 1 stream)", "peak RSS MiB"], rows),
        "",
        "Spread = (fastest - slowest) / fastest stream. One process serves its streams from one inference thread "
        "(round robin over the streams with a frame ready) on one network and one set of ONNX Runtime sessions; "
        "separate processes each load the network and their own sessions and compete for the cores.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=8, help="masks every stream publishes before the window")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_streams")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    args.command = "python tools/bench_streams.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sorted(set(args.streams) | {1}):
        for separate in ([False, True] if n > 1 else [False]):
            result = run(args.config, n, separate, args, args.out)
            print(json.dumps(result), flush=True)  # noqa: T201 - progress of a long benchmark
            results.append(result)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    text = report(results, args)
    print(text)  # noqa: T201 - the report
    if not args.no_doc:
        write_section(args.doc, "streams", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
