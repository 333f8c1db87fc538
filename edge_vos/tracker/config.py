"""Typed configuration of the tracker: network (the model's own ModelConfig), readout (the readout's own
ReadoutConfig), memory, motion prior, precision, device, backend.

The defaults are the tracker that ships (configs/cpu.yaml states them; tests/test_tracker_config.py keeps the
two equal); device configs state only their differences. Torch-free: loading a config loads no network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_vos.backends.names import BACKEND_NAMES
from edge_vos.config import ConfigError, from_dict, one_of, positive, read_yaml, with_overrides
from edge_vos.labels import MAX_OBJECT_ID
from edge_vos.model.config import ModelConfig
from edge_vos.readout.config import READOUT_KINDS, ReadoutConfig, StcnOptions

# `auto`: bf16 on a CPU with native bf16 kernels, fp16 on CUDA, fp32 elsewhere (backends.resolve_precision).
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
DEVICES = ("auto", "cpu", "cuda")
# What the motion prior does with an object's mask that falls apart into pieces (PriorConfig.split).
SPLIT_MODES = ("keep", "track")


@dataclass
class MemoryConfig:
    # Total slots, prompt frames included. Preallocated once; never grows unless `unbounded`.
    capacity: int = 6
    # Write the current frame to memory every `mem_every` frames.
    mem_every: int = 5
    # Most slots that prompt frames may pin; older prompts beyond this are unpinned oldest-first.
    max_pinned: int = 2
    # Official-STCN mode for comparison: every memory frame is kept, memory grows without bound.
    unbounded: bool = False
    # Each object's value in a ring write is encoded on a crop around its mask, the rest of its map from one
    # pass shared by all objects (edge_vos/tracker/regions.encode_values); the value encoder's per-object work
    # is an extra object's second largest cost. Prompt frames (pinned) are encoded whole. On a CPU (eager
    # PyTorch, ONNX Runtime); a GPU encodes whole frames.
    encode_inside: bool = True

    def __post_init__(self) -> None:
        positive("capacity", self.capacity)
        positive("mem_every", self.mem_every)
        positive("max_pinned", self.max_pinned)
        if not self.unbounded and self.capacity < 2:
            raise ConfigError("capacity", f"must be >= 2 (one pinned prompt + one ring slot), got {self.capacity}")
        if not self.unbounded and self.max_pinned >= self.capacity:
            raise ConfigError(
                "max_pinned", f"must be < capacity ({self.capacity}) so the ring keeps a slot, got {self.max_pinned}"
            )


@dataclass
class PriorConfig:
    """The motion prior (edge_vos/tracker/prior.py): each object's probability is kept near its previous box."""

    # Each object stays near its previous box, so a look-alike far away is not painted (docs/history/tracker-runs.md,
    # "Motion prior"); false = appearance matching alone.
    enabled: bool = True
    # Gaussian width outside the previous box, as a fraction of the box's height (rows) and width (columns).
    margin: float = 0.5
    # Lower bound of that width in working-canvas pixels (small objects still move).
    min_margin_px: float = 8.0
    # Share of the box's last frame-to-frame motion the window moves ahead by: 0 = centred on the previous
    # box, 1 = on a constant-velocity prediction of it.
    velocity: float = 0.0
    # An object's mask that falls apart into separate pieces: "keep" them all; "track" keeps the piece
    # nearest where the object is expected and the pieces inside its expected box, and drops the rest
    # (edge_vos/tracker/pieces.py): a look-alike that overlapped the object does not leave with its mask.
    # Runs on the CPU (OpenCV): on a GPU it copies each object's mask to the host once per frame.
    split: str = "track"
    # split "track": a mask that grows past this many times the object's usual area in one frame has taken
    # something in; pieces are then judged against the box the object had before, moved on by its velocity.
    growth: float = 1.3
    # split "track": a piece other than the main one is kept when this share of it lies in the expected box.
    keep_inside: float = 0.5
    # An object whose mask shrinks below this share of its usual area in one frame has its probabilities
    # scaled up (at most 3x, inside its window) until that share passes: a matcher unsure of an object
    # among look-alikes fades it for a frame, and the faded frame written to memory would teach the loss.
    # 0 = off.
    hold: float = 0.7
    # Each object is decoded only inside its window's reach (where its windowed probability can still make
    # it the object: MotionPrior.reach), not over the whole frame; the decoder's per-object work is most of
    # an extra object's cost. On a CPU (eager PyTorch, ONNX Runtime); a GPU decodes whole frames, batched.
    decode_inside: bool = True

    def __post_init__(self) -> None:
        positive("margin", self.margin)
        positive("min_margin_px", self.min_margin_px)
        positive("velocity", self.velocity, allow_zero=True)
        if self.velocity > 2:
            raise ConfigError("velocity", f"must be <= 2 (a share of the last motion), got {self.velocity}")
        one_of("split", self.split, SPLIT_MODES)
        if self.growth <= 1:
            raise ConfigError("growth", f"must be > 1 (a ratio of areas), got {self.growth}")
        if not 0 < self.keep_inside <= 1:
            raise ConfigError("keep_inside", f"must be in (0, 1], got {self.keep_inside}")
        if not 0 <= self.hold < 1:
            raise ConfigError("hold", f"must be in [0, 1) (a share of the usual area; 0 = off), got {self.hold}")


