"""A runner that runs each network part on the backend that is fastest for it on this machine.

On a CPU the encoders (EfficientNet trunks: much of their eager time goes to batch norms and ReLU6 run as
separate passes) are fastest as ONNX Runtime fp32, which folds them into the convolutions, while the decoder
(dense 3x3 convolutions) is fastest in eager PyTorch bf16 where the CPU has native bf16 kernels, several
objects' crops in one call (`NetworkRunner.batches_regions`); on an fp32 CPU its calls on large maps are
fastest in eager fp32 through NNPACK's Winograd convolutions (backends/winograd.py) and those on small crops
in ONNX Runtime. Which parts go where: `backends.SPLIT_ORT_PARTS`; the measurements: docs/benchmarks.md,
"step-notes" and "objects-notes".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from edge_vos.backends.base import PartRunner
from edge_vos.backends.parts import DECODER_REGION_PARTS, PART_NAMES, VALUE_REGION_PARTS


class SplitRunner(PartRunner):
    """Delegates each part to its own runner; all runners must be on the same device.

    `large_decoder`: a second runner for the decoder's parts, given the calls whose /16 map (their first input)
    holds at least `min_large_cells` cells; the decoder's own runner takes the smaller ones. Why: a runner
    with a fixed cost per convolution (NNPACK's Winograd) wins on large maps and loses on an object's small crop.
    """

    def __init__(
        self, runners: Mapping[str, PartRunner], *, large_decoder: PartRunner | None = None, min_large_cells: int = 0
    ) -> None:
        missing = [p for p in PART_NAMES if p not in runners]
        if missing:
            raise ValueError(f"SplitRunner: no runner for {missing}")
        devices = {r.device for r in (*runners.values(), *([large_decoder] if large_decoder else []))}
        if len(devices) != 1:
            raise ValueError(f"SplitRunner: runners on different devices {sorted(map(str, devices))}")
        self.runners = dict(runners)
        self.device = devices.pop()
        self.name = "+".join(f"{part}:{self.runners[part].name}" for part in PART_NAMES)
        self._large_decoder, self._min_large_cells = large_decoder, min_large_cells
        if large_decoder is not None:
            self.name += f" (decoder maps of {min_large_cells}+ cells: {large_decoder.name})"
        self.decodes_regions = self.runners["decoder"].decodes_regions
        self.batches_regions = self.decodes_regions and all(
            r.batches_regions for r in (self.runners["decoder"], *([large_decoder] if large_decoder else [])))
        self.encodes_regions = self.runners["value_encoder"].encodes_regions
        # Each region part goes to the runner of the part it comes from.
        self._owner = {p: "decoder" for p in DECODER_REGION_PARTS}
        self._owner.update({p: "value_encoder" for p in VALUE_REGION_PARTS})

    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        owner = self._owner.get(part, part)
        if (owner == "decoder" and self._large_decoder is not None
                and inputs[0].shape[-2] * inputs[0].shape[-1] >= self._min_large_cells):
            return self._large_decoder.run_part(part, objects, *inputs)
        return self.runners[owner].run_part(part, objects, *inputs)
