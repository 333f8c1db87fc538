"""TensorRT 10 backend: FP16 engines built from the ONNX exports, cached with a sidecar, run on torch memory.

Why no pycuda: an engine only needs device pointers and a CUDA stream handle. The buffers are PyTorch
CUDA tensors (`data_ptr()`, allocated by PyTorch's caching allocator) and the stream is PyTorch's current
stream (`cuda_stream`), so the frame goes image -> key encoder -> readout (PyTorch) -> decoder without
leaving the GPU and without a second CUDA context or allocator; work on one stream is ordered, so no
synchronisation is needed between engines and the readout.

Engine cache (`engines/`): an engine is tied to the TensorRT version and the GPU, so it is keyed on the
ONNX file's SHA-256 + TensorRT version + GPU name and compute capability + precision + input shapes
(min/opt/max). A JSON sidecar records that key and the engine's own SHA-256; an engine whose sidecar is
missing, differs, or whose bytes do not match is rebuilt, never loaded. A timing cache per GPU and
TensorRT version makes rebuilds (new resolution, new weights) much faster.

Nothing here touches a TensorRT object before checking that CUDA is usable: on machines without a GPU the
`tensorrt-lean` wheels import but crash in `deserialize_cuda_engine`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from edge_vos.backends import cache
from edge_vos.backends.base import BackendUnavailable, PartRunner, unavailable_reason
from edge_vos.backends.export import ExportedPart, export_all
from edge_vos.backends.parts import INPUT_NAMES, OBJECT_INPUTS, OUTPUT_NAMES, input_shapes
from edge_vos.model.network import STCN

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30  # enough for these conv nets; Jetson Orin Nano has 8 GB shared memory
Shape = tuple[int, ...]
_INSTALL_HINT = (
    "Jetson: JetPack's python3-libnvinfer in a venv with --system-site-packages; desktop: "
    "pip install 'edge-vos[gpu]'; see docs/engines.md"
)


def tensorrt_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why TensorRT cannot run here, or None when it can. Creates no TensorRT object."""
    return unavailable_reason("TensorRT", "tensorrt", device, _INSTALL_HINT)


def import_tensorrt(device: torch.device | None = None) -> ModuleType:
    """Imports tensorrt after checking CUDA; raises BackendUnavailable with the reason otherwise."""
    reason = tensorrt_unavailable_reason(device)
    if reason is not None:
        raise BackendUnavailable(f"backend 'tensorrt': {reason}")
    import tensorrt

    major = int(tensorrt.__version__.split(".")[0])
    if major < 10:
        raise BackendUnavailable(f"backend 'tensorrt' needs TensorRT >= 10, found {tensorrt.__version__}")
    return tensorrt


def has_fp16_flag(trt_module: ModuleType) -> bool:
    """TensorRT 10 has BuilderFlag.FP16 (weak typing); TensorRT 11 removed it (strongly typed networks only)."""
    return hasattr(trt_module.BuilderFlag, "FP16")


def object_profile(
    network: STCN, part: str, padded_hw: tuple[int, int], max_objects: int, opt_objects: int = 2
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Input name -> (min, opt, max) shapes: objects 1..max_objects on the object inputs, fixed elsewhere."""
    opt = max(1, min(opt_objects, max_objects))
    out = {}
    for name, shape in input_shapes(network, part, padded_hw).items():
        if name in OBJECT_INPUTS[part]:
            out[name] = ((1, *shape[1:]), (opt, *shape[1:]), (max_objects, *shape[1:]))
        else:
            out[name] = (shape, shape, shape)
    return out


@dataclass(frozen=True)
class EngineKey(cache.CacheKey):
    """Everything a serialized engine depends on; a mismatch in any field means rebuild."""

    part: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    shapes: dict[str, list[list[int]]] = field(hash=False)


def engine_path(cache_dir: Path, onnx_path: Path, key: EngineKey) -> Path:
    return cache_dir / (
        f"{onnx_path.stem}-trt{key.tensorrt_version}-{cache.slug(key.gpu_name)}-sm{key.compute_capability}"
        f"-{key.digest()}.engine"
    )


def load_cached_engine(path: Path, key: EngineKey) -> bytes | None:
    """The engine's bytes when its sidecar says it was built from exactly `key`; None means rebuild."""
    if cache.lookup(path, key, "engine") is None:
        return None
    return path.read_bytes()


def write_engine(path: Path, key: EngineKey, data: bytes, build_seconds: float, onnx_path: Path) -> None:
    """Writes engine then sidecar, each atomically, so a crash never leaves a loadable mismatched pair."""
    cache.atomic_write(path, data)
    cache.record(
        path, key, onnx=onnx_path.name, build_seconds=round(build_seconds, 1),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), torch=torch.__version__,
    )


