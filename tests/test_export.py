"""ONNX export: each part in ONNX Runtime matches PyTorch fp32 on a real frame; the export cache is keyed
and self-checking. Exports are cached once per test session (they take seconds each on this CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edge_vos.backends.cache import file_hash, weights_hash
from edge_vos.backends.export import ExportKey, export_all, export_part
from edge_vos.backends.onnxruntime_backend import OnnxRuntimeRunner
from edge_vos.backends.parts import (
    DECODER_REGION_PARTS,
    INPUT_NAMES,
    OBJECT_INPUTS,
    OUTPUT_NAMES,
    REGION_PARTS,
    SPATIAL_SCALES,
    make_part,
)
from edge_vos.model import random_network
from edge_vos.model.preprocess import frame_geometry, image_to_tensor, masks_to_tensor

from .conftest import DAVIS

# 854x480 DAVIS frames at a 240 short side: padded working size 240x432 (as the tracker computes it).
INPUT_HW = (480, 854)
WORK_HW = frame_geometry(*INPUT_HW, 240).padded_hw
REL_TOL = 1e-4


@pytest.fixture(scope="session")
def engines_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export cache per test session, shared by the backend test modules (same path in each)."""
    path = tmp_path_factory.getbasetemp() / "edge-vos-engines"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def exports(r18_network, engines_dir):
    return export_all(r18_network, WORK_HW, cache_dir=engines_dir)


def real_frame_and_mask() -> tuple[np.ndarray, np.ndarray]:
    """A DAVIS frame and its object mask when the data is present, else a generated textured image."""
    seq = DAVIS / "JPEGImages" / "480p" / "blackswan"
    if seq.is_dir():
        from edge_vos.data.davis import read_image, read_mask

        image = read_image(sorted(seq.glob("*.jpg"))[0])
        mask = read_mask(DAVIS / "Annotations" / "480p" / "blackswan" / "00000.png") > 0
        return image, mask
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: INPUT_HW[0], : INPUT_HW[1]]
    image = np.stack([(xx * 0.3) % 255, (yy * 0.5) % 255, rng.integers(0, 255, INPUT_HW)], -1).astype(np.uint8)
    mask = (yy - 240) ** 2 + (xx - 400) ** 2 < 100**2
    return image, mask


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max absolute error relative to the reference's largest magnitude."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def real_inputs(r18_network):
    image, mask = real_frame_and_mask()
    geometry = frame_geometry(*image.shape[:2], 240)
    assert geometry.padded_hw == WORK_HW
    image_t = image_to_tensor(image, geometry)
    obj = torch.from_numpy(mask)[None, None].float()
    masks = masks_to_tensor(torch.cat([obj, 1 - obj]), geometry)  # two objects: the swan and the rest
    others = masks.sum(0, keepdim=True) - masks
    with torch.no_grad():
        key, qv, f16, f8, f4 = r18_network.encode_key(image_t)
    return {"image": image_t, "masks": masks, "others": others, "qv": qv, "f16": f16, "f8": f8, "f4": f4}


def test_exports_have_the_object_axis_only_where_it_applies(exports) -> None:
    for part, exported in exports.items():
        model = onnx.load(str(exported.path))
        inputs = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
        assert list(inputs) == list(INPUT_NAMES[part])
        assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES[part])
        for name, dims in inputs.items():
            symbolic = bool(dims[0].dim_param)
            assert symbolic == (name in OBJECT_INPUTS[part]), (part, name)
            assert all(d.dim_value > 0 for d in dims[1:]), (part, name)


def test_each_part_in_onnxruntime_matches_pytorch_fp32_on_a_real_frame(r18_network, engines_dir, real_inputs) -> None:
    x = real_inputs
    runner = OnnxRuntimeRunner(r18_network, torch.device("cpu"), "fp32", WORK_HW, engines_dir)
    parts = {p: make_part(r18_network, p) for p in ("key_encoder", "value_encoder", "decoder")}
    with torch.no_grad():
        ref_key = parts["key_encoder"](x["image"])
        ref_value = parts["value_encoder"](x["image"], x["f16"], x["masks"], x["others"])
        readout = ref_value.flip(0)  # a realistic readout: memory values of the two objects
        ref_logits = r18_network.decode(
            readout, x["qv"].expand(2, -1, -1, -1), x["f8"].expand(2, -1, -1, -1), x["f4"].expand(2, -1, -1, -1)
        )
    for name, got, ref in zip(OUTPUT_NAMES["key_encoder"], runner.encode_key(x["image"]), ref_key, strict=True):
        assert rel_err(got, ref) < REL_TOL, name
    assert rel_err(runner.encode_value(x["image"], x["f16"], x["masks"], x["others"]), ref_value) < REL_TOL
    # Against STCN.decode with expanded inputs: also checks the batch-1 skip branch rewrite.
    logits = runner.decode(readout, x["qv"], x["f8"], x["f4"])
    assert logits.shape == (2, 1, *WORK_HW)
    assert rel_err(logits, ref_logits) < REL_TOL
    # One object and more objects than at export time go through the same dynamic axis.
    assert rel_err(runner.decode(readout[:1], x["qv"], x["f8"], x["f4"]), ref_logits[:1]) < REL_TOL
    many = runner.encode_value(x["image"], x["f16"], x["masks"].repeat(3, 1, 1, 1), x["others"].repeat(3, 1, 1, 1))
    assert many.shape[0] == 6 and rel_err(many[4:], ref_value) < REL_TOL


