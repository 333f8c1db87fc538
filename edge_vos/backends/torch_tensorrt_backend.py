"""torch-tensorrt backend: the same part modules compiled AOT with torch-tensorrt (FP16), cached on disk.

An alternative to the ONNX -> TensorRT path for machines where torch-tensorrt matches the installed torch
(it pins torch and TensorRT exactly). Same cache rules as the TensorRT backend: a compiled program is keyed
on the weights' hash + arch + shapes + precision + torch-tensorrt and TensorRT versions + GPU name and
compute capability, with a JSON sidecar; a mismatch is recompiled, never loaded. fp16 is applied by
compiling the part in half precision with fp32 inputs and outputs (explicit typing, which is the
torch-tensorrt default and works whether or not `enabled_precisions` still exists in the installed version).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_vos.backends import cache
from edge_vos.backends.base import BackendUnavailable, PartRunner, unavailable_reason
from edge_vos.backends.parts import INPUT_NAMES, PART_NAMES, HalfPrecision, make_part
from edge_vos.backends.tensorrt_backend import object_profile
from edge_vos.model.network import STCN

log = logging.getLogger(__name__)


def torch_tensorrt_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why torch-tensorrt cannot run here, or None. Imports nothing that touches CUDA."""
    return unavailable_reason("torch-tensorrt", "torch_tensorrt", device, "it must match the installed torch exactly")


@dataclass(frozen=True)
class CompiledKey(cache.CacheKey):
    part: str
    arch: str
    weights_sha256: str
    torch_tensorrt_version: str
    torch_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    shapes: dict[str, list[list[int]]] = field(hash=False)


class TorchTensorRTRunner(PartRunner):
    """NetworkRunner over the three parts compiled by torch-tensorrt at one padded size."""

    name = "torch_tensorrt"

    def __init__(
        self, network: STCN, device: torch.device, precision: str, padded_hw: tuple[int, int],
        cache_dir: Path, max_objects: int = 8,
    ) -> None:
        reason = torch_tensorrt_unavailable_reason(device)
        if reason is not None:
            raise BackendUnavailable(f"backend 'torch_tensorrt': {reason}")
        import torch_tensorrt

        self.device = device
        self.precision = "fp32" if precision == "fp32" else "fp16"
        self.padded_hw = padded_hw
        self.max_objects = max_objects
        gpu_name, capability = cache.gpu_identity(device)
        network_hash = cache.weights_hash(network)
        # Compiled from a copy: moving (and halving) the parts must not change the caller's network.
        source = copy.deepcopy(network).to(device).eval()
        self.modules: dict[str, nn.Module] = {}
        for part in PART_NAMES:
            shapes = object_profile(network, part, padded_hw, max_objects)
            key = CompiledKey(
                part, network.arch, network_hash, torch_tensorrt.__version__, torch.__version__, gpu_name,
                capability, self.precision, {n: [list(s) for s in mmo] for n, mmo in shapes.items()},
            )
            self.modules[part] = self._compiled(source, part, key, shapes, cache_dir)

    def _compiled(
        self, network: STCN, part: str, key: CompiledKey, shapes: dict[str, Any], cache_dir: Path
    ) -> nn.Module:
        import torch_tensorrt

        path = cache_dir / f"{network.arch}-{part}-{self.padded_hw[1]}x{self.padded_hw[0]}-tt-{key.digest()}.ep"
        if cache.lookup(path, key, "torch-tensorrt program") is not None:
            try:
                loaded: nn.Module = torch.export.load(str(path)).module()
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("torch_tensorrt: cannot load %s (%s): recompiling", path.name, exc)
            else:
                log.info("torch_tensorrt: cached %s", path.name)
                return loaded
        module = make_part(network, part)
        if self.precision == "fp16":
            module = HalfPrecision(module)
        inputs = [
            torch_tensorrt.Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=torch.float32)
            for lo, opt, hi in (shapes[n] for n in INPUT_NAMES[part])
        ]
        example = [torch.zeros(shapes[n][1], device=self.device) for n in INPUT_NAMES[part]]
        log.info("torch_tensorrt: compiling %s (%s)", part, self.precision)
        start = time.perf_counter()
        compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=inputs)
        with cache.writing(path) as tmp:
            torch_tensorrt.save(compiled, str(tmp), arg_inputs=example)
        cache.record(path, key, build_seconds=round(time.perf_counter() - start, 1), torch=torch.__version__)
        return compiled

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.modules[part](*(x.to(self.device, torch.float32).contiguous() for x in inputs))
        return list(out) if isinstance(out, tuple | list) else [out]