def trtexec_command(
    onnx_path: Path, engine_file: Path, shapes: dict[str, tuple[Shape, Shape, Shape]], precision: str,
    timing_cache: Path, *, strongly_typed: bool = False, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> str:
    """The `trtexec` line that builds the same engine (for users who build on the device by hand)."""
    args = [f"trtexec --onnx={onnx_path}", f"--saveEngine={engine_file}"]
    dynamic = {n: s for n, s in shapes.items() if s[0] != s[2]}
    if dynamic:
        for flag, i in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            args.append(flag + "=" + ",".join(f"{n}:{'x'.join(map(str, s[i]))}" for n, s in dynamic.items()))
    if precision == "fp16":
        args.append("--stronglyTyped" if strongly_typed else "--fp16")
    args.append(f"--timingCacheFile={timing_cache}")
    args.append(f"--memPoolSize=workspace:{workspace_bytes >> 20}M")
    return " ".join(args)


class EngineBuilder:
    """Builds (or finds cached) engines for ONNX files on one GPU with one TensorRT version."""

    def __init__(
        self, device: torch.device, cache_dir: Path, precision: str = "fp16",
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    ) -> None:
        import_tensorrt(device)  # checks CUDA before the import below creates anything
        import tensorrt as trt  # typed against the stubs from here on

        self.trt_version = trt.__version__
        self.device = device
        self.cache_dir = cache_dir
        if precision == "bf16":
            log.info("tensorrt: bf16 requested, building fp16 engines (TensorRT's fast path on Jetson and GeForce)")
            precision = "fp16"
        self.precision = precision
        self.workspace_bytes = workspace_bytes
        # TensorRT 11: no FP16 flag; fp16 must come from an fp16 ONNX in a strongly typed network.
        self.strongly_typed = precision == "fp16" and not has_fp16_flag(trt)
        self.gpu_name, self.compute_capability = cache.gpu_identity(device)
        self.logger = trt.Logger(trt.Logger.WARNING)

    @property
    def onnx_precision(self) -> str:
        return "fp16" if self.strongly_typed else "fp32"

    @property
    def timing_cache_path(self) -> Path:
        slug = cache.slug(self.gpu_name)
        return self.cache_dir / f"timing-trt{self.trt_version}-{slug}-sm{self.compute_capability}.cache"

    def key(self, exported: ExportedPart, shapes: dict[str, tuple[Shape, Shape, Shape]]) -> EngineKey:
        return EngineKey(
            exported.part, exported.sha256, self.trt_version, self.gpu_name, self.compute_capability,
            self.precision, {n: [list(s) for s in mmo] for n, mmo in shapes.items()},
        )

    def engine(self, exported: ExportedPart, shapes: dict[str, tuple[Shape, Shape, Shape]]) -> tuple[bytes, Path]:
        """Cached engine bytes for an export, building when missing, stale or foreign."""
        key = self.key(exported, shapes)
        path = engine_path(self.cache_dir, exported.path, key)
        data = load_cached_engine(path, key)
        if data is not None:
            log.info("tensorrt: cached engine %s", path.name)
            return data, path
        log.info("tensorrt: building %s engine for %s (%s); equivalent: %s", self.precision, exported.part,
                 exported.path.name, self.trtexec(exported, path, shapes))
        start = time.perf_counter()
        data = self.build(exported.path, shapes)
        write_engine(path, key, data, time.perf_counter() - start, exported.path)
        log.info("tensorrt: built %s in %.0f s", path.name, time.perf_counter() - start)
        return data, path

    def trtexec(self, exported: ExportedPart, path: Path, shapes: dict[str, tuple[Shape, Shape, Shape]]) -> str:
        return trtexec_command(exported.path, path, shapes, self.precision, self.timing_cache_path,
                               strongly_typed=self.strongly_typed, workspace_bytes=self.workspace_bytes)

    def build(self, onnx_path: Path, shapes: dict[str, tuple[Shape, Shape, Shape]]) -> bytes:
        import tensorrt as trt
        builder = trt.Builder(self.logger)
        flags = 0
        if self.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.precision == "fp16" and not self.strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        if config.add_optimization_profile(profile) < 0:
            raise RuntimeError(f"TensorRT rejected the optimisation profile {shapes} for {onnx_path}")
        timing_path = self.timing_cache_path
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(timing, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
        cache.atomic_write(timing_path, bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)


class _Engine:
    """One deserialized engine and its execution context, run on PyTorch tensors and PyTorch's stream."""

    def __init__(self, runtime: trt.Runtime, data: bytes, part: str, device: torch.device) -> None:
        import tensorrt as trt

        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize the {part} engine")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.part = part
        self.device = device
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        modes = {n: engine.get_tensor_mode(n) for n in names}
        self.inputs = [n for n in INPUT_NAMES[part] if modes.get(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in OUTPUT_NAMES[part] if modes.get(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != len(INPUT_NAMES[part]) or len(self.outputs) != len(OUTPUT_NAMES[part]):
            expected = f"{INPUT_NAMES[part]} -> {OUTPUT_NAMES[part]}"
            raise RuntimeError(f"{part} engine tensors {names} do not match {expected}")
        self.dtypes = {n: _torch_dtype(engine.get_tensor_dtype(n)) for n in names}

    def run(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        kept = []  # the caching allocator reuses memory in stream order, so these may be freed after enqueue
        for name, x in zip(self.inputs, inputs, strict=True):
            x = x.to(self.device, self.dtypes[name]).contiguous()
            kept.append(x)
            if not self.context.set_input_shape(name, tuple(x.shape)):
                raise ValueError(f"{self.part}: input {name} shape {tuple(x.shape)} is outside the engine's profile")
            self.context.set_tensor_address(name, x.data_ptr())
        outs = []
        for name in self.outputs:
            dims = self.context.get_tensor_shape(name)
            y = torch.empty([dims[i] for i in range(len(dims))], dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, y.data_ptr())
            outs.append(y)
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError(f"TensorRT execution of the {self.part} engine failed")
        return [y.float() for y in outs]


class TensorRTRunner(PartRunner):
    """NetworkRunner over three TensorRT engines at one padded size and 1..max_objects objects."""

    name = "tensorrt"

    def __init__(
        self, network: STCN, device: torch.device, precision: str, padded_hw: tuple[int, int],
        cache_dir: Path, max_objects: int = 8,
    ) -> None:
        builder = EngineBuilder(device, cache_dir, "fp32" if precision == "fp32" else "fp16")
        import tensorrt as trt
        self.device = device
        self.precision = builder.precision
        self.padded_hw = padded_hw
        self.max_objects = max_objects
        exports = export_all(network, padded_hw, cache_dir=cache_dir, precision=builder.onnx_precision)
        self._runtime = trt.Runtime(builder.logger)
        self.engines: dict[str, _Engine] = {}
        self.engine_paths: dict[str, Path] = {}
        for part, exported in exports.items():
            shapes = object_profile(network, part, padded_hw, max_objects)
            data, path = builder.engine(exported, shapes)
            self.engines[part] = _Engine(self._runtime, data, part, device)
            self.engine_paths[part] = path

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if not 1 <= objects <= self.max_objects:
            raise ValueError(f"tensorrt engines were built for 1..{self.max_objects} objects, got {objects}")
        return self.engines[part].run(*inputs)


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    import tensorrt as trt

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.BOOL: torch.bool,
    }
    if dtype not in table:
        raise TypeError(f"unsupported TensorRT tensor type {dtype}")
    return table[dtype]


__all__ = [
    "EngineBuilder", "EngineKey", "TensorRTRunner", "import_tensorrt", "object_profile", "tensorrt_unavailable_reason",
    "trtexec_command",
]
