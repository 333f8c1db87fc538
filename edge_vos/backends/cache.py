"""The build cache (`engines/`): ONNX exports, TensorRT engines and torch-tensorrt programs, each with a sidecar.

Every artefact sits next to a JSON sidecar (`<name>.json`) holding the key it was built from and the
SHA-256 of its bytes. An artefact is reused only when both match (`lookup`); anything else (no sidecar,
another key, other bytes: a partial write, an edit, a copy from another device) is rebuilt, never loaded.
The key's digest goes into the file name, so entries built from different things live side by side.

Writes are atomic: the artefact and then its sidecar are each written to a temporary file and renamed
into place, so a crash or a concurrent build never leaves a loadable partial file or a sidecar that
vouches for bytes it did not see. What goes into each key is the backend's own business (`ExportKey`,
`EngineKey`, `CompiledKey`); this module only knows how keys are compared, hashed and stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$EDGE_VOS_ENGINES` or `engines/` in the current directory (a service sets it to its cache dir)."""
    return Path(os.environ.get("EDGE_VOS_ENGINES", "engines"))


class CacheKey:
    """Base of the frozen dataclasses naming a cache entry: every field is something the artefact depends on."""

    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def digest(self) -> str:
        """16 hex digits of SHA-256 over the fields: goes into the file name."""
        return hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, recorded: object) -> str:
        """Which fields a sidecar's recorded key has other than this key (for the log)."""
        if not isinstance(recorded, dict):
            return "no key recorded"
        return ", ".join(
            f"{k}: {recorded.get(k)!r} != {v!r}" for k, v in self.fields().items() if recorded.get(k) != v
        )


@dataclass(frozen=True)
class Entry:
    """A verified artefact: where it is, the SHA-256 of its bytes and everything its sidecar records."""

    path: Path
    sha256: str
    meta: dict[str, Any]


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def lookup(path: Path, key: CacheKey, what: str) -> Entry | None:
    """The entry at `path` when its sidecar names exactly `key` and its bytes are the ones recorded.

    None means build it (again); why is logged when an entry exists but cannot be trusted.
    """
    sidecar = sidecar_path(path)
    if not path.is_file() or not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        log.warning("unreadable sidecar %s (%s): rebuilding the %s", sidecar, exc, what)
        return None
    if not isinstance(meta, dict) or meta.get("key") != key.fields():
        recorded = meta.get("key") if isinstance(meta, dict) else None
        log.warning("%s %s was built from something else (%s): rebuilding", what, path.name, key.differences(recorded))
        return None
    digest = file_hash(path)
    if digest != meta.get("sha256"):
        log.warning("%s %s does not match its sidecar's hash (partial write or edit?): rebuilding", what, path.name)
        return None
    return Entry(path, digest, meta)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write an artefact to; renamed into place when the
    block succeeds, removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    with writing(path) as tmp:
        tmp.write_bytes(data)


def record(path: Path, key: CacheKey, **meta: Any) -> Entry:
    """Writes the sidecar of the artefact now at `path` (its hash, `key`, and `meta` for humans)."""
    digest = file_hash(path)
    content = {"key": key.fields(), "sha256": digest, **meta}
    atomic_write(sidecar_path(path), json.dumps(content, indent=2).encode())
    return Entry(path, digest, content)


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(network: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names, dtypes, shapes and bytes (independent of the device)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(name, compute capability "major.minor") of a CUDA device, from PyTorch (no TensorRT object)."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def slug(text: str) -> str:
    """A file-name-safe lower-case form of a GPU name ("NVIDIA GeForce RTX 4090" -> "nvidia-geforce-rtx-4090")."""
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()
