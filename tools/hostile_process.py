"""One `edge-vos run` process for tools/hostile_service.py's attacks: its own loopback ports and config (a
cheap untrained tracker), a notify socket that says when start-up is over, and stop/exit bookkeeping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests.service_support import CHEAP_TRACKER, ROOT, free_port, notify_socket, wait_ready

LOOPBACK = "127.0.0.1"


class Service:
    """One `edge-vos run` subprocess with its own loopback ports and config."""

    def __init__(self, work: Path, *args: str, **sections: Any) -> None:
        self.publish = f"tcp://{LOOPBACK}:{free_port()}"
        self.control = f"tcp://{LOOPBACK}:{free_port()}"
        data: dict[str, Any] = {
            "source": {"uri": "synthetic:frames=20&size=96x128&objects=1", "pace": "realtime", "fps": 20,
                       "loop": True},
            "tracker": CHEAP_TRACKER, "publish": {"endpoint": self.publish}, "control": {"endpoint": self.control},
            "pipeline": {"torch_threads": 1, "status_every_s": 5},
        }
        for key, value in sections.items():
            data[key] = {**data.get(key, {}), **value}
        self.config = work / f"service-{time.monotonic_ns()}.yaml"
        self.config.write_text(yaml.safe_dump(data))
        self.args = args
        self.notify, self.notify_env = notify_socket()
        self.output = ""

    def wait_ready(self) -> float:
        return wait_ready(self.notify, lambda: self.proc.poll() is None)

    def start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **self.notify_env}
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
            self.wait_ready()
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
