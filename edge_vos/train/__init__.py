"""Training: STCN's static-image then video recipe with a selectable readout (`edge-vos train`)."""

from edge_vos.train.config import TrainConfig
from edge_vos.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
