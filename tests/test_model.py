"""Network shapes, official STCN state-dict compatibility, checkpoint loading, pre-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_vos.model import CheckpointError, build_network, load_network, read_state_dict, save_network
from edge_vos.model.checkpoint import init_trunks_from_torchvision
from edge_vos.model.preprocess import frame_geometry, image_to_tensor, to_input_size, unpad

from .concat_reference import decode_by_concatenation, value_by_concatenation
from .conftest import SHARED, require_data

REFERENCE = SHARED / "reference" / "stcn_state_dict_keys.txt"


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(1)
    return build_network("stcn-r50").eval()


def _reference_shapes() -> dict[str, list[int]]:
    if not REFERENCE.is_file():
        require_data(REFERENCE, "official STCN's state-dict key list")
    shapes = {}
    for line in REFERENCE.read_text().splitlines():
        name, shape = line.split()
        shapes[name] = [int(d) for d in shape.strip("[]").split(",") if d]
    return shapes


def test_stcn_r50_state_dict_matches_official_exactly(r50) -> None:
    reference = _reference_shapes()
    mine = {k: list(v.shape) for k, v in r50.state_dict().items()}
    assert set(mine) - set(reference) == set(), "entries official STCN does not have"
    assert set(reference) - set(mine) == set(), "official entries we lack"
    assert {k: v for k, v in mine.items() if reference[k] != v} == {}
    assert list(mine) == list(reference)  # same order too
    assert sum(p.numel() for p in r50.parameters()) == 54_434_180  # "54.43 M" in the reference


@pytest.mark.parametrize("arch,f16", [("stcn-r18", 256), ("stcn-r50", 1024)])
def test_three_calls_shapes(arch, f16) -> None:
    net = build_network(arch).eval()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        key, query_value, k16, f8, f4 = net.encode_key(image)
        assert key.shape == (1, 64, 4, 6) and query_value.shape == (1, 512, 4, 6) and k16.shape[1] == f16
        masks = torch.rand(2, 1, 64, 96)
        values = net.encode_value(image.expand(2, -1, -1, -1), k16.expand(2, -1, -1, -1), masks, 1 - masks)
        assert values.shape == (2, 512, 4, 6)
        logits = net.decode(values, query_value.expand(2, -1, -1, -1), f8.expand(2, -1, -1, -1),
                            f4.expand(2, -1, -1, -1))
    assert logits.shape == (2, 1, 64, 96)


def test_frame_features_with_batch_one_are_broadcast_over_objects_exactly() -> None:
    """decode/encode_value take the frame's features once (batch 1) beside N objects: the same maths as
    feeding N copies (the decoder's skip convolutions then run once per frame; parts.py relies on it)."""
    torch.manual_seed(2)
    net = build_network("stcn-r18-lite").eval()
    image = torch.randn(1, 3, 64, 96)
    masks = torch.rand(3, 1, 64, 96)
    with torch.no_grad():
        _, query_value, k16, f8, f4 = net.encode_key(image)
        values = net.encode_value(image, k16, masks, 1 - masks)
        expanded = [x.expand(3, -1, -1, -1) for x in (image, k16)]
        torch.testing.assert_close(values, net.encode_value(*expanded, masks, 1 - masks), rtol=1e-5, atol=1e-5)
        readout = torch.randn(3, net.value_dim, 4, 6)
        once = net.decode(readout, query_value, f8, f4)
        copies = net.decode(readout, *(x.expand(3, -1, -1, -1).contiguous() for x in (query_value, f8, f4)))
    assert once.shape == (3, 1, 64, 96)
    torch.testing.assert_close(once, copies, rtol=1e-5, atol=1e-5)


def test_random_network_is_seeded_and_leaves_the_global_rng_alone() -> None:
    from edge_vos.model import random_network

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = random_network("stcn-r18-lite"), random_network("stcn-r18-lite")
    assert torch.rand(1) == expected_next
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = random_network("stcn-r18-lite", seed=1)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_default_model_config_names_the_bundled_weights_arch() -> None:
    from edge_vos.model.checkpoint import read_metadata
    from edge_vos.model.config import ModelConfig
    from edge_vos.model.weights import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"no bundled weights at {DEFAULT_WEIGHTS}")
    assert ModelConfig().arch == read_metadata(DEFAULT_WEIGHTS)["arch"]


def _official_file(net, tmp_path, transform=None, wrap=True, prefix=""):
    state = {prefix + k: v for k, v in net.state_dict().items()}
    if transform:
        state = transform(state)
    path = tmp_path / "stcn.pth"
    torch.save({"network": state} if wrap else state, path)
    return path


def test_official_layout_checkpoint_round_trips(r50, tmp_path) -> None:
    path = _official_file(r50, tmp_path, wrap=False)
    loaded = load_network(path)
    assert loaded.arch == "stcn-r50" and loaded.use_cbam
    for name, tensor in r50.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    save_network(loaded, tmp_path / "again.safetensors")
    again = load_network(tmp_path / "again.safetensors")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in r50.state_dict().items())


def test_module_prefix_and_wrapping_are_accepted(r50, tmp_path) -> None:
    loaded = load_network(_official_file(r50, tmp_path, prefix="module."))
    assert torch.equal(loaded.key_proj.key_proj.weight, r50.key_proj.key_proj.weight)


