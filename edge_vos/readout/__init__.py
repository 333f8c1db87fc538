"""Memory readouts: the TMRN readout that ships (tmrn.py, its stages in stages.py) and STCN's (stcn.py), built
by `build_readout(ReadoutConfig)`. Importing the package imports no torch: `ReadoutConfig` is plain data, the
rest is loaded on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_vos.readout.config import READOUT_KINDS, ReadoutConfig, StcnOptions, TmrnOptions

if TYPE_CHECKING:
    from edge_vos.readout.build import Readout, StcnReadout, build_readout
    from edge_vos.readout.tmrn import TmrnReadout


def __getattr__(name: str) -> object:
    """The tensor code, imported when first asked for (a config loader never asks)."""
    if name in ("Readout", "StcnReadout", "build_readout"):
        from edge_vos.readout import build

        return getattr(build, name)
    if name == "TmrnReadout":
        from edge_vos.readout import tmrn

        return tmrn.TmrnReadout
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "READOUT_KINDS", "Readout", "ReadoutConfig", "StcnOptions", "StcnReadout", "TmrnOptions", "TmrnReadout",
    "build_readout",
]
