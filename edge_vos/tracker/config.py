"""Typed configuration of the tracker: network (the model's own ModelConfig), readout, memory, precision,
device, backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_vos.backends import BACKEND_NAMES
from edge_vos.config import ConfigError, one_of, positive
from edge_vos.labels import MAX_OBJECT_ID
from edge_vos.model.config import ModelConfig
from edge_vos.readout import AGENT_SOURCES, MODES, SVD_KINDS

# `auto`: bf16 on a CPU with native bf16 kernels, fp16 on CUDA, fp32 elsewhere (backends.resolve_precision).
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
DEVICES = ("auto", "cpu", "cuda")
# What `readout.kind` may name: the STCN readout, or one of tmrn_readout's modes.
READOUT_KINDS = ("stcn", *MODES)
# What the motion prior does with an object's mask that falls apart into pieces (PriorConfig.split).
SPLIT_MODES = ("keep", "track")


@dataclass
class ReadoutConfig:
    kind: str = "tmrn"
    svd: str = "fast"
    agents: int = 128
    # True: W = C * S row-renormalised (the interface's default); rows of C * S that underflow on trained
    # keys take S's row instead of 0/0. False: the paper's eq. 13 as written. Why True is the default, with
    # the measurements: docs/architecture.md, "Readout defaults".
    renormalize: bool = True
    # STCN readout: keep the top_k memory entries per query pixel over all slots (official STCN: 20). 0 = all.
    top_k: int = 20
    # TMRN/ST readout: keep the slot_top_k largest entries of each row of every slot's affinity and run
    # everything after it on those (the sparse path, docs/readout.md). 0 = all (the dense exact reference).
    # Trained affinities put nearly all of a row's mass on its first one or two entries, so a handful
    # suffices; the measurements that chose it: docs/readout.md, "How many entries per row".
    slot_top_k: int = 4
    # Where TMRN's agents come from: "svd" (the paper's method) or "pixels" (SVD-free, cheaper).
    agent_source: str = "svd"
    # svd "fast": each slot's agents are recomputed on one frame in agents_every (slots take turns), the
    # others keep their last ones. 1 = every frame (the paper). Measurements: docs/readout.md.
    agents_every: int = 1

    def __post_init__(self) -> None:
        one_of("kind", self.kind, READOUT_KINDS)
        one_of("svd", self.svd, SVD_KINDS)
        one_of("agent_source", self.agent_source, AGENT_SOURCES)
        positive("agents", self.agents)
        positive("agents_every", self.agents_every)
        positive("top_k", self.top_k, allow_zero=True)
        positive("slot_top_k", self.slot_top_k, allow_zero=True)


@dataclass
class MemoryConfig:
    # Total slots, prompt frames included. Preallocated once; never grows unless `unbounded`.
    capacity: int = 8
    # Write the current frame to memory every `mem_every` frames.
    mem_every: int = 5
    # Most slots that prompt frames may pin; older prompts beyond this are unpinned oldest-first.
    max_pinned: int = 4
    # Official-STCN mode for comparison: every memory frame is kept, memory grows without bound.
    unbounded: bool = False

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

    enabled: bool = False
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
    split: str = "keep"
    # split "track": a mask that grows past this many times the object's usual area in one frame has taken
    # something in; pieces are then judged against the box the object had before, moved on by its velocity.
    growth: float = 1.3
    # split "track": a piece other than the main one is kept when this share of it lies in the expected box.
    keep_inside: float = 0.5
    # An object whose mask shrinks below this share of its usual area in one frame has its probabilities
    # scaled up (at most 3x, inside its window) until that share passes: a matcher unsure of an object
    # among look-alikes fades it for a frame, and the faded frame written to memory would teach the loss.
    # 0 = off.
    hold: float = 0.0

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
    # Working resolution: the short side the network sees (official STCN: 480); a smaller input is not
    # scaled up (that costs time and adds no detail). 0 = the input size.
    resolution: int = 480
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "torch"
    max_objects: int = 8

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
    def official_stcn(cls, **kwargs: object) -> TrackerConfig:
        """Official STCN's inference: STCN readout with top-20, every 5th frame kept forever, no prior."""
        config = cls(**kwargs)  # type: ignore[arg-type]
        config.readout = ReadoutConfig(kind="stcn", top_k=20)
        config.prior = PriorConfig(enabled=False)
        config.memory = MemoryConfig(capacity=config.memory.capacity, mem_every=5, unbounded=True)
        return config


__all__ = [
    "DEVICES", "PRECISIONS", "READOUT_KINDS", "MemoryConfig", "ModelConfig", "PriorConfig", "ReadoutConfig",
    "SPLIT_MODES", "TrackerConfig",
]
