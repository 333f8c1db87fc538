"""`create_runner`, the one entry point the tracker uses: a NetworkRunner for a backend name from
TrackerConfig.backend (backends.names.BACKEND_NAMES), and what `auto` and `precision: auto` resolve to here."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from edge_vos.backends.base import BackendUnavailable, NetworkRunner, module_installed
from edge_vos.backends.cache import default_cache_dir
from edge_vos.backends.names import BACKEND_NAMES
from edge_vos.backends.parts import PART_NAMES
from edge_vos.backends.tensorrt_backend import tensorrt_unavailable_reason
from edge_vos.backends.torch_backend import TorchRunner, cpu_supports_bf16
from edge_vos.backends.winograd import nnpack_unavailable_reason, with_winograd_decoder
from edge_vos.model.network import STCN

log = logging.getLogger(__name__)

# The fastest fp32 CPU backend for the encoders and decoder, measured with tools/bench_backends.py
# (docs/benchmarks.md, section "backends"; stcn-r18, 2 threads, 240x432 and 480x864). A documented
# decision rather than a start-up micro-benchmark: timing three parts on every start costs seconds and is
# noisy on a loaded CPU. With precision bf16 on a CPU with native bf16 kernels, eager torch in bf16 is used
# instead (fastest of all, at bf16 accuracy, which only the user may choose).
CPU_FP32_DEFAULT = "onnxruntime"
# The parts the split runner (backend auto on a CPU) runs in ONNX Runtime fp32; the decoder runs in eager
# PyTorch: as a bf16 copy on a CPU with native bf16 kernels (backends/torch_backend.py), else in fp32 with
# its 3x3 convolutions through NNPACK's Winograd transform (backends/winograd.py). Both encoders are
# EfficientNet trunks whose separate batch-norm and ReLU6 passes ONNX Runtime folds away; the decoder's
# dense 3x3 convolutions gain most from bf16 or from Winograd. Measured: docs/benchmarks.md, "step-notes"
# and "objects-notes".
SPLIT_ORT_PARTS = ("key_encoder", "value_encoder")
# On an fp32 CPU, the decoder's calls whose /16 map holds at least this many cells run eager with Winograd
# convolutions, smaller ones (an object's small crop) in ONNX Runtime: NNPACK's fixed cost per convolution and
# eager PyTorch's per-operation cost favour ONNX Runtime on small maps (docs/benchmarks.md, "objects-notes").
MIN_WINOGRAD_DECODER_CELLS = 144


def resolve_precision(device: torch.device, precision: str) -> str:
    """The precision the network and memory really run in on `device` for a configured one.

    `auto`: fp16 on CUDA; bf16 on a CPU with native bf16 kernels (`cpu_supports_bf16`, the one check of
    that); fp32 elsewhere. `bf16` on a CPU without those kernels is fp32: emulated bf16 is slower than fp32.
    Any other value passes through unchanged (the runners treat `fp16` on a CPU as fp32).
    """
    if device.type == "cuda":
        return "fp16" if precision == "auto" else precision
    if precision in ("auto", "bf16"):
        if cpu_supports_bf16():
            return "bf16"
        if precision == "bf16":
            log.warning("this CPU has no native bf16 kernels: running fp32 instead of bf16")
        return "fp32"
    return precision


def choose_backend(device: torch.device, precision: str) -> tuple[str, str]:
    """The backend `auto` resolves to on this machine, and why (for the log)."""
    if device.type == "cuda":
        reason = tensorrt_unavailable_reason(device)
        if reason is None:
            return "tensorrt", "CUDA and TensorRT are usable"
        return "torch", f"CUDA device but TensorRT is not usable ({reason}); eager PyTorch on the GPU"
    if precision == "bf16" and cpu_supports_bf16():
        if module_installed("onnxruntime"):
            return "split", (
                "CPU with native bf16 kernels and precision bf16: key and value encoders in onnxruntime (fp32, "
                "batch norms folded), decoder in eager PyTorch bf16"
            )
        return "torch", "CPU with native bf16 kernels and precision bf16: eager PyTorch bf16 (encoders under autocast)"
    why = "no CUDA" if not torch.cuda.is_available() else f"device {device}"
    if precision == "bf16":
        why += ", this CPU has no native bf16 kernels"
    if CPU_FP32_DEFAULT == "onnxruntime" and not module_installed("onnxruntime"):
        return "torch", f"{why}; onnxruntime is not installed, so eager PyTorch (channels_last)"
    nnpack = nnpack_unavailable_reason()
    if precision == "fp32" and nnpack is None:
        return "split", (
            f"{why}; every part in onnxruntime (fp32), and the decoder's calls on maps of "
            f"{MIN_WINOGRAD_DECODER_CELLS}+ cells in eager PyTorch with NNPACK's Winograd convolutions"
        )
    if nnpack is not None:
        why += f"; {nnpack}"
    return CPU_FP32_DEFAULT, f"{why}; {CPU_FP32_DEFAULT} is the fastest fp32 CPU backend (docs/benchmarks.md)"


def create_runner(
    network: STCN,
    backend: str,
    device: torch.device,
    precision: str,
    padded_hw: tuple[int, int],
    *,
    max_objects: int = 8,
    cache_dir: str | Path | None = None,
) -> NetworkRunner:
    """Builds the runner for a backend name at a fixed padded input size (exporting/building if needed).

    Raises BackendUnavailable with the reason when the backend cannot run here (e.g. `tensorrt` without
    CUDA: checked before any TensorRT object exists). `auto` never raises for a missing accelerator.
    """
    if backend not in BACKEND_NAMES:
        raise BackendUnavailable(f"unknown backend {backend!r}; expected one of {list(BACKEND_NAMES)}")
    precision = resolve_precision(device, precision)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if backend == "auto":
        backend, why = choose_backend(device, precision)
        log.info("backend auto -> %s: %s", backend, why)
        if backend == "tensorrt":
            try:
                return _create(network, backend, device, precision, padded_hw, max_objects, cache)
            except (BackendUnavailable, ImportError, OSError) as exc:  # e.g. TensorRT 8, missing libnvinfer
                log.warning("backend auto: TensorRT failed to start (%s); using eager PyTorch on %s", exc, device)
                backend = "torch"
    return _create(network, backend, device, precision, padded_hw, max_objects, cache)


def _create(
    network: STCN, backend: str, device: torch.device, precision: str, padded_hw: tuple[int, int],
    max_objects: int, cache: Path,
) -> NetworkRunner:
    if backend == "split":  # only `auto` picks it (choose_backend)
        from edge_vos.backends.onnxruntime_backend import OnnxRuntimeRunner
        from edge_vos.backends.split import SplitRunner

        if precision == "bf16":
            torch_runner = TorchRunner(network, device, precision)
            ort_runner = OnnxRuntimeRunner(network, device, "fp32", padded_hw, cache, parts=SPLIT_ORT_PARTS)
            return SplitRunner({part: ort_runner if part in SPLIT_ORT_PARTS else torch_runner for part in PART_NAMES})
        # fp32: every part in ONNX Runtime, and the decoder's calls on large maps eager with Winograd
        # convolutions (NNPACK takes contiguous NCHW tensors)
        ort_runner = OnnxRuntimeRunner(network, device, "fp32", padded_hw, cache)
        winograd = TorchRunner(with_winograd_decoder(network), device, "fp32", channels_last=False)
        return SplitRunner({part: ort_runner for part in PART_NAMES}, large_decoder=winograd,
                           min_large_cells=MIN_WINOGRAD_DECODER_CELLS)
    if backend == "torch":
        return TorchRunner(network, device, precision)
    if backend == "onnxruntime":
        from edge_vos.backends.onnxruntime_backend import OnnxRuntimeRunner

        return OnnxRuntimeRunner(network, device, precision, padded_hw, cache)
    if backend == "tensorrt":
        from edge_vos.backends.tensorrt_backend import TensorRTRunner

        return TensorRTRunner(network, device, precision, padded_hw, cache, max_objects=max_objects)
    from edge_vos.backends.torch_tensorrt_backend import TorchTensorRTRunner

    return TorchTensorRTRunner(network, device, precision, padded_hw, cache, max_objects=max_objects)


__all__ = [
    "BACKEND_NAMES", "CPU_FP32_DEFAULT", "BackendUnavailable", "NetworkRunner", "TorchRunner", "choose_backend",
    "SPLIT_ORT_PARTS", "create_runner", "resolve_precision",
]
