"""The one small interface every execution backend implements for the tracker.

The tracker only ever calls these three methods with torch tensors on `runner.device`; a backend may run
them in eager PyTorch, ONNX Runtime or TensorRT. Objects are the batch axis of encode_value and decode.
"""

from __future__ import annotations

from typing import Protocol

import torch


class NetworkRunner(Protocol):
    name: str
    device: torch.device

    def encode_key(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image [1,3,H,W] -> key [1,Ck,h,w], query value [1,512,h,w], f16, f8, f4."""
        ...

    def encode_value(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """image [1,3,H,W] (broadcast over objects), key_f16 [1,C,h,w], masks/others [N,1,H,W] -> [N,512,h,w]."""
        ...

    def decode(
        self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        """readout [N,512,h,w]; query_value, f8, f4 with batch 1 (broadcast) -> logits [N,1,H,W]."""
        ...


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine; the message says why."""
