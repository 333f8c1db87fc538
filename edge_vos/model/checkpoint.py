"""Loading weights: our safetensors files, official STCN checkpoints, and ImageNet trunk initialisation.

Only tensors are ever loaded (safetensors or `torch.load(weights_only=True)`): a checkpoint is data, and
unpickling arbitrary objects would execute code from the file.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from edge_vos.model.network import STCN, build_network

log = logging.getLogger(__name__)

_CBAM_PREFIX = "value_encoder.fuser.attention."
_VALUE_CONV1 = "value_encoder.conv1.weight"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the network; the message lists every offending entry."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a flat name->tensor mapping from .safetensors or a torch file, stripping `module.` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Mapping[str, object] = load_file(str(path))
        except Exception as exc:  # SafetensorError does not name the file
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_sentence(exc)})") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(
                f"{path}: not a tensor-only checkpoint ({_unpickler_problem(exc)}); objects that need unpickling "
                "are never loaded, since unpickling can run code: save a plain state dict or safetensors"
            ) from None
        except Exception as exc:  # truncated or garbage files raise several types
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_first_sentence(exc)})") from None
        for wrapper in ("state_dict", "model", "network"):
            if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
                state = state[wrapper]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a mapping of tensors, got {type(state).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        while name.startswith("module."):
            name = name[len("module."):]
        out[name] = value
    if not out:
        raise CheckpointError(f"{path}: holds no tensors")
    return out


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header (arch, training recipe); empty for other files."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_sentence(exc)})") from None


def _first_sentence(exc: BaseException) -> str:
    """The gist of a library's error, on one line (no multi-paragraph advice)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")


def _unpickler_problem(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to retry with weights_only=False."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|\. Please|$)", str(exc), re.S)
    return " ".join(match.group(1).split()).rstrip(".") if match else "it holds pickled Python objects"


def infer_arch(state: Mapping[str, torch.Tensor]) -> str:
    """Tells stcn-r50 (bottleneck key encoder) from stcn-r18 by the key encoder's first block."""
    if "key_encoder.res2.0.conv3.weight" in state:
        return "stcn-r50"
    if "key_encoder.res2.0.conv1.weight" in state:
        return "stcn-r18"
    raise CheckpointError("cannot tell the architecture: no key_encoder.res2.0.* entries")


def adapt_state_dict(state: Mapping[str, torch.Tensor], network: STCN) -> dict[str, torch.Tensor]:
    """Applies the known official variants: stage-0 4-channel value conv1 is zero-padded to 5 channels."""
    adapted = dict(state)
    conv1 = adapted.get(_VALUE_CONV1)
    target = network.state_dict().get(_VALUE_CONV1)  # absent from value encoders without a trunk
    if conv1 is not None and target is not None and conv1.dim() == 4 and conv1.shape[1] == 4 and target.shape[1] == 5:
        pad = torch.zeros(conv1.shape[0], 1, *conv1.shape[2:], dtype=conv1.dtype)
        adapted[_VALUE_CONV1] = torch.cat([conv1, pad], dim=1)
    return adapted


def load_into(network: STCN, state: Mapping[str, torch.Tensor]) -> None:
    """Strict load with a message naming every missing, unexpected and mis-shaped entry."""
    state = adapt_state_dict(state, network)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {list(state[k].shape)} vs network {list(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        lines = [f"checkpoint does not fit {network.arch} (cbam={network.use_cbam}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:40]))
                if len(items) > 40:
                    lines.append(f"    ... and {len(items) - 40} more")
        raise CheckpointError("\n".join(lines))
    network.load_state_dict(state, strict=True)


def load_network(path: str | Path, arch: str | None = None) -> STCN:
    """Builds the network a checkpoint describes (arch and CBAM inferred unless given) and loads it."""
    state = read_state_dict(path)
    meta = read_metadata(path)
    use_cbam = any(k.startswith(_CBAM_PREFIX) for k in state)
    try:
        arch = arch or meta.get("arch") or infer_arch(state)
        try:
            network = build_network(arch, use_cbam=use_cbam)
        except ValueError as exc:  # an arch named in the file's header that this version does not know
            raise CheckpointError(str(exc)) from None
        load_into(network, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    log.info("loaded %s (%s, cbam=%s)", path, arch, use_cbam)
    return network


def save_network(network: STCN, path: str | Path, metadata: Mapping[str, object] | None = None) -> None:
    """Writes safetensors with the arch in the header, so `load_network` needs no extra arguments."""
    from safetensors.torch import save_file

    meta = {"arch": network.arch, "cbam": str(network.use_cbam)}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def init_trunks_from_torchvision(network: STCN, key_file: str | Path, value_file: str | Path | None = None) -> None:
    """Initialises the encoders' trunks from torchvision-format ImageNet ResNet checkpoints.

    The key encoder takes `key_file` (a ResNet of the key trunk's depth); the value encoder takes
    `value_file` (ResNet-18), whose RGB conv1 is extended with zero weights for the two mask channels.
    """
    def trunk_entries(src: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in src.items() if not k.startswith(("fc.", "layer4."))}

    key_src = trunk_entries(read_state_dict(key_file))
    key_target = network.key_encoder.state_dict()
    renamed = {("res2." + k[len("layer1."):] if k.startswith("layer1.") else k): v for k, v in key_src.items()}
    _load_partial(network.key_encoder, renamed, key_target, "key encoder")

    if value_file is not None:
        value_src = trunk_entries(read_state_dict(value_file))
        target = network.value_encoder.state_dict()
        conv1 = value_src.get("conv1.weight")
        if conv1 is not None and conv1.shape[1] == 3:
            extra = torch.zeros(conv1.shape[0], 2, *conv1.shape[2:], dtype=conv1.dtype)
            value_src["conv1.weight"] = torch.cat([conv1, extra], dim=1)
        _load_partial(network.value_encoder, value_src, target, "value encoder")


def _load_partial(
    module: torch.nn.Module, source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], what: str
) -> None:
    misshaped = [k for k in source if k in target and source[k].shape != target[k].shape]
    unexpected = [k for k in source if k not in target]
    if misshaped or unexpected:
        raise CheckpointError(
            f"{what}: ImageNet file does not fit: mis-shaped {misshaped[:10]}, unexpected {unexpected[:10]}"
        )
    module.load_state_dict(dict(source), strict=False)
    log.info("%s: initialised %d/%d entries from ImageNet weights", what, len(source), len(target))
