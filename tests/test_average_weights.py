"""tools/average_weights.py: the mean of snapshots is the tensor-wise weighted mean, loadable as weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge_vos.model.checkpoint import load_network, read_metadata, save_network
from edge_vos.model.weights import random_network
from tools.average_weights import main


def test_the_average_is_the_weighted_mean_of_every_float_tensor(tmp_path: Path) -> None:
    a, b = random_network("stcn-effl0", seed=1), random_network("stcn-effl0", seed=2)
    save_network(a, tmp_path / "a.safetensors", {"steps": "10"})
    save_network(b, tmp_path / "b.safetensors", {"steps": "20"})
    out = tmp_path / "mean.safetensors"
    assert main([str(out), str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--weights", "3,1"]) == 0
    mean = load_network(out).state_dict()
    sa, sb = a.state_dict(), b.state_dict()
    checked = 0
    for name, tensor in mean.items():
        if tensor.is_floating_point() and not torch.equal(sa[name], sb[name]):
            torch.testing.assert_close(tensor, 0.75 * sa[name] + 0.25 * sb[name])
            checked += 1
    assert checked > 10
    assert '"steps": "20"' in read_metadata(out)["averaged"]


def test_bad_weights_are_refused_by_name(tmp_path: Path) -> None:
    save_network(random_network("stcn-effl0", seed=1), tmp_path / "a.safetensors")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "m.safetensors"), str(tmp_path / "a.safetensors"), str(tmp_path / "a.safetensors"),
              "--weights", "1"])


def test_prompt_network_files_average_too(tmp_path: Path) -> None:
    """A prompt network fine-tune averaged with its start (weight-space ensembling) is a loadable prompt file."""
    from edge_vos.prompt.model import PromptNet, PromptNetConfig, load_weights, save_weights

    torch.manual_seed(1)
    a = PromptNet(PromptNetConfig(crop_size=64))
    torch.manual_seed(2)
    b = PromptNet(PromptNetConfig(crop_size=64))
    save_weights(a, tmp_path / "a.safetensors", {"steps": "0"})
    save_weights(b, tmp_path / "b.safetensors", {"steps": "400"})
    out = tmp_path / "wise.safetensors"
    assert main([str(out), str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--weights", "7,3"]) == 0
    mean, header = load_weights(out)
    name = "head.weight"
    torch.testing.assert_close(mean.state_dict()[name], 0.7 * a.state_dict()[name] + 0.3 * b.state_dict()[name])
    assert '"steps": "400"' in header["averaged"]
    save_network(random_network("stcn-effl0", seed=1), tmp_path / "tracker.safetensors")
    with pytest.raises(SystemExit, match="not both"):
        main([str(tmp_path / "m.safetensors"), str(tmp_path / "a.safetensors"), str(tmp_path / "tracker.safetensors")])
