"""Attacks a real `edge-vos run` process the way issue #13 did (hostile control traffic, signals, changing
and broken sources, unusable files) and prints what happened as a table; `--doc` also writes it into
docs/service.md (section `reliability`).

    .venv/bin/python tools/hostile_service.py                        # every group; prints the table
    .venv/bin/python tools/hostile_service.py --doc docs/service.md  # and writes the section
    .venv/bin/python tools/hostile_service.py --only fuzz,flood --messages 20000

Every socket is on 127.0.0.1 (the endpoints are built here from free loopback ports; nothing else is
reachable). Every attack is bounded in count and time. The service runs an untrained stcn-r18-lite at a
64-pixel working size (`--weights random`): the attacks are on the service, not on the model, and the tracker
stays cheap on a shared machine. Needs the dev extras (hypothesis generates the fuzzed requests, with the
strategies of tests/strategies.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import yaml
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_vos.client import MaskResult, Preview, Status, Subscriber  # noqa: E402
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("hostile_service")
LOOPBACK = "127.0.0.1"
TRACKER = {"model": {"arch": "stcn-r18-lite", "weights": "random"}, "resolution": 64, "device": "cpu",
           "readout": {"kind": "stcn"}, "memory": {"capacity": 3, "max_pinned": 1}}
Row = tuple[str, str, str]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class Notify:
    """A datagram socket standing in for systemd's notify socket (READY=1 tells when start-up is over)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = f"@edge-vos-hostile-{os.getpid()}-{time.monotonic_ns()}"
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.settimeout(0.05)

    def wait_ready(self, proc: subprocess.Popen[str], timeout_s: float = 180) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode} before READY")
            try:
                if b"READY=1" in self.sock.recv(4096):
                    return time.monotonic() - t0
            except (TimeoutError, BlockingIOError):
                continue
        raise RuntimeError("no READY=1")

    def close(self) -> None:
        self.sock.close()