def test_export_cache_hits_and_sidecar_says_what_it_was_built_from(r18_network, exports, engines_dir) -> None:
    exported = exports["decoder"]
    meta = json.loads(exported.path.with_suffix(".json").read_text())
    assert meta["key"]["arch"] == "stcn-r18" and meta["key"]["opset"] == exported.key.opset
    assert [meta["key"]["height"], meta["key"]["width"]] == list(WORK_HW)
    assert meta["key"]["weights_sha256"] == weights_hash(r18_network)
    mtime = exported.path.stat().st_mtime_ns
    again = export_part(r18_network, "decoder", WORK_HW, cache_dir=engines_dir)
    assert again.path == exported.path and exported.path.stat().st_mtime_ns == mtime


def test_export_key_changes_with_weights_resolution_and_opset(r18_network) -> None:
    h = weights_hash(r18_network)
    other = random_network("stcn-r18", seed=1)  # r18_network is seed 0
    assert weights_hash(other) != h
    base = ExportKey("decoder", "stcn-r18", h, 240, 432, 18, "fp32")
    variants = [
        ExportKey("decoder", "stcn-r18", weights_hash(other), 240, 432, 18, "fp32"),
        ExportKey("decoder", "stcn-r18", h, 480, 864, 18, "fp32"),
        ExportKey("decoder", "stcn-r18", h, 240, 432, 17, "fp32"),
        ExportKey("decoder", "stcn-r50", h, 240, 432, 18, "fp32"),
    ]
    assert len({base.filename(), *(v.filename() for v in variants)}) == 5


def _fake_exporter(calls: list[str]):
    """Stands in for the (slow) exporter in cache tests: writes a tiny valid ONNX and counts calls."""

    def fake(network, part, padded_hw, opset, precision, path: Path) -> str:
        calls.append(part)
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
        onnx.save(onnx.helper.make_model(graph), str(path))
        return "fake"

    return fake


def test_a_tampered_or_stale_export_is_re_exported(monkeypatch, tmp_path) -> None:
    import edge_vos.backends.export as export

    calls: list[str] = []
    monkeypatch.setattr(export, "_export", _fake_exporter(calls))
    net = random_network("stcn-r18-lite", seed=1).eval()
    first = export_part(net, "decoder", (32, 32), cache_dir=tmp_path)
    assert export_part(net, "decoder", (32, 32), cache_dir=tmp_path).path == first.path and calls == ["decoder"]
    with open(first.path, "ab") as f:  # a partial or edited file: its hash no longer matches the sidecar
        f.write(b"\0")
    second = export_part(net, "decoder", (32, 32), cache_dir=tmp_path)
    assert calls == ["decoder"] * 2 and second.sha256 == file_hash(second.path)
    first.path.with_suffix(".json").write_text("{not json")
    export_part(net, "decoder", (32, 32), cache_dir=tmp_path)
    assert len(calls) == 3
    with torch.no_grad():  # new weights: a new cache entry, the old one is left alone
        next(net.parameters()).add_(1.0)
    third = export_part(net, "decoder", (32, 32), cache_dir=tmp_path)
    assert third.path != first.path and len(calls) == 4 and first.path.is_file()


