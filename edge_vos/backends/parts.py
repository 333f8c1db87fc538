"""The three network parts as standalone modules with the tracker's calling convention, for export.

Every backend runs these (eager PyTorch directly, ONNX Runtime and TensorRT from their ONNX exports), so
all backends compute exactly the same graph. They only wrap the network's own calls (`STCN.encode_key`,
`encode_value`, `decode`) and fix the tensor names; what happens inside is the model's business. Inputs
that the tracker passes with batch 1 (the frame, its f16/f8/f4 features and query value) stay batch 1
inside the graph, and the model broadcasts them over the objects:

- the engine then has one dynamic axis (objects, N) on the per-object inputs only, which keeps the
  TensorRT optimisation profile small and avoids copying expanded feature maps into engine buffers;
- the decoder's skip convolutions on f8 and f4 depend only on the frame, so they run once at batch 1
  (see `model.network.Decoder`) and the largest decoder layer does not scale with the object count.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_vos.model.network import STCN

PART_NAMES = ("key_encoder", "value_encoder", "decoder")
# The decoder on crops of the frame (any size, in /16 cells), for runners that decode each object only where
# it can be (`NetworkRunner.decodes_regions`), in two parts exported with free spatial axes:
# - FRAME_TERMS: the decoder's convolutions of the frame's inputs (the query value's terms in its first block,
#   the skip convolutions on f8 and f4) over one region that holds every crop, once per frame;
# - REGION_DECODER: one object's decoder on its crop, from the readout and those terms cut to the same cells.
# Not among the engines' parts (TensorRT decodes whole frames): exported beside them by the runners that
# decode crops.
FRAME_TERMS = "decoder_frame"
REGION_DECODER = "decoder_region"
DECODER_REGION_PARTS = (FRAME_TERMS, REGION_DECODER)
# The value encoder on crops, for runners that encode each object's value on the cells around its mask
# (`NetworkRunner.encodes_regions`): VALUE_LOCAL is everything before the fusion's attention (convolutions,
# free spatial axes), VALUE_GLOBAL the attention and last block over whole maps (tracker/regions.py).
VALUE_LOCAL = "value_local"
VALUE_GLOBAL = "value_global"
VALUE_REGION_PARTS = (VALUE_LOCAL, VALUE_GLOBAL)
REGION_PARTS = (*DECODER_REGION_PARTS, *VALUE_REGION_PARTS)
# Parts whose spatial axes are free: each input's and output's size as a multiple of the /16 cell grid.
SPATIAL_SCALES: dict[str, dict[str, int]] = {
    FRAME_TERMS: {"query_value": 1, "f8": 2, "f4": 4, "query_term": 1, "query_shortcut": 1, "skip8": 2, "skip4": 4},
    REGION_DECODER: {"readout": 1, "query_term": 1, "query_shortcut": 1, "skip8": 2, "skip4": 4, "logits": 16},
    VALUE_LOCAL: {"image": 16, "key_f16": 1, "masks": 16, "others": 16, "local": 1},
}
_TERMS = ("query_term", "query_shortcut", "skip8", "skip4")

# Input and output tensor names of each part, fixed so engines, sidecars and trtexec lines agree.
INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "key_encoder": ("image",),
    "value_encoder": ("image", "key_f16", "masks", "others"),
    "decoder": ("readout", "query_value", "f8", "f4"),
    FRAME_TERMS: ("query_value", "f8", "f4"),
    REGION_DECODER: ("readout", *_TERMS),
    VALUE_LOCAL: ("image", "key_f16", "masks", "others"),
    VALUE_GLOBAL: ("local",),
}
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "key_encoder": ("key", "query_value", "f16", "f8", "f4"),
    "value_encoder": ("value",),
    "decoder": ("logits",),
    FRAME_TERMS: _TERMS,
    REGION_DECODER: ("logits",),
    VALUE_LOCAL: ("local",),
    VALUE_GLOBAL: ("value",),
}
# Inputs whose first axis is the object count (dynamic); all other inputs have batch 1.
OBJECT_INPUTS: dict[str, tuple[str, ...]] = {
    "key_encoder": (),
    "value_encoder": ("masks", "others"),
    "decoder": ("readout",),
    FRAME_TERMS: (),
    REGION_DECODER: ("readout",),
    VALUE_LOCAL: ("masks", "others"),
    VALUE_GLOBAL: ("local",),
}


class NetworkCall(nn.Module):
    """One of the network's calls as a module (the tensors in and out in INPUT_NAMES / OUTPUT_NAMES order),
    sharing the network's parameters: exporters and runners see a part, the maths stays the network's."""

    def __init__(self, network: STCN, method: str) -> None:
        super().__init__()
        self.network = network
        self.method = method

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out: torch.Tensor | tuple[torch.Tensor, ...] = getattr(self.network, self.method)(*inputs)
        return out


# The STCN method behind each part.
_METHODS: dict[str, str] = {
    "key_encoder": "encode_key",
    "value_encoder": "encode_value",
    "decoder": "decode",
    FRAME_TERMS: "decode_frame_terms",
    REGION_DECODER: "decode_with_terms",
    VALUE_LOCAL: "encode_value_local",
    VALUE_GLOBAL: "encode_value_global",
}


class HalfPrecision(nn.Module):
    """Runs a part in fp16 with fp32 inputs and outputs.

    For strongly typed TensorRT networks (TensorRT 11 removed BuilderFlag.FP16): the precision must then be
    in the ONNX itself, while the tracker keeps exchanging fp32 tensors with the engine.
    """

    def __init__(self, part: nn.Module) -> None:
        super().__init__()
        self.part = part.half()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.part(*(x.half() for x in inputs))
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()


def make_part(network: STCN, part: str) -> nn.Module:
    """The module for one part name (one of PART_NAMES or REGION_PARTS), sharing the network's parameters."""
    if part not in _METHODS:
        raise ValueError(f"unknown part {part!r}; expected one of {(*PART_NAMES, *REGION_PARTS)}")
    return NetworkCall(network, _METHODS[part])