@dataclass
class TrackerConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    # Working resolution: the short side the network sees; a smaller input is not scaled up (that costs
    # time and adds no detail). 0 = the input size. 360 is where the bundled model scores best
    # (docs/history/tracker-runs.md, "Working resolution"); official STCN weights (stcn-r50) are a 480 network.
    resolution: int = 360
    device: str = "cpu"
    # auto: bf16 where the CPU has native bf16 kernels (AVX512-BF16/AMX, Arm BF16), else fp32; fp16 on CUDA.
    precision: str = "auto"
    # auto: the fastest backend here (backends.choose_backend); on a CPU both encoders in ONNX Runtime fp32
    # and the decoder eager bf16 on bf16 CPUs; on fp32 CPUs all in ONNX Runtime but the decoder's calls on large
    # maps, eager with Winograd convolutions (NNPACK).
    backend: str = "auto"
    max_objects: int = 8
    # Per-stage timings in StepResult.timings_ms (synchronising CUDA around every stage); off: "total" only.
    profile: bool = False

    def __post_init__(self) -> None:
        positive("resolution", self.resolution, allow_zero=True)
        if self.resolution and self.resolution < 64:
            raise ConfigError("resolution", f"must be 0 or >= 64, got {self.resolution}")
        one_of("device", self.device, DEVICES)
        one_of("precision", self.precision, PRECISIONS)
        one_of("backend", self.backend, BACKEND_NAMES)
        positive("max_objects", self.max_objects)
        if self.max_objects > MAX_OBJECT_ID:
            raise ConfigError(
                "max_objects", f"must be <= {MAX_OBJECT_ID} (object ids of a uint8 label map), got {self.max_objects}"
            )

    def working_short_side(self, in_h: int, in_w: int) -> int | None:
        """The short side to scale an in_h x in_w frame to; None = keep the input size."""
        if not self.resolution or self.resolution >= min(in_h, in_w):
            return None
        return self.resolution

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrackerConfig:
        """From a tracker YAML, or from the `tracker:` section of a service YAML, then dotted-key
        `overrides` ({"resolution": 240}); None: the defaults (the shipped tracker). Errors name the
        field as the file spells it."""
        data = read_yaml(path) if path is not None else {}
        prefix = ""
        if isinstance(data.get("tracker"), dict):
            data, prefix = data["tracker"], "tracker"
        with_overrides(data, overrides)
        return from_dict(cls, data, prefix)

    def official_stcn(self) -> TrackerConfig:
        """This config with official STCN's inference: STCN readout with top-20, every 5th frame kept
        forever, no prior."""
        return dataclasses.replace(
            self, readout=ReadoutConfig(kind="stcn", stcn=StcnOptions(top_k=20)), prior=PriorConfig(enabled=False),
            memory=MemoryConfig(capacity=self.memory.capacity, mem_every=5, unbounded=True),
        )


__all__ = [
    "DEVICES", "PRECISIONS", "READOUT_KINDS", "MemoryConfig", "ModelConfig", "PriorConfig", "ReadoutConfig",
    "SPLIT_MODES", "TrackerConfig",
]