def test_the_region_decoder_in_onnxruntime_decodes_crops_of_any_size(r18_network, engines_dir, real_inputs) -> None:
    """Both region parts exported with the other parts, with free spatial axes: crops of several sizes (one
    cell, in the frame's corner, the smallest), each against PyTorch's decoder on the same crop; and terms
    computed over a larger region, then cut to the crop, against PyTorch's on the same terms."""
    x = real_inputs
    runner = OnnxRuntimeRunner(r18_network, torch.device("cpu"), "fp32", WORK_HW, engines_dir)
    assert runner.decodes_regions and all(p in runner.sessions for p in DECODER_REGION_PARTS)
    decoder = make_part(r18_network, "decoder")
    torch.manual_seed(1)
    for (r0, r1, c0, c1), objects in (((2, 9, 3, 14), 2), ((0, 4, 20, 27), 1), ((14, 15, 26, 27), 1)):
        readout = torch.randn(objects, r18_network.value_dim, r1 - r0, c1 - c0)
        frame = (x["qv"][..., r0:r1, c0:c1], x["f8"][..., 2 * r0:2 * r1, 2 * c0:2 * c1],
                 x["f4"][..., 4 * r0:4 * r1, 4 * c0:4 * c1])
        logits = runner.decode_region(readout, *runner.decode_frame_terms(*frame))
        assert logits.shape == (objects, 1, 16 * (r1 - r0), 16 * (c1 - c0))
        with torch.no_grad():
            assert rel_err(logits, decoder(readout, *frame)) < REL_TOL
    whole = runner.decode_frame_terms(x["qv"], x["f8"], x["f4"])
    cut = tuple(t[..., s * 3:s * 6, s * 4:s * 9] for t, s in zip(whole, (1, 1, 2, 4), strict=True))
    readout = torch.randn(2, r18_network.value_dim, 3, 5)
    with torch.no_grad():
        eager_terms = r18_network.decode_frame_terms(x["qv"], x["f8"], x["f4"])
        for a, b in zip(whole, eager_terms, strict=True):
            assert a.shape == b.shape and rel_err(a, b) < REL_TOL
        assert rel_err(runner.decode_region(readout, *cut), r18_network.decode_with_terms(readout, *cut)) < REL_TOL
    for part in (p for p in REGION_PARTS if p in SPATIAL_SCALES):  # the value encoder's global part is whole
        dims = {i.name: i.shape for i in runner.sessions[part].session.get_inputs()}
        assert all(isinstance(d, str) for name in dims for d in dims[name][2:]), dims


def test_the_region_decoder_from_the_torchscript_fallback_sizes_its_output(r18_network, tmp_path, monkeypatch,
                                                                            real_inputs) -> None:
    """When dynamo fails the TorchScript exporter names the free axes; the runner must read the output's size
    from them, not take it for the object axis."""
    import edge_vos.backends.export as export

    def refuse(*args, **kwargs):
        raise RuntimeError("dynamo refused")

    monkeypatch.setattr(export, "_export_dynamo", refuse)
    runner = OnnxRuntimeRunner(r18_network, torch.device("cpu"), "fp32", WORK_HW, tmp_path)
    x = real_inputs
    readout = torch.randn(2, r18_network.value_dim, 3, 5)
    frame = (x["qv"][..., 1:4, 2:7], x["f8"][..., 2:8, 4:14], x["f4"][..., 4:16, 8:28])
    terms = runner.decode_frame_terms(*frame)
    assert [tuple(t.shape[-2:]) for t in terms] == [(3, 5), (3, 5), (6, 10), (12, 20)]
    logits = runner.decode_region(readout, *terms)
    assert logits.shape == (2, 1, 48, 80)
    with torch.no_grad():
        assert rel_err(logits, make_part(r18_network, "decoder")(readout, *frame)) < REL_TOL


def test_the_value_encoder_in_onnxruntime_runs_on_crops_and_finishes_whole_maps(r18_network, engines_dir,
                                                                                real_inputs) -> None:
    """The value encoder's local part exported with free spatial axes (crops of several sizes, down to one cell
    in a corner) and its global part at the working size, each against PyTorch; together the whole encoder."""
    x = real_inputs
    runner = OnnxRuntimeRunner(r18_network, torch.device("cpu"), "fp32", WORK_HW, engines_dir)
    assert runner.encodes_regions and "value_encoder" not in runner.sessions  # the two parts stand for it
    image, f16, masks = x["image"], x["f16"], x["masks"]
    others = masks.sum(dim=0, keepdim=True) - masks
    with torch.no_grad():
        for r0, r1, c0, c1 in ((2, 9, 3, 14), (0, 4, 20, 27), (14, 15, 26, 27)):
            crop = (image[..., 16 * r0:16 * r1, 16 * c0:16 * c1], f16[..., r0:r1, c0:c1],
                    masks[..., 16 * r0:16 * r1, 16 * c0:16 * c1], others[..., 16 * r0:16 * r1, 16 * c0:16 * c1])
            local = runner.encode_value_local(*crop)
            assert local.shape == (2, r18_network.value_dim, r1 - r0, c1 - c0)
            assert rel_err(local, r18_network.encode_value_local(*crop)) < REL_TOL
        local = runner.encode_value_local(image, f16, masks, others)
        values = runner.encode_value_global(local)
        assert rel_err(values, r18_network.encode_value_global(local)) < REL_TOL
        assert rel_err(values, r18_network.encode_value(image, f16, masks, others)) < REL_TOL