def example_inputs(network: STCN, part: str, padded_hw: tuple[int, int], objects: int = 2) -> tuple[torch.Tensor, ...]:
    """Zero inputs of the right shapes for a part at a padded working size (for export and warm-up)."""
    h, w = padded_hw
    if h % 16 or w % 16:
        raise ValueError(f"padded size must be a multiple of 16, got {w}x{h}")
    f4c, f8c, f16c = _key_channels(network)
    vd = network.value_dim
    if part == "key_encoder":
        return (torch.zeros(1, 3, h, w),)
    if part in ("value_encoder", VALUE_LOCAL):
        return (
            torch.zeros(1, 3, h, w), torch.zeros(1, f16c, h // 16, w // 16),
            torch.zeros(objects, 1, h, w), torch.zeros(objects, 1, h, w),
        )
    frame = (
        torch.zeros(1, vd, h // 16, w // 16), torch.zeros(1, f8c, h // 8, w // 8), torch.zeros(1, f4c, h // 4, w // 4),
    )
    if part == "decoder":
        return (torch.zeros(objects, vd, h // 16, w // 16), *frame)
    if part == FRAME_TERMS:
        return frame
    if part == REGION_DECODER:
        d16, d8, _ = network.spec.decoder_dims
        return (
            torch.zeros(objects, vd, h // 16, w // 16), torch.zeros(1, d16, h // 16, w // 16),
            torch.zeros(1, d16, h // 16, w // 16), torch.zeros(1, d16, h // 8, w // 8),
            torch.zeros(1, d8, h // 4, w // 4),
        )
    if part == VALUE_GLOBAL:
        return (torch.zeros(objects, vd, h // 16, w // 16),)
    raise ValueError(f"unknown part {part!r}; expected one of {(*PART_NAMES, *REGION_PARTS)}")


def input_shapes(network: STCN, part: str, padded_hw: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Input name -> shape with the object axis set to 1 (callers substitute the object count)."""
    inputs = example_inputs(network, part, padded_hw, 1)
    return {name: tuple(x.shape) for name, x in zip(INPUT_NAMES[part], inputs, strict=True)}


def _key_channels(network: STCN) -> tuple[int, int, int]:
    from edge_vos.model.network import trunk_channels

    return trunk_channels(network.spec.key_trunk)
