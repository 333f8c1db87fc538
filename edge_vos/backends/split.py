"""A runner that runs each network part on the backend that is fastest for it on this machine.

On a CPU the encoders (EfficientNet trunks: much of their eager time goes to batch norms and ReLU6 run as
separate passes) are fastest as ONNX Runtime fp32, which folds them into the convolutions, while the decoder
(dense 3x3 convolutions) is fastest in eager PyTorch: with bf16 autocast where the CPU has native bf16
kernels, else in fp32 through NNPACK's Winograd convolutions (backends/winograd.py). Which parts go where:
`backends.SPLIT_ORT_PARTS`; the measurements: docs/benchmarks.md, "step-notes" and "objects-notes".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from edge_vos.backends.base import PartRunner
from edge_vos.backends.parts import DECODER_REGION_PARTS, PART_NAMES, VALUE_REGION_PARTS


class SplitRunner(PartRunner):
    """Delegates each part to its own runner; all runners must be on the same device."""

    def __init__(self, runners: Mapping[str, PartRunner]) -> None:
        missing = [p for p in PART_NAMES if p not in runners]
        if missing:
            raise ValueError(f"SplitRunner: no runner for {missing}")
        devices = {r.device for r in runners.values()}
        if len(devices) != 1:
            raise ValueError(f"SplitRunner: runners on different devices {sorted(map(str, devices))}")
        self.runners = dict(runners)
        self.device = devices.pop()
        self.name = "+".join(f"{part}:{self.runners[part].name}" for part in PART_NAMES)
        self.decodes_regions = self.runners["decoder"].decodes_regions
        self.encodes_regions = self.runners["value_encoder"].encodes_regions
        # Each region part goes to the runner of the part it comes from.
        self._owner = {p: "decoder" for p in DECODER_REGION_PARTS}
        self._owner.update({p: "value_encoder" for p in VALUE_REGION_PARTS})

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        return self.runners[self._owner.get(part, part)].run_part(part, objects, *inputs)
