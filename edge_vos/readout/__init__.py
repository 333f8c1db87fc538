"""Memory readouts: STCN (one softmax over all memory pixels) and TMRN (agent-aligned, per-slot), each
dense (exact) or on the top-k entries of each affinity row (sparse)."""

from edge_vos.readout.stages import AGENT_SOURCES
from edge_vos.readout.state import SvdState
from edge_vos.readout.stcn import stcn_readout
from edge_vos.readout.svd import SVD_KINDS
from edge_vos.readout.tmrn import MODES, tmrn_readout
from edge_vos.readout.workspace import ReadoutWorkspace

__all__ = ["AGENT_SOURCES", "MODES", "SVD_KINDS", "ReadoutWorkspace", "SvdState", "stcn_readout", "tmrn_readout"]
