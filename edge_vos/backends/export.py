"""ONNX export of the key encoder, value encoder and decoder at one working size, cached under engines/.

An export is keyed on what determines its bytes: the weights' hash, the arch, the padded working size,
the opset, the part, the precision variant and the version of the exported graph (bumped when parts.py
or the network's forward passes change it). The cache rules (sidecar, hash check, atomic writes) are
`cache.py`'s.

Exporter choice (torch 2.13): the torch.export-based exporter (`dynamo=True`) is the default and the
maintained path; the TorchScript exporter is deprecated ("will be removed") though faster (docs/engines.md).
Both give the same operators for these conv nets and both handle the object axis as a dynamic dimension.
We use dynamo and fall back to TorchScript only if dynamo fails, logging why.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edge_vos.backends import cache
from edge_vos.backends.parts import (
    INPUT_NAMES,
    OBJECT_INPUTS,
    OUTPUT_NAMES,
    PART_NAMES,
    SPATIAL_SCALES,
    HalfPrecision,
    example_inputs,
    make_part,
)
from edge_vos.labels import MAX_OBJECT_ID
from edge_vos.model.network import STCN

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# Bump when the exported graph changes for the same weights (parts.py or the network's own forward passes).
PARTS_VERSION = 5


@dataclass(frozen=True)
class ExportKey(cache.CacheKey):
    """Everything an ONNX export's bytes depend on."""

    part: str
    arch: str
    weights_sha256: str
    height: int
    width: int
    opset: int
    precision: str  # "fp32", or "fp16" for strongly typed TensorRT (fp16 inside, fp32 inputs/outputs)
    parts_version: int = PARTS_VERSION

    def filename(self) -> str:
        size = f"{self.width}x{self.height}"
        return f"{self.arch}-{self.part}-{size}-op{self.opset}-{self.precision}-{self.digest()}.onnx"


@dataclass(frozen=True)
class ExportedPart:
    part: str
    path: Path
    key: ExportKey
    sha256: str  # of the ONNX file: TensorRT engines are keyed on it


def export_part(
    network: STCN,
    part: str,
    padded_hw: tuple[int, int],
    *,
    cache_dir: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    network_hash: str | None = None,
) -> ExportedPart:
    """Returns the cached ONNX export of one part, exporting it first when missing or stale."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"ONNX export precision must be fp32 or fp16, got {precision!r}")
    folder = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
    key = ExportKey(
        part, network.arch, network_hash or cache.weights_hash(network), padded_hw[0], padded_hw[1], opset, precision
    )
    path = folder / key.filename()
    entry = cache.lookup(path, key, "ONNX export")
    if entry is not None:
        log.debug("ONNX cache hit: %s", path)
        return ExportedPart(part, path, key, entry.sha256)
    start = time.perf_counter()
    with cache.writing(path) as tmp:
        exporter = _export(network, part, padded_hw, opset, precision, tmp)
        _check_single_file(tmp)
    seconds = round(time.perf_counter() - start, 2)
    entry = cache.record(
        path, key, exporter=exporter, torch=torch.__version__, inputs=list(INPUT_NAMES[part]),
        outputs=list(OUTPUT_NAMES[part]), object_inputs=list(OBJECT_INPUTS[part]), export_seconds=seconds,
    )
    log.info("exported %s at %dx%d to %s (%s, %.1f s)", part, padded_hw[1], padded_hw[0], path, exporter, seconds)
    return ExportedPart(part, path, key, entry.sha256)


def export_all(
    network: STCN, padded_hw: tuple[int, int], *, parts: tuple[str, ...] = PART_NAMES, **kwargs: object
) -> dict[str, ExportedPart]:
    """Exports (or finds cached) the parts (default: all three); computes the weights' hash once."""
    network_hash = cache.weights_hash(network)
    return {
        part: export_part(network, part, padded_hw, network_hash=network_hash, **kwargs)  # type: ignore[arg-type]
        for part in parts
    }


def _export(network: STCN, part: str, padded_hw: tuple[int, int], opset: int, precision: str, path: Path) -> str:
    """Writes the ONNX of one part to `path`; returns which exporter made it."""
    # A CPU fp32 copy: the caller's network may live on CUDA or have been converted by an eager runner.
    net = copy.deepcopy(network).float().cpu().eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    module = make_part(net, part)
    if precision == "fp16":
        module = HalfPrecision(module)
    inputs = example_inputs(net, part, padded_hw, objects=2)
    names_in, names_out = list(INPUT_NAMES[part]), list(OUTPUT_NAMES[part])
    try:
        with _quiet():
            _export_dynamo(module, inputs, names_in, names_out, OBJECT_INPUTS[part], SPATIAL_SCALES.get(part, {}),
                           opset, path)
        return "dynamo"
    except Exception as exc:  # the exporter raises many types; fall back and say why
        log.warning("dynamo ONNX export of %s failed (%s); using the TorchScript exporter", part, exc)
        with _quiet():
            _export_torchscript(module, inputs, names_in, names_out, OBJECT_INPUTS[part], SPATIAL_SCALES.get(part, {}),
                                opset, path)
        return "torchscript"


def _export_dynamo(
    module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], names_in: list[str], names_out: list[str],
    object_inputs: tuple[str, ...], spatial: dict[str, int], opset: int, path: Path,
) -> None:
    """`spatial`: inputs whose height and width are free, as multiples of one pair of cell counts."""
    objects = torch.export.Dim("objects", min=1, max=MAX_OBJECT_ID)
    rows, cols = torch.export.Dim("rows", min=1, max=1024), torch.export.Dim("cols", min=1, max=1024)
    dynamic: dict[str, Any] = {}
    for name in names_in:
        axes: dict[int, Any] = {0: objects} if name in object_inputs else {}
        if name in spatial:
            scale = spatial[name]
            axes.update({2: rows * scale if scale > 1 else rows, 3: cols * scale if scale > 1 else cols})
        dynamic[name] = axes or None
    # Every part's forward takes *inputs (parts.NetworkCall, HalfPrecision): its dynamic shapes go positionally.
    shapes = (tuple(dynamic.values()),)
    with torch.no_grad():
        program = torch.onnx.export(
            module, inputs, dynamo=True, opset_version=opset, input_names=names_in, output_names=names_out,
            dynamic_shapes=shapes, optimize=True, verbose=False, external_data=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def _export_torchscript(
    module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], names_in: list[str], names_out: list[str],
    object_inputs: tuple[str, ...], spatial: dict[str, int], opset: int, path: Path,
) -> None:
    axes: dict[str, dict[int, str]] = {name: {0: "objects"} for name in object_inputs}
    if object_inputs:
        axes.update({name: {0: "objects"} for name in names_out})
    for name, scale in spatial.items():  # named as dynamo names them ("rows", "2*rows"): the runner reads them
        axes.setdefault(name, {}).update({2: "rows" if scale == 1 else f"{scale}*rows",
                                          3: "cols" if scale == 1 else f"{scale}*cols"})
    with torch.no_grad():
        torch.onnx.export(
            module, inputs, str(path), dynamo=False, opset_version=min(opset, 17), input_names=names_in,
            output_names=names_out, dynamic_axes=axes,
        )


def _check_single_file(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences the exporters' deprecation chatter and torch.export's INFO/WARNING logging."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