def test_stage0_four_channel_value_conv_is_zero_padded(r50, tmp_path) -> None:
    def to_stage0(state):
        state["value_encoder.conv1.weight"] = state["value_encoder.conv1.weight"][:, :4].clone()
        return state

    loaded = load_network(_official_file(r50, tmp_path, to_stage0))
    weight = loaded.value_encoder.conv1.weight
    assert weight.shape[1] == 5 and torch.equal(weight[:, :4], r50.value_encoder.conv1.weight[:, :4])
    assert not weight[:, 4].any()


def test_no_cbam_checkpoint_builds_a_network_without_attention(r50, tmp_path) -> None:
    def drop_cbam(state):
        return {k: v for k, v in state.items() if ".fuser.attention." not in k}

    loaded = load_network(_official_file(r50, tmp_path, drop_cbam))
    assert not loaded.use_cbam and len(loaded.state_dict()) == 399


def test_mismatched_checkpoint_lists_every_problem(r50, tmp_path) -> None:
    def damage(state):
        state.pop("decoder.pred.bias")
        state["extra.thing"] = torch.zeros(1)
        state["key_comp.weight"] = torch.zeros(3, 3, 3, 3)
        return state

    with pytest.raises(CheckpointError) as info:
        load_network(_official_file(r50, tmp_path, damage))
    message = str(info.value)
    assert "missing (1): decoder.pred.bias" in message
    assert "unexpected (1): extra.thing" in message
    assert "key_comp.weight: checkpoint [3, 3, 3, 3] vs network [512, 1024, 3, 3]" in message


def test_r18_cannot_load_r50_weights_with_a_clear_message(r50, tmp_path) -> None:
    path = _official_file(r50, tmp_path)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_network(path, arch="stcn-r18")


def test_pickled_objects_are_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a tensor-only checkpoint"):
        read_state_dict(path)


def test_torchvision_imagenet_file_initialises_trunks(tmp_path) -> None:
    net = build_network("stcn-r18")
    donor = build_network("stcn-r18").value_encoder  # same ResNet-18 layout, torchvision names
    tv = {k: v.clone() for k, v in donor.state_dict().items() if not k.startswith("fuser.")}
    tv = {k: v for k, v in tv.items() if not k.endswith(".bias") or ".bn" in k or "downsample.1" in k}
    tv["conv1.weight"] = tv["conv1.weight"][:, :3].clone()
    tv["fc.weight"] = torch.zeros(1000, 512)
    key_tv = {k: v for k, v in tv.items()}
    torch.save(key_tv, tmp_path / "resnet18.pth")
    # the key encoder has no conv biases, so this ResNet-18 file fits it directly
    init_trunks_from_torchvision(net, tmp_path / "resnet18.pth", tmp_path / "resnet18.pth")
    assert torch.equal(net.key_encoder.res2[0].conv1.weight, donor.layer1[0].conv1.weight)
    assert torch.equal(net.value_encoder.conv1.weight[:, :3], donor.conv1.weight[:, :3])
    assert not net.value_encoder.conv1.weight[:, 3:].any()


def test_geometry_pads_evenly_and_round_trips() -> None:
    geometry = frame_geometry(240, 427, None)
    assert geometry.padded_hw == (240, 432) and geometry.pad == (2, 3, 0, 0)
    image = np.random.default_rng(0).integers(0, 255, (240, 427, 3), dtype=np.uint8)
    x = image_to_tensor(image, geometry)
    assert x.shape == (1, 3, 240, 432) and torch.all(x[..., :2] == 0)
    assert unpad(x, geometry).shape[-2:] == (240, 427)
    scaled = frame_geometry(480, 854, 240)
    assert (scaled.work_h, scaled.work_w) == (240, 427)
    back = to_input_size(torch.zeros(1, 1, *scaled.padded_hw), scaled)
    assert back.shape[-2:] == (480, 854)
    with pytest.raises(ValueError, match="RGB uint8"):
        image_to_tensor(image.astype(np.float32), geometry)



@pytest.mark.parametrize("objects", [1, 2, 4, 8])
def test_split_convolutions_compute_what_the_concatenation_did(objects) -> None:
    """The frame's part of each convolution over [frame features, object features] runs once per frame
    (stem of the value encoder, its fusion's first block, the decoder's first block): the same values and
    logits as the per-object concatenation, within float rounding, for any object count."""
    torch.manual_seed(objects)
    net = build_network("stcn-effl0").eval()
    for p in net.parameters():  # trained-like magnitudes rather than the initialisation's near-zero heads
        p.data.normal_(0, 0.05)
    image = torch.randn(1, 3, 64, 96)
    masks = torch.rand(objects, 1, 64, 96)
    others = masks.sum(0, keepdim=True) - masks
    with torch.no_grad():
        _, query_value, k16, f8, f4 = net.encode_key(image)
        values = net.encode_value(image, k16, masks, others)
        expected = value_by_concatenation(net, image, k16, masks, others)
        torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        readout = torch.randn(objects, net.value_dim, 4, 6)
        logits = net.decode(readout, query_value, f8, f4)
        expected = decode_by_concatenation(net, readout, query_value, f8, f4)
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_conv_of_concat_rejects_parts_that_do_not_fill_the_convolution() -> None:
    from edge_vos.model.modules import conv_of_concat

    conv = torch.nn.Conv2d(5, 4, 3, padding=1)
    with pytest.raises(ValueError, match="parts hold 4 channels"):
        conv_of_concat(conv, (torch.zeros(1, 3, 8, 8), torch.zeros(2, 1, 8, 8)))
    split = conv_of_concat(conv, (torch.randn(1, 3, 8, 8).expand(2, -1, -1, -1), torch.randn(2, 2, 8, 8)))
    assert split.shape == (2, 4, 8, 8)
