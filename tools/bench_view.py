"""Web view benchmarks: what the live view costs the service, and why its frame stream is a WebSocket.

    /work/bin/bench-lock .venv/bin/python tools/bench_view.py               # both; writes the docs
    .venv/bin/python tools/bench_view.py --rounds 2 --frames 6 --no-doc     # a quick look

1. Overhead (section "view" of docs/benchmarks.md): one service at 240p (configs/cpu.yaml's tracker, the
   synthetic 432x240 scene with two objects, `pace: fastest`, one torch thread) whose condition is switched
   every few frames: **no view** (no previews, no view), **view, no viewer** (previews on and a
   `ViewServer` on the service's sockets, exactly as `run --view` starts one), **view, one viewer** (the
   same, with a WebSocket client in another process that acknowledges every frame it is sent, as the page
   does). Frame time = mean publish-to-publish interval of a window; each window is compared with the "no
   view" window of the same cycle. The view's CPU time is read per thread (view-http, view-feed,
   view-commands, and the publisher for the preview JPEG).
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

from tools.bench_view_report import overhead_markdown, stream_markdown  # noqa: E402

log = logging.getLogger("bench_view")
SIZE = (240, 432)
WARMUP = 4
SETTLE = 3  # frames skipped after each switch of condition
CONDITIONS = ("no view", "view, no viewer", "view, one viewer")
VIEW_THREADS = ("view-http", "view-feed", "view-commands")


# ---- the viewer (a separate process, like a browser elsewhere) ------------------------------------------


def viewer_main() -> int:
    """Obeys lines on stdin: `connect URL` (a WebSocket that acknowledges every frame, as the page does),
    `disconnect`, `quit`; then prints what it received and the CPU time it spent connected."""
    import aiohttp

    counts: dict[str, float] = {"frames": 0, "bytes": 0, "cpu_s": 0.0}

    async def receive(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_str('{"type": "ack"}')
                counts["frames"] += 1
                counts["bytes"] += len(message.data)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.strip())
            loop.call_soon_threadsafe(lines.put_nowait, "quit")

        threading.Thread(target=read_stdin, daemon=True).start()
        async with aiohttp.ClientSession() as session:
            while (line := await lines.get()) != "quit":
                if not line.startswith("connect "):
                    continue
                cpu = time.process_time()
                async with session.ws_connect(line.split(" ", 1)[1]) as ws:
                    task = asyncio.ensure_future(receive(ws))
                    while (line := await lines.get()) not in ("disconnect", "quit"):
                        pass
                    task.cancel()
                counts["cpu_s"] += time.process_time() - cpu
                if line == "quit":
                    break

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
    from edge_vos.model.weights import DEFAULT_WEIGHTS, RANDOM_WEIGHTS
    from edge_vos.program import RunConfig

    weights = args.weights or ("" if DEFAULT_WEIGHTS.is_file() else RANDOM_WEIGHTS)
    uri = f"synthetic:seed=3&frames=60&size={SIZE[0]}x{SIZE[1]}&objects=2&distractors=1"
    return load_yaml(RunConfig, args.config, {
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


class _Collector(threading.Thread):
    """Receives every mask message: (seq, t_publish_ns, Tracker.step ms)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(name="bench-subscriber", daemon=True)
        self.endpoint = endpoint
        self.messages: list[tuple[int, int, float]] = []
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        from edge_vos.client import MaskResult, Subscriber

        with Subscriber(self.endpoint, timeout_s=0.2, hwm=1000) as sub:
            self.ready.set()
            while not self.stop.is_set():
                message = sub.recv()
                if isinstance(message, MaskResult):
                    h = message.header
                    self.messages.append((h["seq"], h["t_publish_ns"], float(h["timings_ms"].get("step", 0.0))))

    def wait(self, frames: int, timeout: float = 300.0) -> int:
        """Waits until `frames` more messages arrived; returns the index of the first of them."""
        start = len(self.messages)
        deadline = time.monotonic() + timeout
        while len(self.messages) < start + frames:
            if time.monotonic() > deadline:
                raise RuntimeError("the service stopped publishing")
            time.sleep(0.005)
        return start


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    """One service, the conditions switched every few frames (the view started and stopped on its sockets as
    `run --view` does, previews on and off), so that each comparison is between neighbouring seconds."""
    from edge_vos.service.pipeline import Service
    from edge_vos.view.config import ViewConfig
    from edge_vos.view.server import ViewServer

    service = Service(_config(args, False, 0))
    service.start()
    collector = _Collector(service.publisher.last_endpoint)
    collector.start()
    collector.ready.wait(10)
    watched_port, unwatched_port = _free_port(), _free_port()  # the viewer connects only to the first
    viewer = subprocess.Popen([sys.executable, __file__, "--viewer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert viewer.stdin is not None

    def tell(line: str) -> None:
        assert viewer.stdin is not None
        viewer.stdin.write(line + "\n")
        viewer.stdin.flush()

    view: ViewServer | None = None
    windows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    try:
        collector.wait(WARMUP)
        for cycle in range(-1, args.rounds):  # cycle -1 warms up (first connections, first previews): not kept
            order = CONDITIONS if cycle % 2 == 0 else tuple(reversed(CONDITIONS))
            for condition in order:
                if view is not None:
                    tell("disconnect")
                    view.stop()
                    view = None
                service.config.publish.preview = condition != "no view"  # what `--view` turns on
                if condition != "no view":
                    port = watched_port if condition == "view, one viewer" else unwatched_port
                    view = ViewServer.for_service(ViewConfig(listen=f"127.0.0.1:{port}"),
                                                  service.publisher.last_endpoint, service.control.last_endpoint)
                    view.start()
                    if condition == "view, one viewer":
                        tell(f"connect http://127.0.0.1:{port}/api/stream")
                        deadline = time.monotonic() + 30
                        while not view.viewers.connected and time.monotonic() < deadline:
                            time.sleep(0.005)
                        if not view.viewers.connected:
                            raise RuntimeError("the viewer did not connect")
                collector.wait(SETTLE)  # frames that straddle the switch
                cpu_before = _thread_cpu_s(VIEW_THREADS), _thread_cpu_s(("publisher",)), _thread_cpu_s(("control",))
                first = collector.wait(args.frames)
                cpu_after = _thread_cpu_s(VIEW_THREADS), _thread_cpu_s(("publisher",)), _thread_cpu_s(("control",))
                window = collector.messages[first : first + args.frames]
                seqs = [m[0] for m in window]
                if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                    raise RuntimeError(f"messages lost in a window: {seqs}")
                publish_ms = np.array([m[1] for m in window]) / 1e6
                if cycle < 0:
                    continue
                windows.append({
                    "cycle": cycle, "condition": condition,
                    "frame_interval_ms": float(np.diff(publish_ms).mean()),
                    "step_ms_mean": float(np.mean([m[2] for m in window[1:]])),
                    "view_cpu_ms_per_frame": 1000 * (cpu_after[0] - cpu_before[0]) / len(window),
                    "publisher_cpu_ms_per_frame": 1000 * (cpu_after[1] - cpu_before[1]) / len(window),
                    "control_cpu_ms_per_frame": 1000 * (cpu_after[2] - cpu_before[2]) / len(window),
                })
                w = windows[-1]
                log.info("cycle %2d %-17s frame %.1f ms, step %.1f ms, CPU ms/frame view %.2f publisher %.2f "
                         "control %.2f", cycle + 1, condition, w["frame_interval_ms"], w["step_ms_mean"],
                         w["view_cpu_ms_per_frame"], w["publisher_cpu_ms_per_frame"], w["control_cpu_ms_per_frame"])
    finally:
        if view is not None:
            view.stop()
        collector.stop.set()
        collector.join(5)
        service.stop()
        out, _ = viewer.communicate("quit\n", timeout=30)
    counts = json.loads(out.strip().splitlines()[-1])
    return {"windows": windows, "viewer": counts, "load_before": load_before, "load_after": os.getloadavg()[0]}


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
    from edge_vos.view.feed import pack_frame
    from edge_vos.wire.protocol import encode_jpeg, encode_labels

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    parser.add_argument("--frames", type=int, default=8, help="frames measured per window")
    parser.add_argument("--rounds", type=int, default=16, help="cycles of the three conditions")
    parser.add_argument("--weights", help="checkpoint; default: the bundled weights, else 'random'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the inference thread")
    parser.add_argument("--repeat", type=int, default=50, help="repetitions of each stream-cost measurement")
    parser.add_argument("--stream-only", action="store_true", help="only the stream-choice measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-view.json")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--from-json", type=Path, help="only re-render the sections from a saved result")
    args = parser.parse_args()
    if args.viewer:
        return viewer_main()
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
