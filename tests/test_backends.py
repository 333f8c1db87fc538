"""Backends: clean failure without CUDA, `auto` selection, engine cache rules, runner equivalence.

GPU-only tests (TensorRT and torch-tensorrt parity) skip with the reason when CUDA or the package is absent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from edge_vos.backends import BackendUnavailable, choose_backend, create_runner
from edge_vos.backends.parts import make_part
from edge_vos.backends.tensorrt_backend import (
    EngineKey,
    engine_path,
    load_cached_engine,
    object_profile,
    tensorrt_unavailable_reason,
    trtexec_command,
    write_engine,
)
from edge_vos.backends.torch_backend import TorchRunner, cpu_supports_bf16
from edge_vos.backends.torch_tensorrt_backend import torch_tensorrt_unavailable_reason
from edge_vos.backends.winograd import nnpack_unavailable_reason

HW = (64, 96)
EXPORTED_HW = (240, 432)  # the size tests/test_export.py exports: the session cache already holds it
CPU = torch.device("cpu")
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "edge-vos-engines"
    path.mkdir(exist_ok=True)
    return path


def _features(network, hw=HW, objects=3):
    torch.manual_seed(0)
    image = torch.randn(1, 3, *hw)
    with torch.no_grad():
        key, qv, f16, f8, f4 = network.encode_key(image)
    masks = torch.rand(objects, 1, *hw)
    readout = torch.randn(objects, network.value_dim, hw[0] // 16, hw[1] // 16)
    return image, qv, f16, f8, f4, masks, readout


@pytest.mark.skipif(not NO_CUDA, reason="checks the behaviour on machines without CUDA")
def test_tensorrt_without_cuda_fails_cleanly_before_any_tensorrt_object(r18_network) -> None:
    before = "tensorrt" in sys.modules
    with pytest.raises(BackendUnavailable, match="CUDA is not available"):
        create_runner(r18_network, "tensorrt", CPU, "fp16", HW)
    with pytest.raises(BackendUnavailable, match="CUDA is not available"):
        create_runner(r18_network, "torch_tensorrt", CPU, "fp16", HW)
    assert ("tensorrt" in sys.modules) == before  # never even imported
    assert "CUDA" in (tensorrt_unavailable_reason(CPU) or "")
    assert "CUDA" in (torch_tensorrt_unavailable_reason(CPU) or "")


def test_unknown_backend_is_rejected(r18_network) -> None:
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        create_runner(r18_network, "openvino", CPU, "fp32", HW)


@pytest.mark.skipif(not NO_CUDA, reason="checks the CPU fallback")
def test_auto_falls_back_to_a_cpu_backend_and_logs_why(r18_network, engines_dir, caplog, monkeypatch) -> None:
    from edge_vos.backends import factory

    monkeypatch.setattr(factory, "nnpack_unavailable_reason", lambda: "no NNPACK (forced for the test)")
    with caplog.at_level(logging.INFO, logger="edge_vos.backends"):
        runner = create_runner(r18_network, "auto", CPU, "fp32", EXPORTED_HW, cache_dir=engines_dir)
    assert runner.name == "onnxruntime"
    assert runner.encode_key(torch.zeros(1, 3, *EXPORTED_HW))[0].shape == (1, 64, 15, 27)
    assert any("backend auto -> onnxruntime" in r.getMessage() and "no CUDA" in r.getMessage()
               and "forced for the test" in r.getMessage() for r in caplog.records)
    name, why = choose_backend(CPU, "bf16")
    assert name == ("split" if cpu_supports_bf16() else "onnxruntime") and why


@pytest.mark.skipif(not NO_CUDA, reason="checks the CPU choice")
@pytest.mark.skipif(nnpack_unavailable_reason() is not None, reason=f"NNPACK: {nnpack_unavailable_reason()}")
def test_auto_on_an_fp32_cpu_runs_the_decoder_through_winograd(r18_network, engines_dir) -> None:
    """fp32 CPU with NNPACK: every part in ONNX Runtime, the decoder's calls on large maps eager with Winograd
    convolutions; the same outputs as the network (within float rounding) either way, crops included."""
    from edge_vos.backends.factory import MIN_WINOGRAD_DECODER_CELLS

    name, why = choose_backend(CPU, "fp32")
    assert name == "split" and "Winograd" in why
    runner = create_runner(r18_network, "auto", CPU, "fp32", EXPORTED_HW, cache_dir=engines_dir)
    assert "decoder:onnxruntime" in runner.name and "cells: torch" in runner.name and runner.decodes_regions
    image, qv, f16, f8, f4, masks, readout = _features(r18_network, EXPORTED_HW)
    assert readout.shape[-2] * readout.shape[-1] >= MIN_WINOGRAD_DECODER_CELLS  # the large runner's call
    with torch.no_grad():
        expected = r18_network.decode(readout, qv, f8, f4)
        terms = r18_network.decode_frame_terms(qv[..., :3, :4], f8[..., :6, :8], f4[..., :12, :16])
        small = r18_network.decode_with_terms(readout[:1, :, :3, :4], *terms)
    torch.testing.assert_close(runner.decode(readout, qv, f8, f4), expected, rtol=1e-4, atol=1e-4)
    got_terms = runner.decode_frame_terms(qv[..., :3, :4], f8[..., :6, :8], f4[..., :12, :16])
    torch.testing.assert_close(runner.decode_region(readout[:1, :, :3, :4], *got_terms), small, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(nnpack_unavailable_reason() is not None, reason=f"NNPACK: {nnpack_unavailable_reason()}")
def test_winograd_decoder_computes_the_decoder_and_leaves_the_network_alone(r18_network) -> None:
    from edge_vos.backends.winograd import WinogradConv2d, with_winograd_decoder

    winograd = with_winograd_decoder(r18_network)
    converted = [m for m in winograd.decoder.modules() if isinstance(m, WinogradConv2d)]
    assert converted and not any(isinstance(m, WinogradConv2d) for m in r18_network.modules())
    image, qv, f16, f8, f4, masks, readout = _features(r18_network)
    with torch.no_grad():
        expected = r18_network.decode(readout, qv, f8, f4)
        got = winograd.decode(readout, qv, f8, f4)
        terms = winograd.decode_frame_terms(qv, f8, f4)
        by_terms = winograd.decode_with_terms(readout, *terms)
    assert not torch.equal(got, expected)  # another algorithm, not the same call
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(by_terms, expected, rtol=1e-4, atol=1e-4)


def test_torch_runner_matches_the_network_and_broadcasts_batch_one_inputs(r18_network) -> None:
    image, qv, f16, f8, f4, masks, readout = _features(r18_network)
    runner = TorchRunner(r18_network, CPU, "fp32")
    n = masks.shape[0]
    with torch.no_grad():
        ref_key = r18_network.encode_key(image)
        ref_value = r18_network.encode_value(image.expand(n, -1, -1, -1), f16.expand(n, -1, -1, -1), masks, 1 - masks)
        ref_logits = r18_network.decode(readout, *(x.expand(n, -1, -1, -1) for x in (qv, f8, f4)))
    for got, ref in zip(runner.encode_key(image), ref_key, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(runner.encode_value(image, f16, masks, 1 - masks), ref_value, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(runner.decode(readout, qv, f8, f4), ref_logits, rtol=1e-4, atol=1e-4)
    out = runner.decode(readout, qv, f8, f4)
    out.add_(1)  # outputs are ordinary tensors the tracker may write into


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16 kernels")
def test_torch_bf16_stays_close_to_fp32_and_leaves_the_callers_network_float32(r18_network) -> None:
    """The decoder runs as a bf16 copy (whole frames and crops alike); the network given stays float32 for the
    other runners that share it."""
    image, qv, f16, f8, f4, masks, readout = _features(r18_network)
    fp32_runner = TorchRunner(r18_network, CPU, "fp32")
    bf16_runner = TorchRunner(r18_network, CPU, "bf16")
    assert all(p.dtype == torch.float32 for p in r18_network.parameters())
    fp32, bf16 = fp32_runner.decode(readout, qv, f8, f4), bf16_runner.decode(readout, qv, f8, f4)
    assert bf16.dtype == torch.float32
    assert float((bf16 - fp32).abs().max() / fp32.abs().max()) < 0.05
    region = [runner.decode_region(readout, *runner.decode_frame_terms(qv, f8, f4))
              for runner in (fp32_runner, bf16_runner)]
    assert region[1].dtype == torch.float32
    assert float((region[1] - region[0]).abs().max() / region[0].abs().max()) < 0.05


def test_object_profile_spans_one_to_max_objects_on_object_inputs_only(r18_network) -> None:
    shapes = object_profile(r18_network, "value_encoder", HW, max_objects=8)
    assert shapes["masks"] == ((1, 1, 64, 96), (2, 1, 64, 96), (8, 1, 64, 96))
    assert shapes["image"][0] == shapes["image"][2] == (1, 3, 64, 96)
    assert object_profile(r18_network, "decoder", HW, max_objects=1)["readout"][1][0] == 1


def test_trtexec_command_line_matches_the_profile_and_precision(r18_network) -> None:
    shapes = object_profile(r18_network, "decoder", HW, max_objects=4)
    line = trtexec_command(Path("d.onnx"), Path("d.engine"), shapes, "fp16", Path("t.cache"))
    assert line.startswith("trtexec --onnx=d.onnx --saveEngine=d.engine")
    assert "--minShapes=readout:1x512x4x6" in line and "--maxShapes=readout:4x512x4x6" in line
    assert "--fp16" in line and "--timingCacheFile=t.cache" in line and "query_value" not in line
    typed = trtexec_command(Path("d.onnx"), Path("d.engine"), shapes, "fp16", Path("t.cache"), strongly_typed=True)
    assert "--stronglyTyped" in typed and "--fp16" not in typed


def _key(**changes) -> EngineKey:
    fields = dict(part="decoder", onnx_sha256="ab" * 32, tensorrt_version="10.3.0", gpu_name="Orin",
                  compute_capability="8.7", precision="fp16", shapes={"readout": [[1, 512, 4, 6]] * 3})
    fields.update(changes)
    return EngineKey(**fields)  # type: ignore[arg-type]


def test_engine_cache_loads_only_an_engine_built_from_the_same_key(tmp_path) -> None:
    key = _key()
    path = engine_path(tmp_path, Path("stcn-r18-decoder.onnx"), key)
    assert load_cached_engine(path, key) is None  # missing
    write_engine(path, key, b"engine-bytes", 1.0, Path("stcn-r18-decoder.onnx"))
    assert load_cached_engine(path, key) == b"engine-bytes"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["key"] == asdict(key) and meta["sha256"] == hashlib.sha256(b"engine-bytes").hexdigest()
    # Foreign or stale: another TensorRT version, GPU, precision, ONNX or profile is never loaded.
    for other in (_key(tensorrt_version="10.13.0"), _key(gpu_name="RTX 4090", compute_capability="8.9"),
                  _key(precision="fp32"), _key(onnx_sha256="cd" * 32), _key(shapes={"readout": [[1, 512, 8, 12]] * 3})):
        assert engine_path(tmp_path, Path("stcn-r18-decoder.onnx"), other) != path
        assert load_cached_engine(path, other) is None
    path.write_bytes(b"engine-bytez")  # corrupted or partially written
    assert load_cached_engine(path, key) is None
    path.with_suffix(".json").unlink()  # no sidecar: unknown provenance
    assert load_cached_engine(path, key) is None


# ---- GPU only -------------------------------------------------------------------------------------


def _gpu_reason(reason: str | None) -> str:
    return reason or ""


@pytest.mark.gpu
@pytest.mark.skipif(tensorrt_unavailable_reason() is not None, reason=_gpu_reason(tensorrt_unavailable_reason()))
def test_tensorrt_engines_match_pytorch_and_are_cached(r18_network, engines_dir) -> None:
    cuda = torch.device("cuda")
    image, qv, f16, f8, f4, masks, readout = (x.to(cuda) for x in _features(r18_network))
    trt32 = create_runner(r18_network, "tensorrt", cuda, "fp32", HW, max_objects=4, cache_dir=engines_dir)
    ref = make_part(copy.deepcopy(r18_network), "decoder").to(cuda)  # the shared network stays on the CPU
    with torch.no_grad():
        expected = ref(readout, qv, f8, f4)
    torch.testing.assert_close(trt32.decode(readout, qv, f8, f4), expected, rtol=1e-3, atol=1e-3)
    trt16 = create_runner(r18_network, "tensorrt", cuda, "fp16", HW, max_objects=4, cache_dir=engines_dir)
    got = trt16.decode(readout, qv, f8, f4)
    assert float((got - expected).abs().max() / expected.abs().max()) < 2e-2
    paths = trt16.engine_paths  # type: ignore[attr-defined]
    mtimes = {p: p.stat().st_mtime_ns for p in paths.values()}
    again = create_runner(r18_network, "tensorrt", cuda, "fp16", HW, max_objects=4, cache_dir=engines_dir)
    assert {p: p.stat().st_mtime_ns for p in again.engine_paths.values()} == mtimes  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="1..4 objects"):
        trt16.decode(readout.repeat(2, 1, 1, 1), qv, f8, f4)


@pytest.mark.gpu
@pytest.mark.skipif(
    torch_tensorrt_unavailable_reason() is not None, reason=_gpu_reason(torch_tensorrt_unavailable_reason())
)
def test_torch_tensorrt_matches_pytorch(r18_network, engines_dir) -> None:
    cuda = torch.device("cuda")
    image, qv, f16, f8, f4, masks, readout = (x.to(cuda) for x in _features(r18_network))
    runner = create_runner(r18_network, "torch_tensorrt", cuda, "fp16", HW, max_objects=4, cache_dir=engines_dir)
    ref = make_part(copy.deepcopy(r18_network), "decoder").to(cuda)  # the shared network stays on the CPU
    with torch.no_grad():
        expected = ref(readout, qv, f8, f4)
    got = runner.decode(readout, qv, f8, f4)
    assert float((got - expected).abs().max() / expected.abs().max()) < 2e-2


def test_build_engines_cli_exports_and_prints_trtexec_lines(monkeypatch, tmp_path, capsys) -> None:
    import argparse

    import edge_vos.backends.export as export
    from edge_vos import engines_cli as cli

    from .test_export import _fake_exporter

    calls: list[str] = []
    monkeypatch.setattr(export, "_export", _fake_exporter(calls))
    config = tmp_path / "service.yaml"
    config.write_text("tracker:\n  resolution: 240\n  max_objects: 3\n  precision: fp16\n  backend: auto\n")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--random-network", "--engines", str(tmp_path / "eng")])
    assert cli.main(args) == 0
    assert calls == ["key_encoder", "value_encoder", "decoder"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trtexec")]
    assert len(lines) == 3 and all("--fp16" in line for line in lines)
    assert "--maxShapes=masks:3x1x240x432,others:3x1x240x432" in lines[1]
    if NO_CUDA:  # an explicit TensorRT request fails with the reason, after exporting (cache hit now)
        args = parser.parse_args(["--config", str(config), "--random-network", "--engines", str(tmp_path / "eng"),
                                  "--backend", "tensorrt"])
        assert cli.main(args) == 1 and len(calls) == 3


def test_fp16_export_for_strongly_typed_tensorrt_keeps_fp32_inputs_and_outputs(tmp_path) -> None:
    import onnx

    from edge_vos.backends.export import export_part
    from edge_vos.model import random_network

    net = random_network("stcn-r18-lite").eval()
    exported = export_part(net, "decoder", (32, 48), cache_dir=tmp_path, precision="fp16")
    model = onnx.load(str(exported.path))
    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == fp32 for v in [*model.graph.input, *model.graph.output])
    weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == fp16 for t in weights)


@pytest.mark.skipif(not NO_CUDA, reason="needs TensorRT to fail to start")
def test_auto_falls_back_to_torch_when_tensorrt_fails_to_start(r18_network, monkeypatch, caplog) -> None:
    import edge_vos.backends.factory as backends

    monkeypatch.setattr(backends, "choose_backend", lambda device, precision: ("tensorrt", "forced for the test"))
    with caplog.at_level(logging.WARNING, logger="edge_vos.backends"):
        runner = create_runner(r18_network, "auto", CPU, "fp16", HW)
    assert runner.name == "torch"
    assert any("TensorRT failed to start" in r.getMessage() for r in caplog.records)


def test_a_stub_only_tensorrt_directory_does_not_count_as_installed(tmp_path, monkeypatch) -> None:
    from edge_vos.backends.base import module_installed

    (tmp_path / "fake_trt_stub_pkg").mkdir()
    (tmp_path / "fake_trt_stub_pkg" / "__init__.pyi").write_text("x: int\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not module_installed("fake_trt_stub_pkg")
    assert module_installed("json") and not module_installed("surely_not_a_module_here")


@pytest.mark.parametrize("native_bf16", [True, False])
def test_precision_auto_is_bf16_only_on_cpus_with_native_bf16(monkeypatch, native_bf16: bool) -> None:
    import edge_vos.backends.factory as backends

    monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: native_bf16)
    cpu = torch.device("cpu")
    expected = "bf16" if native_bf16 else "fp32"
    assert backends.resolve_precision(cpu, "auto") == expected
    assert backends.resolve_precision(cpu, "bf16") == expected
    assert backends.resolve_precision(cpu, "fp32") == "fp32"
    assert backends.resolve_precision(torch.device("cuda"), "auto") == "fp16"


def test_the_tracker_runs_and_stores_memory_in_the_resolved_precision(monkeypatch) -> None:
    import edge_vos.backends.factory as backends
    from edge_vos.tracker import Tracker, TrackerConfig
    from edge_vos.tracker.config import ModelConfig

    monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: False)
    config = TrackerConfig(model=ModelConfig(arch="stcn-r18-lite", weights="random"), device="cpu", precision="auto")
    tracker = Tracker(config)
    assert tracker.precision == "fp32" and tracker.memory_dtype == torch.float32


def test_split_runner_delegates_each_part_and_matches_its_runners(r18_network, engines_dir) -> None:
    from edge_vos.backends.onnxruntime_backend import OnnxRuntimeRunner
    from edge_vos.backends.split import SplitRunner

    cpu = torch.device("cpu")
    hw = (64, 96)
    eager = TorchRunner(r18_network, cpu, "fp32")
    ort = OnnxRuntimeRunner(r18_network, cpu, "fp32", hw, engines_dir)
    split = SplitRunner({"key_encoder": ort, "value_encoder": eager, "decoder": eager})
    ort_key_only = OnnxRuntimeRunner(r18_network, cpu, "fp32", hw, engines_dir, parts=("key_encoder",))
    assert not ort_key_only.encodes_regions and not ort_key_only.decodes_regions
    assert split.name == "key_encoder:onnxruntime+value_encoder:torch+decoder:torch"
    image = torch.randn(1, 3, *hw)
    for a, b in zip(split.encode_key(image), ort.encode_key(image), strict=True):
        assert torch.equal(a, b)
    key, query_value, f16, f8, f4 = split.encode_key(image)
    masks = torch.rand(2, 1, *hw)
    expected = eager.encode_value(image, f16, masks, 1 - masks)
    assert torch.equal(split.encode_value(image, f16, masks, 1 - masks), expected)
    # Crops go to the decoder's runner (eager PyTorch decodes any size).
    readout = torch.randn(1, r18_network.value_dim, 2, 3)
    frame = (query_value[..., 1:3, 2:5], f8[..., 2:6, 4:10], f4[..., 4:12, 8:20])
    terms = eager.decode_frame_terms(*frame)
    assert split.decodes_regions
    assert all(torch.equal(a, b) for a, b in zip(split.decode_frame_terms(*frame), terms, strict=True))
    assert torch.equal(split.decode_region(readout, *terms), eager.decode_region(readout, *terms))
    # Value crops go to the value encoder's runner (here eager PyTorch; ONNX Runtime was built without them).
    assert split.encodes_regions and not SplitRunner({"key_encoder": eager, "value_encoder": ort_key_only,
                                                      "decoder": eager}).encodes_regions
    crop = (image[..., 16:48, 32:80], f16[..., 1:3, 2:5], masks[..., 16:48, 32:80], (1 - masks)[..., 16:48, 32:80])
    assert torch.equal(split.encode_value_local(*crop), eager.encode_value_local(*crop))
    with pytest.raises(ValueError, match="no runner"):
        SplitRunner({"key_encoder": ort})


def test_auto_on_a_bf16_cpu_splits_the_parts(r18_network, engines_dir, monkeypatch) -> None:
    import edge_vos.backends.factory as backends

    monkeypatch.setattr(backends, "cpu_supports_bf16", lambda: True)
    runner = backends.create_runner(r18_network, "auto", torch.device("cpu"), "auto", (64, 96), cache_dir=engines_dir)
    assert runner.name == "key_encoder:onnxruntime+value_encoder:onnxruntime+decoder:torch"
