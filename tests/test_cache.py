"""The build cache shared by the ONNX, TensorRT and torch-tensorrt backends: keyed, verified, atomic."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_vos.backends import cache


@dataclass(frozen=True)
class _Key(cache.CacheKey):
    part: str
    version: str
    shapes: dict[str, list[int]] = field(default_factory=dict, hash=False)


def _store(path: Path, key: _Key, data: bytes) -> cache.Entry:
    with cache.writing(path) as tmp:
        tmp.write_bytes(data)
    return cache.record(path, key, note="for humans")


def test_an_entry_is_found_only_under_the_key_and_bytes_it_was_recorded_with(tmp_path, caplog) -> None:
    key = _Key("decoder", "1", {"x": [1, 2]})
    path = tmp_path / f"a-{key.digest()}.bin"
    assert cache.lookup(path, key, "thing") is None  # nothing there yet
    entry = _store(path, key, b"payload")
    meta = json.loads(cache.sidecar_path(path).read_text())
    assert meta == {"key": {"part": "decoder", "version": "1", "shapes": {"x": [1, 2]}},
                    "sha256": entry.sha256, "note": "for humans"}
    found = cache.lookup(path, key, "thing")
    assert found is not None and found.sha256 == cache.file_hash(path) == entry.sha256
    other = _Key("decoder", "2", {"x": [1, 2]})
    assert other.digest() != key.digest()
    assert cache.lookup(path, other, "thing") is None
    assert "version: '1' != '2'" in caplog.text
    path.write_bytes(b"payloaD")  # edited or partially written: the sidecar no longer vouches for it
    assert cache.lookup(path, key, "thing") is None
    cache.sidecar_path(path).write_text("{not json")
    assert cache.lookup(path, key, "thing") is None


def test_a_failed_write_leaves_neither_a_partial_artefact_nor_a_temporary_file(tmp_path) -> None:
    key = _Key("decoder", "1")
    path = tmp_path / "sub" / "a.ep"
    with pytest.raises(RuntimeError, match="compiler crashed"), cache.writing(path) as tmp:
        assert tmp.suffix == ".ep" and tmp.parent == path.parent  # some savers insist on the suffix
        tmp.write_bytes(b"half")
        raise RuntimeError("compiler crashed")
    assert list(path.parent.iterdir()) == []
    _store(path, key, b"whole")
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.ep", "a.json"]  # no temporaries left


def test_digest_depends_on_every_field_and_not_on_their_order() -> None:
    a = _Key("decoder", "1", {"x": [1], "y": [2]})
    b = _Key("decoder", "1", {"y": [2], "x": [1]})
    assert a.digest() == b.digest() and len(a.digest()) == 16
    assert len({a.digest(), _Key("encoder", "1", a.shapes).digest(), _Key("decoder", "1", {"x": [2]}).digest()}) == 3


def test_gpu_names_become_file_name_safe() -> None:
    assert cache.slug("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert cache.slug("Orin (nvgpu)") == "orin--nvgpu"
