"""Memory readouts: STCN (one softmax over all memory pixels) and TMRN (SVD-agent aligned, per-slot)."""

from edge_vos.readout.stcn import stcn_readout
from edge_vos.readout.svd import SVD_KINDS, SvdState
from edge_vos.readout.tmrn import MODES, tmrn_readout

__all__ = ["MODES", "SVD_KINDS", "SvdState", "stcn_readout", "tmrn_readout"]