class Service:
    """One `edge-vos run` subprocess with its own loopback ports and config."""

    def __init__(self, work: Path, *args: str, **sections: Any) -> None:
        self.publish = f"tcp://{LOOPBACK}:{free_port()}"
        self.control = f"tcp://{LOOPBACK}:{free_port()}"
        data: dict[str, Any] = {
            "source": {"uri": "synthetic:frames=20&size=96x128&objects=1", "pace": "realtime", "fps": 20,
                       "loop": True},
            "tracker": TRACKER, "publish": {"endpoint": self.publish}, "control": {"endpoint": self.control},
            "pipeline": {"torch_threads": 1, "status_every_s": 5},
        }
        for key, value in sections.items():
            data[key] = {**data.get(key, {}), **value}
        self.config = work / f"service-{time.monotonic_ns()}.yaml"
        self.config.write_text(yaml.safe_dump(data))
        self.args = args
        self.notify = Notify()
        self.output = ""

    def start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NOTIFY_SOCKET": self.notify.name}
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_vos.cli", "run", "--config", str(self.config),
                                      *self.args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        return self.proc

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> tuple[int, float]:
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.output, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.output, _ = self.proc.communicate()
        self.notify.close()
        return self.proc.returncode, time.monotonic() - t0

    @contextlib.contextmanager
    def running(self) -> Iterator[Service]:
        self.start()
        try:
            self.notify.wait_ready(self.proc)
            yield self
        finally:
            if self.proc.poll() is None:
                self.stop()
            else:
                self.output = self.proc.communicate()[0]
                self.notify.close()

    def run_to_exit(self, timeout_s: float = 120) -> tuple[int, str]:
        """Runs a service expected to end by itself (a bad file, a finite source): exit status, output."""
        self.start()
        try:
            self.output, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
        self.notify.close()
        return self.proc.returncode, self.output

    def rss_mib(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20


class Client:
    """A DEALER on the control socket: sends without waiting, so requests can be pipelined."""

    def __init__(self, endpoint: str, rcvhwm: int = 1000) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self.socket.connect(endpoint)

    def send(self, body: bytes) -> None:
        self.socket.send_multipart([b"", body])

    def recv(self, timeout_s: float) -> dict[str, Any] | None:
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        return json.loads(self.socket.recv_multipart()[-1])

    def request(self, body: dict[str, Any], timeout_s: float = 5) -> dict[str, Any] | None:
        self.send(json.dumps(body).encode())
        return self.recv(timeout_s)

    def close(self) -> None:
        self.socket.close()
        self.context.term()


# ---- control traffic ------------------------------------------------------------------------------

def fuzz(work: Path, messages: int) -> list[Row]:
    from hypothesis import HealthCheck, Phase, given, settings

    from tests.strategies import requests

    outcome: Counter[str] = Counter()
    latencies: list[float] = []
    with Service(work, control={"max_message_bytes": 1_000_000}).running() as svc:
        client = Client(svc.control)
        rss_before = svc.rss_mib()

        @settings(max_examples=messages, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(requests)
        def attack(body: bytes) -> None:
            t0 = time.perf_counter()
            client.send(body)
            reply = client.recv(10)
            if reply is None:
                outcome["no reply"] += 1
                return
            latencies.append(time.perf_counter() - t0)
            outcome["ok" if reply.get("ok") else "error"] += 1
            if client.recv(0) is not None:
                outcome["extra reply"] += 1

        attack()
        alive = svc.proc.poll() is None
        pong = client.request({"cmd": "ping"})
        stats = client.request({"cmd": "stats"})
        rss_after = svc.rss_mib()
        client.close()
    sent = sum(outcome.values())
    p50, p99 = (np.percentile(latencies, q) * 1000 for q in (50, 99)) if latencies else (0, 0)
    return [("fuzzed control requests",
             f"{sent} generated by hypothesis (raw bytes, any JSON, command-shaped objects with wrong types, "
             "huge and non-finite numbers, 4000-6000-digit integers, mutated and deeply nested requests), "
             "one at a time",
             f"{outcome['ok'] + outcome['error']} replies ({outcome['error']} errors, {outcome['ok']} ok), "
             f"{outcome['no reply']} without a reply, {outcome['extra reply']} extra; process "
             f"{'alive' if alive else 'DEAD'}, ping {'answered' if pong and pong.get('pong') else 'UNANSWERED'}, "
             f"{stats['stats']['frames_processed'] if stats else '?'} frames processed meanwhile; reply p50/p99 "
             f"{p50:.1f}/{p99:.1f} ms; RSS {rss_before:.0f} -> {rss_after:.0f} MiB")]


def flood(work: Path) -> list[Row]:
    rows = []
    with Service(work).running() as svc:
        client = Client(svc.control)
        n = 3000
        for i in range(n):
            body = {"cmd": "add", "id": 2, "box": [10, 10, 50, 50], "req": i} if i % 3 else {"cmd": "ping", "req": i}
            client.send(json.dumps(body).encode())
        seen: Counter[int] = Counter()
        kinds: Counter[str] = Counter()
        while (reply := client.recv(3)) is not None:
            seen[reply["req"]] += 1
            kinds["busy" if "busy" in reply.get("error", "") else "ok" if reply["ok"] else "error"] += 1
        client.close()
        rows.append(("pipelined flood", f"{n} requests (2/3 add, 1/3 ping) sent without reading a reply",
                     f"{len(seen)} of {n} answered, {sum(v - 1 for v in seen.values())} twice, "
                     f"{n - len(seen)} unanswered ({kinds['busy']} busy, {kinds['ok']} ok, {kinds['error']} errors)"))
        client = Client(svc.control, rcvhwm=10)
        n = 20000
        for i in range(n):
            client.send(json.dumps({"cmd": "config", "req": i}).encode())
        time.sleep(0.5)
        got = 0
        while client.recv(3) is not None:
            got += 1
        client.close()
        rows.append(("late reader", f"{n} `config` requests (1.4 kB replies, 28 MB), read only afterwards",
                     f"{got} of {n} replies arrived"))
        big = Client(svc.control)
        big.send(b"x" * (9 * 2**20))
        answered = big.recv(2) is not None
        big.close()
        client = Client(svc.control)
        pong = client.request({"cmd": "ping"})
        client.close()
        rows.append(("oversized request", "one 9 MiB request (limit `control.max_message_bytes` 8 MiB)",
                     f"{'answered' if answered else 'dropped by ZeroMQ, no reply'}; the next ping "
                     f"{'answered' if pong else 'UNANSWERED'}, "
                     f"process {'alive' if svc.proc.poll() is None else 'DEAD'}"))
    return rows


# ---- signals ------------------------------------------------------------------------------------

def signals(work: Path) -> list[Row]:
    svc = Service(work)
    svc.start()
    ready_s = svc.notify.wait_ready(svc.proc)
    rc, took = svc.stop(signal.SIGTERM)
    results = [(rc, took, "Traceback" in svc.output)]
    fractions = (0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9)
    for i, fraction in enumerate(fractions):
        svc = Service(work)
        svc.start()
        time.sleep(max(0.15, fraction * ready_s))
        rc, took = svc.stop(signal.SIGINT if i % 2 else signal.SIGTERM)
        results.append((rc, took, "Traceback" in svc.output or "KeyboardInterrupt" in svc.output))
    during = results[1:]
    return [
        ("signals during start-up", f"{len(during)} starts; SIGTERM or SIGINT at 5-90% of a {ready_s:.1f} s "
                                   "start-up (not before 0.15 s: the bare interpreter's own start)",
         f"{sum(r == 0 for r, _, _ in during)}/{len(during)} exited 0, slowest in "
         f"{max(t for _, t, _ in during):.2f} s, {sum(tb for _, _, tb in during)} tracebacks"),
        ("signal while streaming", "SIGTERM after READY=1",
         f"exit {results[0][0]} in {results[0][1]:.2f} s, {'a traceback' if results[0][2] else 'no traceback'}"),
    ]


# ---- sources -------------------------------------------------------------------------------------

def _folder(path: Path, n: int, size: tuple[int, int] = (96, 128)) -> Path:
    """n JPEGs whose top-left 32x32 block holds 4 * index (readable back from preview JPEGs)."""
    path.mkdir(parents=True)
    for i in range(n):
        image = np.full((*size, 3), 200, np.uint8)
        image[:32, :32] = 4 * i
        cv2.imwrite(str(path / f"{i:05d}.jpg"), image)
    return path


def _mask_file(path: Path, size: tuple[int, int] = (96, 128)) -> Path:
    mask = np.zeros(size, np.uint8)
    mask[40:80, 50:100] = 1
    cv2.imwrite(str(path), mask)
    return path


def _read_stream(svc: Service, on_preview: Any = None, timeout_s: float = 60) -> tuple[list[Any], list[int]]:
    """Masks, statuses and the file index of each preview, until `ended` or `failed`."""
    messages: list[Any] = []
    indices: list[int] = []
    with Subscriber(svc.publish, topics=("masks", "status", "preview"), timeout_s=timeout_s, hwm=1000) as sub:
        while True:
            message = sub.recv()
            if message is None:
                break
            messages.append(message)
            if isinstance(message, Preview):
                indices.append(int(round(float(message.image[4:28, 4:28].mean()) / 4)))
                if on_preview is not None:
                    on_preview(indices[-1])
            if isinstance(message, Status) and message.header["state"] in ("ended", "failed"):
                break
    return messages, indices


def sources(work: Path) -> list[Row]:
    rows = []
    folder = _folder(work / "vanishing", 50)
    removed = False

    def remove(index: int) -> None:
        nonlocal removed
        if index >= 12 and not removed:
            removed = True
            for i in range(20, 35):
                (folder / f"{i:05d}.jpg").unlink()

    svc = Service(work, "--source", str(folder), "--prompt-mask", str(_mask_file(work / "m.png")),
                  publish={"preview": True, "preview_max_side": 0, "wait_for_subscriber_s": 60, "hwm": 1000})
    svc.start()
    _, indices = _read_stream(svc, remove)
    rc, _ = svc.stop()
    read = sorted(set(indices))
    rows.append(("folder whose files vanish", "50 images (pace fastest, frame queue 2); files 20-34 deleted once "
                                              "frame 12 was published; no loop",
                 f"files {_ranges(read)} processed, {len(indices) - len(read)} repeated, "
                 f"{'in order' if indices == sorted(indices) else 'OUT OF ORDER'}; stream ended, exit {rc}"))
    folder = _folder(work / "broken", 30)
    (folder / "00007.jpg").write_bytes(b"not an image")
    (folder / "00019.jpg").write_bytes(b"\xff\xd8\xff truncated")
    svc = Service(work, "--source", str(folder), "--prompt-mask", str(_mask_file(work / "m2.png")),
                  publish={"preview": True, "preview_max_side": 0, "wait_for_subscriber_s": 60, "hwm": 1000})
    svc.start()
    _, indices = _read_stream(svc)
    rc, _ = svc.stop()
    warnings = svc.output.count("skipping unreadable image")
    rows.append(("unreadable images", "a 30-image folder with 2 undecodable files",
                 f"{len(indices)} frames processed ({_ranges(sorted(set(indices)))}), {warnings} warnings "
                 f"naming the files; exit {rc}"))
    folder = _folder(work / "clip", 40)
    svc = Service(work, "--config", str(ROOT / "configs" / "cpu.yaml"), "--source", str(folder), "--prompt-mask",
                  str(_mask_file(work / "m3.png")), "--weights", "random", "--resolution", "64",
                  "--set", "tracker.model.arch=stcn-r18-lite", "--publish", f"tcp://{LOOPBACK}:{free_port()}",
                  "--control", "none", "--set", "pipeline.torch_threads=1")
    rc, _ = svc.run_to_exit()
    processed = next((line.split("after ")[1].split(" processed")[0] for line in svc.output.splitlines()
                      if "source ended after" in line), "?")
    rows.append(("a folder given to the camera config", "`edge-vos run --config configs/cpu.yaml` (realtime, loop) "
                                                        "`--source` a 40-image folder",
                 f"{processed} frames processed, then the run ended by itself (exit {rc}); "
                 f"{'pace fastest, no loop' if 'pace fastest, no loop' in svc.output else 'pace NOT switched'}"))
    runs, good = 5, 0
    for run in range(runs):
        folder = _folder(work / f"end{run}", 30)
        svc = Service(work, "--source", str(folder), "--prompt-mask", str(_mask_file(work / f"e{run}.png")),
                      publish={"wait_for_subscriber_s": 60, "hwm": 1000})
        svc.start()
        messages, _ = _read_stream(svc)
        svc.stop()
        masks = [m for m in messages if isinstance(m, MaskResult)]
        last = messages[-1] if messages else None
        good += bool(masks and isinstance(last, Status) and last.header["state"] == "ended"
                     and last.header.get("last_seq") == masks[-1].seq and len(masks) == 30)
    rows.append(("end of stream", f"{runs} runs of a 30-image folder, subscribed to masks and status",
                 f"{good}/{runs}: all 30 masks, then `ended` with `last_seq` = the last mask's seq"))
    return rows


def _ranges(values: list[int]) -> str:
    if not values:
        return "none"
    out, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:  # type: ignore[list-item]
        if v is None or v != prev + 1:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            if v is not None:
                start = v
        if v is not None:
            prev = v
    return ", ".join(out)


# ---- unusable files ------------------------------------------------------------------------------

def files(work: Path) -> list[Row]:
    import collections

    import torch

    good = (ROOT / "edge_vos" / "weights" / "default.safetensors").read_bytes()
    rng = np.random.default_rng(0)
    bad = {
        "truncated.safetensors": good[:4096], "garbage.safetensors": rng.bytes(5000),
        "bad-header.safetensors": (64).to_bytes(8, "little") + b"{not json" + b" " * 64, "empty.safetensors": b"",
        "garbage.pth": rng.bytes(3000),
    }
    paths = []
    for name, data in bad.items():
        (work / name).write_bytes(data)
        paths.append(work / name)
    torch.save(collections.OrderedDict(a=torch.zeros(64)), work / "truncated.pth")
    (work / "truncated.pth").write_bytes((work / "truncated.pth").read_bytes()[:200])
    paths.append(work / "truncated.pth")
    pickled = work / "pickled.pth"
    pickled.write_bytes(_pickled_checkpoint())
    paths.append(pickled)
    paths.append(work / "missing.safetensors")
    verdicts = []
    for path in paths:
        rc, output = Service(work, "--weights", str(path)).run_to_exit()
        errors = [line for line in output.splitlines() if " ERROR " in line]
        verdicts.append(rc == 2 and len(errors) == 1 and str(path) in errors[0] and "Traceback" not in output
                        and "weights_only=False" not in output and "this must never run" not in output)
    mask = np.zeros((90, 128), np.uint8)
    mask[10:40, 10:40] = 1
    cv2.imwrite(str(work / "small.png"), mask)
    rc, output = Service(work, "--prompt-mask", str(work / "small.png")).run_to_exit()
    hint = "--set prompt.resize=true" in output
    return [
        ("unusable weights files", f"{len(paths)} files: truncated, garbage, bad-header and empty safetensors; "
                                   "garbage, truncated and pickled-object .pth; a missing file",
         f"{sum(verdicts)}/{len(paths)}: exit 2 with one ERROR line naming the file and the problem, no traceback, "
         "never torch's `weights_only=False` advice"),
        ("prompt mask of the wrong size", "128x90 `prompt.mask` for a 128x96 stream",
         f"exit {rc}, {'names both sizes and `--set prompt.resize=true`' if hint else 'NO HINT'}"),
    ]


def _pickled_checkpoint() -> bytes:
    """A torch file holding a pickled callable next to a tensor (refused unread, never executed)."""
    import io

    import torch

    class Hook:
        def __reduce__(self) -> Any:
            return (print, ("this must never run",))

    buf = io.BytesIO()
    torch.save({"key_proj.weight": torch.zeros(2), "hook": Hook()}, buf)
    return buf.getvalue()


GROUPS = {"fuzz": None, "flood": flood, "signals": signals, "sources": sources, "files": files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma list of: {', '.join(GROUPS)}")
    parser.add_argument("--messages", type=int, default=5000, help="fuzzed control requests (default 5000)")
    parser.add_argument("--doc", type=Path, help="write the table into this Markdown file (section `reliability`)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    chosen = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    rows: list[Row] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edge-vos-hostile-") as tmp:
        for group in chosen:
            log.info("group %s", group)
            work = Path(tmp) / group
            work.mkdir()
            rows += fuzz(work, args.messages) if group == "fuzz" else GROUPS[group](work)  # type: ignore[misc]
    table = markdown_table(["check", "attack", "result"], rows)
    print(table)  # noqa: T201 - the tool's output
    if args.doc:
        body = "\n".join([
            "## Reliability under hostile input (measured)",
            "",
            f"`python tools/hostile_service.py --doc docs/service.md` ({time.monotonic() - started:.0f} s; "
            f"{os.cpu_count()} CPUs shared with other jobs): a real `edge-vos run` process on loopback (untrained "
            "stcn-r18-lite at a 64-pixel working size; the attacks are on the service).",
            "",
            table,
        ])
        write_section(args.doc, "reliability", body, title="# The edge-vos service\n")
        log.info("section `reliability` -> %s", args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
