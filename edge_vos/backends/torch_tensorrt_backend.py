"""torch-tensorrt backend: the same part modules compiled AOT with torch-tensorrt (FP16), cached on disk.

An alternative to the ONNX -> TensorRT path for machines where torch-tensorrt matches the installed torch
(it pins torch and TensorRT exactly). Same cache rules as the TensorRT backend: a compiled program is keyed
on the weights' hash + arch + shapes + precision + torch-tensorrt and TensorRT versions + GPU name and
compute capability, with a JSON sidecar; a mismatch is recompiled, never loaded. fp16 is applied by
compiling the part in half precision with fp32 inputs and outputs (explicit typing, which is the
torch-tensorrt default and works whether or not `enabled_precisions` still exists in the installed version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_vos.backends.base import BackendUnavailable
from edge_vos.backends.export import weights_hash
from edge_vos.backends.parts import INPUT_NAMES, PART_NAMES, HalfPrecision, make_part
from edge_vos.backends.tensorrt_backend import gpu_identity, module_installed, object_profile
from edge_vos.model.network import STCN

log = logging.getLogger(__name__)


def torch_tensorrt_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why torch-tensorrt cannot run here, or None. Imports nothing that touches CUDA."""
    if not torch.cuda.is_available():
        return "CUDA is not available (torch.cuda.is_available() is False): torch-tensorrt needs an NVIDIA GPU"
    if device is not None and device.type != "cuda":
        return f"torch-tensorrt needs a CUDA device, got device {device}"
    if not module_installed("torch_tensorrt"):
        return "the torch_tensorrt package is not installed (it must match the installed torch exactly)"
    return None


@dataclass(frozen=True)
class CompiledKey:
    part: str
    arch: str
    weights_sha256: str
    torch_tensorrt_version: str
    torch_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    shapes: dict[str, list[list[int]]] = field(hash=False)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


class TorchTensorRTRunner:
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
        gpu_name, capability = gpu_identity(device)
        network_hash = weights_hash(network)
        self.modules: dict[str, nn.Module] = {}
        for part in PART_NAMES:
            shapes = object_profile(network, part, padded_hw, max_objects)
            key = CompiledKey(
                part, network.arch, network_hash, torch_tensorrt.__version__, torch.__version__, gpu_name,
                capability, self.precision, {n: [list(s) for s in mmo] for n, mmo in shapes.items()},
            )
            self.modules[part] = self._compiled(network, part, key, shapes, cache_dir)

    def _compiled(
        self, network: STCN, part: str, key: CompiledKey, shapes: dict[str, Any], cache_dir: Path
    ) -> nn.Module:
        import torch_tensorrt

        path = cache_dir / f"{network.arch}-{part}-{self.padded_hw[1]}x{self.padded_hw[0]}-tt-{key.digest()}.ep"
        sidecar = path.with_suffix(".json")
        if path.is_file() and sidecar.is_file():
            try:
                if json.loads(sidecar.read_text()).get("key") == asdict(key):
                    log.info("torch_tensorrt: cached %s", path.name)
                    return torch.export.load(str(path)).module()
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("torch_tensorrt: cannot load %s (%s): recompiling", path.name, exc)
            else:
                log.warning("torch_tensorrt: %s was compiled from something else: recompiling", path.name)
        module = make_part(network, part).to(self.device).eval()
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
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch_tensorrt.save(compiled, str(path), arg_inputs=example)
        sidecar.write_text(json.dumps({"key": asdict(key), "build_seconds": round(time.perf_counter() - start, 1)}))
        return compiled

    def _run(self, part: str, *inputs: torch.Tensor) -> Any:
        with torch.no_grad():
            return self.modules[part](*(x.to(self.device, torch.float32).contiguous() for x in inputs))

    def encode_key(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        key, qv, f16, f8, f4 = self._run("key_encoder", image)
        return key, qv, f16, f8, f4

    def encode_value(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = self._run("value_encoder", image, key_f16, masks, others)
        return out

    def decode(
        self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        out: torch.Tensor = self._run("decoder", readout, query_value, f8, f4)
        return out
