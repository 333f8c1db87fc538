"""Eager PyTorch backend: channels_last, bf16 autocast on CPUs that support it, fp16 on CUDA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from edge_vos.model.network import STCN


class TorchRunner:
    name = "torch"

    def __init__(self, network: STCN, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision
        self.network = network.to(device).eval()
        if device.type == "cuda" and precision == "fp16":
            self.network = self.network.half()
        self.network = self.network.to(memory_format=torch.channels_last)
        self._dtype = next(self.network.parameters()).dtype

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.device.type == "cpu" and self.precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    yield
            else:
                yield

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self._dtype)
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    @staticmethod
    def _out(x: torch.Tensor) -> torch.Tensor:
        return x.float().contiguous()

    def encode_key(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._context():
            outs = self.network.encode_key(self._in(image))
        return tuple(self._out(o) for o in outs)  # type: ignore[return-value]

    def encode_value(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        n = masks.shape[0]
        with self._context():
            out = self.network.encode_value(
                self._in(image).expand(n, -1, -1, -1),
                self._in(key_f16).expand(n, -1, -1, -1),
                self._in(masks),
                self._in(others),
            )
        return self._out(out)

    def decode(
        self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        n = readout.shape[0]
        with self._context():
            out = self.network.decode(
                self._in(readout),
                self._in(query_value).expand(n, -1, -1, -1),
                self._in(f8).expand(n, -1, -1, -1),
                self._in(f4).expand(n, -1, -1, -1),
            )
        return self._out(out)
