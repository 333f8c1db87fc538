"""The `readout:` section of a tracker config: which readout runs, and the options of that one only.

Torch-free, so that loading a config loads no tensor code. `build_readout` (readout/build.py) turns it into
the readout object; the reference paths (dense TMRN, exact and randomized SVD, SVD-free agents, the paper's
un-renormalised eq. 13) are test and benchmark code (tests/readout_reference.py), not options.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_vos.config import ConfigError, one_of, positive

# "tmrn": the shipped readout (docs/readout.md); "stcn": STCN's, for the official STCN checkpoint and training.
READOUT_KINDS = ("tmrn", "stcn")


@dataclass
class TmrnOptions:
    """The sparse TMRN readout (readout/tmrn.py); measurements behind each default: docs/readout.md."""

    # K: each slot's agents are the top-K singular directions of its affinity (2K agent keys).
    agents: int = 64
    # Entries kept in each row of each slot's affinity; everything after the affinity runs on them. Trained
    # rows put nearly all their mass on one or two entries ("How many entries per row").
    slot_top_k: int = 4
    # Each slot's agents are recomputed on one frame in `agents_every` (slots take turns), the others keep
    # their last ones; 1 = every frame, as the paper.
    agents_every: int = 2

    def __post_init__(self) -> None:
        positive("agents", self.agents)
        positive("slot_top_k", self.slot_top_k)
        positive("agents_every", self.agents_every)


@dataclass
class StcnOptions:
    """STCN's readout (readout/stcn.py): one softmax over the pixels of all memory slots."""

    # Keep the top_k entries per query pixel over all slots (official STCN: 20); 0 = all (STCN's training).
    top_k: int = 20

    def __post_init__(self) -> None:
        positive("top_k", self.top_k, allow_zero=True)


@dataclass
class ReadoutConfig:
    """`kind` and the section of that kind; a section of another kind is an error, since it would be ignored.
    The chosen kind's section may be left out: its defaults then apply."""

    kind: str = "tmrn"
    tmrn: TmrnOptions | None = None
    stcn: StcnOptions | None = None

    def __post_init__(self) -> None:
        one_of("kind", self.kind, READOUT_KINDS)
        for other in READOUT_KINDS:
            if other != self.kind and getattr(self, other) is not None:
                raise ConfigError(other, f"readout.kind is {self.kind!r}, which ignores the {other} options: "
                                         f"remove them (or set them to null), or set kind: {other}")
        if self.kind == "tmrn" and self.tmrn is None:
            self.tmrn = TmrnOptions()
        if self.kind == "stcn" and self.stcn is None:
            self.stcn = StcnOptions()


__all__ = ["READOUT_KINDS", "ReadoutConfig", "StcnOptions", "TmrnOptions"]
