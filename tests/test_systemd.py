"""systemd integration: the units pass `systemd-analyze verify` without a single warning, the install
script stages them, and the notify protocol speaks to a datagram socket like systemd's."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_vos.service.notify import Notifier

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("edge-vos.service", "edge-vos@.service")
EXE = Path(sys.executable).parent / "edge-vos"


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60,
                          cwd=path.parent)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_units_verify_cleanly(unit: str, tmp_path: Path) -> None:
    if not EXE.exists():
        pytest.skip(f"{EXE} missing (pip install -e . creates it)")
    text = (ROOT / "systemd" / unit).read_text()
    assert "/opt/edge-vos/.venv/bin/edge-vos" in text
    (tmp_path / unit).write_text(text.replace("/opt/edge-vos/.venv/bin/edge-vos", str(EXE)))
    target = tmp_path / unit.replace("@.", "@cam0.")
    result = _verify(target)
    # systemd-analyze exits 0 on unknown keys or bad values, so any output at all is a failure.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above is able to fail: a typo in a key is reported."""
    if not EXE.exists():
        pytest.skip(f"{EXE} missing")
    text = (ROOT / "systemd" / "edge-vos.service").read_text().replace("/opt/edge-vos/.venv/bin/edge-vos", str(EXE))
    (tmp_path / "edge-vos.service").write_text(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    assert "NoNewPrivilege" in _verify(tmp_path / "edge-vos.service").stderr


def test_unit_settings() -> None:
    for unit in UNITS:
        text = (ROOT / "systemd" / unit).read_text()
        for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes", "NoNewPrivileges=yes",
                     "DeviceAllow=char-video4linux rw", "ProtectSystem=strict", "TimeoutStopSec="):
            assert line in text, f"{unit}: {line}"
        assert "PrivateDevices=yes" not in text and "MemoryDenyWriteExecute=yes" not in text
    assert "/etc/edge-vos/%i.yaml" in (ROOT / "systemd" / "edge-vos@.service").read_text()


def test_install_script_stages_units_and_config(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "edge-vos").exists():
        pytest.skip("install.sh installs from this checkout's .venv")
    result = subprocess.run(["bash", str(ROOT / "systemd" / "install.sh")], capture_output=True, text=True,
                            env={**os.environ, "DESTDIR": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr
    unit = (tmp_path / "etc/systemd/system/edge-vos.service").read_text()
    assert f"ExecStart={ROOT}/.venv/bin/edge-vos run --config /etc/edge-vos/config.yaml" in unit
    assert (tmp_path / "etc/edge-vos/cam0.yaml").is_file()


# ---- sd_notify -----------------------------------------------------------------------------------


def _receiver(abstract: bool, tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"@edge-vos-notify-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind(b"\0" + name[1:].encode())
    else:
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    sock.settimeout(2)
    return sock, name


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_messages(abstract: bool, tmp_path: Path) -> None:
    sock, name = _receiver(abstract, tmp_path)
    with sock:
        notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"})
        assert notifier.enabled and notifier.watchdog_interval_s == 2.0
        assert notifier.ready("streaming cam0")
        assert sock.recv(1024) == b"READY=1\nSTATUS=streaming cam0"
        assert notifier.status("12 fps\nsecond line")
        assert sock.recv(1024) == b"STATUS=12 fps second line"
        assert notifier.watchdog()
        assert sock.recv(1024) == b"WATCHDOG=1"
        assert not notifier.watchdog()  # rate-limited to half the interval
        assert notifier.stopping()
        assert sock.recv(1024) == b"STOPPING=1\nSTATUS=stopping"
        notifier.close()


def test_notify_is_a_no_op_without_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready() and not notifier.watchdog()
    # The watchdog belongs to another process: ignore it.
    other = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None
    # systemd gone: sending fails quietly.
    assert not Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"}).ready()
