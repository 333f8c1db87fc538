"""Web view benchmarks: what the live view costs the service, and why its frame stream is a WebSocket.

    /work/bin/bench-lock .venv/bin/python tools/bench_view.py               # both; writes the docs
    .venv/bin/python tools/bench_view.py --rounds 1 --frames 20 --no-doc    # a quick look

1. Overhead (section "view" of docs/benchmarks.md): the service at 240p (configs/cpu.yaml's tracker, the
   synthetic 432x240 scene with two objects, `pace: fastest`, one torch thread), run in three conditions,
   interleaved round after round in one process: **no view** (`view.listen` empty, no previews), **view,
   no viewer** (`--view`: previews on, the view subscribed, nobody watching), **view, one viewer** (a
   WebSocket client in another process that takes and acknowledges every frame it is sent, as the page
   does). Frame time = mean publish-to-publish interval of the steady frames; the view's own CPU time is
   read per thread (view-http, view-feed, view-commands).
2. Stream choice (section "view-stream" of docs/view.md): per-frame work on the service host and bytes on
   the wire for the WebSocket (forward the preview JPEG and the label map PNG the service already made;
   the browser composites) against MJPEG (decode both, colour and blend the masks, re-encode a JPEG), at
   240p and 480p.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_view")
SIZE = (240, 432)
WARMUP = 4
CONDITIONS = ("no view", "view, no viewer", "view, one viewer")
VIEW_THREADS = ("view-http", "view-feed", "view-commands")


# ---- the viewer (a separate process, like a browser elsewhere) ------------------------------------------


def viewer_main(url: str) -> int:
    """Connects (retrying until the view is up), acknowledges every frame, prints counts on SIGTERM."""
    import aiohttp

    counts = {"frames": 0, "bytes": 0}
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                try:
                    async with session.ws_connect(url) as ws:
                        while not stop.is_set():
                            try:
                                message = await ws.receive(timeout=0.5)
                            except asyncio.TimeoutError:
                                continue
                            if message.type == aiohttp.WSMsgType.BINARY:
                                await ws.send_str('{"type": "ack"}')
                                counts["frames"] += 1
                                counts["bytes"] += len(message.data)
                            elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                                break
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.05)

    asyncio.run(run())
    print(json.dumps(counts), flush=True)  # noqa: T201 - read by the parent
    return 0


# ---- overhead ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(args: argparse.Namespace, view: bool, port: int) -> Any:
    from edge_vos.config import load_yaml
    from edge_vos.service.config import ServiceConfig
    from edge_vos.tracker.tracker import DEFAULT_WEIGHTS

    weights = args.weights or ("" if DEFAULT_WEIGHTS.is_file() else "random")
    uri = f"synthetic:seed=3&frames=60&size={SIZE[0]}x{SIZE[1]}&objects=2&distractors=1"
    return load_yaml(ServiceConfig, args.config, {
        "source.uri": uri, "source.pace": "fastest", "source.loop": True, "tracker.model.weights": weights,
        "publish.endpoint": "tcp://127.0.0.1:*", "control.endpoint": "tcp://127.0.0.1:*", "publish.hwm": 1000,
        "publish.encoding": "png", "publish.preview": view, "publish.wait_for_subscriber_s": 30.0,
        "metrics.enabled": False, "pipeline.torch_threads": args.threads,
        "view.listen": f"127.0.0.1:{port}" if view else "",
    })


def _thread_cpu_s(names: tuple[str, ...]) -> float:
    """CPU time of this process's threads with these names. Linux's schedstat counts nanoseconds on the CPU;
    the per-thread user/system times (the fallback) are sampled at the clock tick, too coarse for a thread
    that works a millisecond per frame."""
    ids = {t.native_id for t in threading.enumerate() if t.name in names}
    total = 0.0
    for tid in ids:
        try:
            total += int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            import psutil

            total += sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id == tid)
    return total


def segment(args: argparse.Namespace, condition: str, tracker: Any) -> dict[str, Any]:
    from edge_vos.client import MaskResult, Subscriber
    from edge_vos.service.pipeline import Service
    from tools.bench_service import summarize_fastest

    view = condition != "no view"
    port = _free_port()
    viewer = None
    if condition == "view, one viewer":
        viewer = subprocess.Popen([sys.executable, __file__, "--viewer", f"http://127.0.0.1:{port}/api/stream"],
                                  stdout=subprocess.PIPE, text=True)
    tracker.reset()  # one tracker for every run: no loading between runs, so they can be short and many
    service = Service(_config(args, view, port), tracker_factory=lambda _: tracker)
    service.start()
    got: list[MaskResult] = []
    cpu_view = cpu_publisher = 0.0
    try:
        if viewer is not None:
            deadline = time.monotonic() + 30
            while not service.view._viewers and time.monotonic() < deadline:
                time.sleep(0.01)
            if not service.view._viewers:
                raise RuntimeError("the viewer did not connect")
        cpu_before = _thread_cpu_s(VIEW_THREADS)
        cpu_publisher_before = _thread_cpu_s(("publisher",))
        with Subscriber(service.publisher.last_endpoint, timeout_s=120, hwm=1000) as sub:
            for message in sub:
                got.append(message)
                if len(got) >= args.frames:
                    break
        cpu_view = _thread_cpu_s(VIEW_THREADS) - cpu_before
        cpu_publisher = _thread_cpu_s(("publisher",)) - cpu_publisher_before  # read while the service runs
    finally:
        service.stop()
        counts = {"frames": 0, "bytes": 0}
        if viewer is not None:
            viewer.send_signal(signal.SIGTERM)
            out, _ = viewer.communicate(timeout=30)
            counts = json.loads(out.strip().splitlines()[-1])
    result = summarize_fastest(got[WARMUP - 3 :])  # summarize_fastest drops its own 3 warm-up frames
    result.update({"condition": condition, "view_cpu_ms_per_frame": 1000 * cpu_view / max(1, len(got)),
                   "publisher_cpu_ms_per_frame": 1000 * cpu_publisher / max(1, len(got)),
                   "viewer_frames": counts["frames"],
                   "viewer_kb_per_frame": counts["bytes"] / max(1, counts["frames"]) / 1024})
    return result


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    from edge_vos.service.pipeline import build_tracker

    tracker = build_tracker(_config(args, False, 0))
    rounds: list[dict[str, dict[str, Any]]] = []
    load_before = os.getloadavg()[0]
    for r in range(args.rounds):
        order = CONDITIONS if r % 2 == 0 else tuple(reversed(CONDITIONS))  # no condition always goes first
        done: dict[str, dict[str, Any]] = {}
        for condition in order:
            done[condition] = segment(args, condition, tracker)
            s = done[condition]
            log.info("round %d %-17s frame %.1f ms, step %.1f ms, CPU ms/frame view %.2f publisher %.2f, "
                     "viewer got %d frames", r + 1, condition, s["frame_interval_ms"], s["step_ms_mean"],
                     s["view_cpu_ms_per_frame"], s["publisher_cpu_ms_per_frame"], s["viewer_frames"])
        rounds.append(done)
    return {"rounds": rounds, "load_before": load_before, "load_after": os.getloadavg()[0]}


# ---- stream choice ---------------------------------------------------------------------------------------


def _timeit(fn: Any, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def compose_mjpeg(jpeg: bytes, png: bytes, palette: np.ndarray) -> bytes:
    """What an MJPEG stream would do per frame: decode both, colour and outline the masks, encode a JPEG."""
    import cv2

    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    ids = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    colours = palette[ids]
    blended = np.where(ids[..., None] > 0, (picture * 0.55 + colours * 0.45).astype(np.uint8), picture)
    for obj in np.unique(ids)[1:]:  # outlines, as the page draws them
        contours, _ = cv2.findContours((ids == obj).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(blended, contours, -1, palette[obj].tolist(), 1)
    ok, out = cv2.imencode(".jpg", blended, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return out.tobytes()


def stream_costs(repeat: int) -> list[dict[str, Any]]:
    import functools

    import cv2

    from edge_vos.data.synthetic import generate_sequence
    from edge_vos.service.protocol import encode_jpeg, encode_labels
    from edge_vos.view.feed import pack_frame

    cv2.setNumThreads(1)
    palette = np.zeros((256, 3), np.uint8)
    palette[1:] = np.random.default_rng(0).integers(60, 255, (255, 3))
    rows = []
    for h, w in ((240, 432), (480, 854)):
        frames, labels = generate_sequence(3, 2, (h, w), 3, 1)
        jpeg, _, _ = encode_jpeg(frames[1], 75, 0)  # what the service publishes as its preview
        png = encode_labels(labels[1], "png")  # what it publishes as the mask payload
        header = {"type": "frame", "seq": 1, "width": w, "height": h, "objects": []}
        pack = functools.partial(pack_frame, header, jpeg, png)
        compose = functools.partial(compose_mjpeg, jpeg, png, palette)
        rows.append({"size": f"{w}x{h}", "ws_ms": _timeit(pack, repeat), "ws_kb": len(pack()) / 1024,
                     "mjpeg_ms": _timeit(compose, repeat), "mjpeg_kb": len(compose()) / 1024})
    return rows


# ---- reports --------------------------------------------------------------------------------------------


def overhead_markdown(result: dict[str, Any], setup: dict[str, Any]) -> str:
    from tools.doc_tables import markdown_table

    rounds = result["rounds"]

    def med(condition: str, key: str) -> float:
        return float(np.median([r[condition][key] for r in rounds]))

    base = "no view"
    ratios = {c: [100 * (r[c]["frame_interval_ms"] / r[base]["frame_interval_ms"] - 1) for r in rounds]
              for c in CONDITIONS}
    rows = []
    for c in CONDITIONS:
        rows.append([
            c, f"{med(c, 'frame_interval_ms'):.1f}", f"{med(c, 'step_ms_mean'):.1f}",
            "-" if c == base else f"{np.median(ratios[c]):+.1f}% ({', '.join(f'{x:+.1f}' for x in ratios[c])})",
            f"{med(c, 'view_cpu_ms_per_frame'):.2f}" if c != base else "-",
            f"{med(c, 'publisher_cpu_ms_per_frame'):.2f}",
            f"{np.median([r[c]['latency_ms']['p50'] for r in rounds]):.0f}",
            f"{med(c, 'viewer_frames'):.0f} ({med(c, 'viewer_kb_per_frame'):.1f} kB each)" if c == CONDITIONS[2]
            else "-",
        ])
    one = float(np.median(ratios[CONDITIONS[2]]))
    verdict = "under" if one < 5 else "OVER"
    viewer = CONDITIONS[2]
    added_cpu = med(viewer, "view_cpu_ms_per_frame") + med(viewer, "publisher_cpu_ms_per_frame") - med(
        base, "publisher_cpu_ms_per_frame")
    added_pct = 100 * added_cpu / med(base, "frame_interval_ms")
    t = setup["tracker"]
    return "\n".join([
        "## Web view: what it costs the service at 240p (CPU)",
        "",
        f"`tools/bench_view.py`: synthetic scene {SIZE[1]}x{SIZE[0]} with 2 objects, `pace: fastest`, tracker from "
        f"`{setup['config']}` (arch {t['model']['arch']}, readout {t['readout']['kind']}/{t['readout']['svd']}, "
        f"working short side {t['resolution']}, {t['device']} {t['precision']}, {setup['threads']} torch thread), "
        f"weights {setup['weights']}; {setup['frames']} frames per run, the first {WARMUP} excluded; "
        f"{len(rounds)} rounds, the three conditions interleaved in each (order alternating), all in one process "
        "with one tracker (reset between runs); "
        f"{setup['machine']}; load average {result['load_before']:.1f} before, {result['load_after']:.1f} after. "
        "The viewer is a WebSocket client in another process that acknowledges every frame it is sent, as the "
        "page does (a browser on another machine costs the service only the sending).",
        "",
        markdown_table(["condition", "frame time ms (median of rounds)", "Tracker.step ms",
                        "frame time vs no view: median (each round)", "view threads CPU ms/frame",
                        "publisher thread CPU ms/frame", "capture->publish p50 ms", "frames the viewer got"], rows),
        "",
        f"**One viewer connected vs no view: {one:+.1f}% frame time (median of the rounds; goal: under 5%, "
        f"{verdict}).** The CPU time the view adds per frame, read from the kernel's per-thread counters (so "
        f"not subject to the frame-time noise of this shared machine): its three threads (HTTP/WebSocket, "
        f"ZeroMQ feed, commands) plus the publisher thread's extra work for the preview JPEG = "
        f"**{added_cpu:.1f} ms per frame, {added_pct:.1f}% of the frame time**, spent beside the inference "
        "thread, not in it. Frame time = mean publish-to-publish interval of a run; percentages compare runs of "
        "the same round.",
    ])


def stream_markdown(rows: list[dict[str, Any]]) -> str:
    from tools.doc_tables import markdown_table

    return "\n".join([
        "Per-frame work on the service host and bytes per frame (`tools/bench_view.py --stream-only`; synthetic "
        "scene with 3 objects, preview JPEG quality 75, one OpenCV thread, median of repeated runs):",
        "",
        markdown_table(["frame", "WebSocket: pack ms", "WebSocket kB/frame", "MJPEG: compose + encode ms",
                        "MJPEG kB/frame"],
                       [[r["size"], f"{r['ws_ms']:.3f}", f"{r['ws_kb']:.1f}", f"{r['mjpeg_ms']:.2f}",
                         f"{r['mjpeg_kb']:.1f}"] for r in rows]),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewer", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    parser.add_argument("--frames", type=int, default=24, help=f"frames per run (the first {WARMUP} excluded)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--weights", help="checkpoint; default: the bundled weights, else 'random'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the inference thread")
    parser.add_argument("--repeat", type=int, default=50, help="repetitions of each stream-cost measurement")
    parser.add_argument("--stream-only", action="store_true", help="only the stream-choice measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-view.json")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--from-json", type=Path, help="only re-render the sections from a saved result")
    args = parser.parse_args()
    if args.viewer:
        return viewer_main(args.viewer)
    from tools.doc_tables import write_section

    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        for name in ("edge_vos", "aiohttp"):
            logging.getLogger(name).setLevel(logging.WARNING)
        import torch

        from edge_vos.config import to_dict

        result = {"stream": stream_costs(args.repeat)}
        log.info("stream costs: %s", result["stream"])
        if not args.stream_only:
            config = _config(args, False, 0)
            result["setup"] = {
                "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
                "weights": config.tracker.model.weights or "bundled", "tracker": to_dict(config.tracker),
                "threads": args.threads, "frames": args.frames,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            }
            result["overhead"] = overhead(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    text = stream_markdown(result["stream"])
    print(text)  # noqa: T201 - the report is this tool's output
    if not args.no_doc:
        write_section(ROOT / "docs" / "view.md", "view-stream", text, title="# The live web view\n")
    if "overhead" in result:
        text = overhead_markdown(result["overhead"], result["setup"])
        print(text)  # noqa: T201
        if not args.no_doc:
            write_section(ROOT / "docs" / "benchmarks.md", "view", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
