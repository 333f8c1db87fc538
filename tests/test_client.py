"""`edge_vos.client` and `edge-vos subscribe` against a running service (fake tracker): saving masks, timeouts,
Lazy Pirate retries against a service that is not there, and no torch import on the client side."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_vos import client_cli
from edge_vos.client import CommandClient, ServiceUnavailable
from edge_vos.config import from_dict
from edge_vos.data.davis import read_mask
from edge_vos.service.config import ServiceConfig
from edge_vos.service.pipeline import Service

from .fakes import ArrayReader, FakeTracker

ROOT = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    client_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def _service(frames: int = 10, **publish: object) -> Service:
    mask = np.zeros((48, 64), np.uint8)
    mask[5:20, 10:30] = 2
    config = from_dict(ServiceConfig, {
        "source": {"uri": "synthetic:", "pace": "fastest"},
        "publish": {"endpoint": "tcp://127.0.0.1:*", "wait_for_subscriber_s": 10, **publish},
        "control": {"endpoint": ""},
    })
    images = np.random.default_rng(0).integers(0, 255, (frames, 48, 64, 3), dtype=np.uint8)
    service = Service(config, tracker_factory=lambda _: FakeTracker(), reader=ArrayReader(images, mask=mask))
    service.start()
    return service


def test_subscribe_prints_and_saves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = _service(encoding="rle")
    try:
        code = client_cli.main(_args("--endpoint", service.publisher.last_endpoint, "--count", "5",
                                     "--save", str(tmp_path), "--timeout", "10"))
    finally:
        service.stop(timeout=3)
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("seq      0") and "2:300px@0.90" in lines[0]
    saved = sorted(tmp_path.glob("*.png"))
    assert len(saved) == 5 and (read_mask(saved[0]) == 2).sum() == 300


def test_subscribe_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    service = _service()
    try:
        assert client_cli.main(_args("--endpoint", service.publisher.last_endpoint, "--count", "2", "--json")) == 0
    finally:
        service.stop(timeout=3)
    headers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["seq"] for h in headers] == [0, 1]


def test_subscribe_times_out_on_silence() -> None:
    t0 = time.monotonic()
    assert client_cli.main(_args("--endpoint", "tcp://127.0.0.1:9", "--timeout", "1")) == 1
    assert time.monotonic() - t0 < 5


def test_show_without_display_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert client_cli.main(_args("--show")) == 2


def test_lazy_pirate_gives_up_against_an_absent_service() -> None:
    t0 = time.monotonic()
    with CommandClient("tcp://127.0.0.1:9", timeout_s=0.2, retries=2) as ctl:
        with pytest.raises(ServiceUnavailable, match="after 3 tries"):
            ctl.ping()
    assert time.monotonic() - t0 < 3


def test_client_side_does_not_import_torch() -> None:
    code = "import sys, edge_vos.client, edge_vos.client_cli; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
