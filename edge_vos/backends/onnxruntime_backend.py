"""ONNX Runtime backend: the exported parts in an InferenceSession each, tensors bound in place.

Inputs and outputs are bound with IOBinding to torch tensors' memory (`data_ptr()`), so nothing is copied
between PyTorch and ONNX Runtime on either the CPU or a CUDA device: outputs are preallocated torch
tensors that the session writes into. On CUDA machines the CUDA and TensorRT execution providers are
used when this onnxruntime build has them; the CPU provider always comes last as the fallback.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from edge_vos.backends.base import BackendUnavailable, PartRunner
from edge_vos.backends.export import export_all
from edge_vos.backends.parts import (
    DECODER_REGION_PARTS,
    INPUT_NAMES,
    OUTPUT_NAMES,
    PART_NAMES,
    VALUE_GLOBAL,
    VALUE_LOCAL,
    VALUE_REGION_PARTS,
)
from edge_vos.model.network import STCN

log = logging.getLogger(__name__)


def providers_for(device: torch.device, precision: str, cache_dir: Path) -> list[str | tuple[str, dict[str, str]]]:
    """Execution providers in preference order for a device, limited to those this build has."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen: list[str | tuple[str, dict[str, str]]] = []
    if device.type == "cuda":
        index = str(device.index or 0)
        if "TensorrtExecutionProvider" in available:
            chosen.append(("TensorrtExecutionProvider", {
                "device_id": index, "trt_fp16_enable": str(precision == "fp16"),
                "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir / "ort-trt"),
                "trt_timing_cache_enable": "True",
            }))
        if "CUDAExecutionProvider" in available:
            chosen.append(("CUDAExecutionProvider", {"device_id": index}))
        if not chosen:
            raise BackendUnavailable(
                f"onnxruntime on {device}: this onnxruntime build has no CUDA provider (has {sorted(available)}); "
                "install onnxruntime-gpu or use device 'cpu'"
            )
    chosen.append("CPUExecutionProvider")
    return chosen


class _Session:
    """One part: an InferenceSession plus the binding of torch tensors to its inputs and outputs."""

    def __init__(
        self, path: Path, part: str, device: torch.device, providers: list[str | tuple[str, dict[str, str]]],
        threads: int,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The readout runs in PyTorch between parts: share the same thread budget instead of oversubscribing.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.part = part
        self.device = device
        self.inputs = INPUT_NAMES[part]
        self.outputs = OUTPUT_NAMES[part]
        # Output shapes with their symbolic axes (objects, a crop's rows and columns) left as strings; filled
        # in per call from the inputs' shapes.
        self._in_shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self._out_shapes = {o.name: o.shape for o in self.session.get_outputs()}
        self._device_type = "cuda" if device.type == "cuda" else "cpu"
        self._device_id = (device.index or 0) if device.type == "cuda" else 0

    def run(self, objects: int, *inputs: torch.Tensor) -> list[torch.Tensor]:
        binding = self.session.io_binding()
        kept = []  # keep contiguous copies alive until the run has finished
        for name, x in zip(self.inputs, inputs, strict=True):
            x = x.to(self.device, torch.float32).contiguous()
            kept.append(x)
            binding.bind_input(name, self._device_type, self._device_id, np.float32, tuple(x.shape), x.data_ptr())
        symbols = {"objects": objects}
        for name, x in zip(self.inputs, kept, strict=True):
            symbols.update({d: n for d, n in zip(self._in_shapes[name], x.shape, strict=True) if isinstance(d, str)})
        outs = []
        for name in self.outputs:
            shape = [_axis_size(d, symbols, objects) for d in self._out_shapes[name]]
            y = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(name, self._device_type, self._device_id, np.float32, tuple(shape), y.data_ptr())
            outs.append(y)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch must be ready
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return outs


def _axis_size(axis: object, symbols: dict[str, int], objects: int) -> int:
    """An output axis's size: a number, a symbol the inputs set ("rows"), a multiple of one ("16*rows"), or
    else the object axis (the exporters name that one freely)."""
    if isinstance(axis, int):
        return axis
    if isinstance(axis, str):
        if axis in symbols:
            return symbols[axis]
        product = re.fullmatch(r"(\d+)\*(\w+)", axis)
        if product is not None and product.group(2) in symbols:
            return int(product.group(1)) * symbols[product.group(2)]
    return objects


class OnnxRuntimeRunner(PartRunner):
    """NetworkRunner over ONNX Runtime sessions of the three exported parts at one padded size."""

    name = "onnxruntime"

    def __init__(
        self, network: STCN, device: torch.device, precision: str, padded_hw: tuple[int, int],
        cache_dir: Path, threads: int | None = None, parts: tuple[str, ...] = PART_NAMES,
    ) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from exc
        if precision != "fp32" and device.type == "cpu":
            log.info("onnxruntime on CPU runs fp32 (precision %s ignored: no bf16/fp16 conv kernels)", precision)
        self.device = device
        self.precision = precision
        self.padded_hw = padded_hw
        # Crops are decoded and encoded on a CPU only (a GPU runs a whole frame's objects at once). Their parts are
        # exported with the others, when the runner is built on a stream's first frame, so that the first
        # object to be cropped does not stall its stream for an export.
        # The value encoder's two region parts compose to the whole one (the same outputs, as fast): on a CPU
        # they replace it, so one export and one session fewer.
        self.decodes_regions = device.type == "cpu" and "decoder" in parts
        self.encodes_regions = device.type == "cpu" and "value_encoder" in parts
        if self.encodes_regions:
            parts = (*(p for p in parts if p != "value_encoder"), *VALUE_REGION_PARTS)
        if self.decodes_regions:
            parts = (*parts, *DECODER_REGION_PARTS)
        exported = export_all(network, padded_hw, cache_dir=cache_dir, parts=parts)
        providers = providers_for(device, precision, cache_dir)
        threads = threads or torch.get_num_threads()
        self.sessions = {name: _Session(p.path, name, device, providers, threads) for name, p in exported.items()}
        self.providers = next(iter(self.sessions.values())).session.get_providers()
        log.info("onnxruntime providers: %s", self.providers)

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if part == "value_encoder" and part not in self.sessions:  # run as its two region parts (above)
            local = self.sessions[VALUE_LOCAL].run(objects, *inputs)
            return self.sessions[VALUE_GLOBAL].run(objects, *local)
        return self.sessions[part].run(objects, *inputs)
