"""What every execution backend shares: the runner interface and the answer to "can it run here?".

The tracker only ever calls the three NetworkRunner methods with torch tensors on `runner.device`; a
backend may run them in eager PyTorch, ONNX Runtime or TensorRT. Objects are the batch axis of
encode_value and decode.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import torch

from edge_vos.backends.parts import FRAME_TERMS, REGION_DECODER, VALUE_GLOBAL, VALUE_LOCAL


class NetworkRunner(Protocol):
    name: str
    device: torch.device
    # Whether `decode_frame_terms`/`decode_region` run here (crops of any size); else only whole frames are decoded.
    decodes_regions: bool
    # Whether `decode_region` takes several crops of one size at different places in one call (its frame
    # terms then with one row per crop, not one for the frame): an eager runner's fixed cost per call and
    # layer is then paid once for them all.
    batches_regions: bool
    # Whether `encode_value_local` runs here on crops (and `encode_value_global` on its whole maps).
    encodes_regions: bool

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

    def encode_value_local(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        """`encode_value` up to the fusion's attention, on a region of the frame (image and masks of 16r x 16c,
        key_f16 of r x c) -> [N,512,r,c]. Only where `encodes_regions`."""
        ...

    def encode_value_global(self, local: torch.Tensor) -> torch.Tensor:
        """`encode_value_local`'s output over the whole frame -> values [N,512,h,w]. Only where
        `encodes_regions`."""
        ...

    def decode(
        self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        """readout [N,512,h,w]; query_value, f8, f4 with batch 1 (broadcast) -> logits [N,1,H,W]."""
        ...

    def decode_frame_terms(
        self, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's frame-only convolutions on a region of the frame (r x c cells at /16: query value
        [1,512,r,c], f8 of 2r x 2c, f4 of 4r x 4c) -> four terms for `decode_region`. Only where
        `decodes_regions`. The terms are for this runner's `decode_region` alone: a runner may keep them in
        its own precision and layout (eager bf16 does)."""
        ...

    def decode_region(
        self, readout: torch.Tensor, query_term: torch.Tensor, query_shortcut: torch.Tensor, skip8: torch.Tensor,
        skip4: torch.Tensor,
    ) -> torch.Tensor:
        """`decode` on a crop of r x c cells: the readout cut to it and `decode_frame_terms`' outputs cut to the
        same cells (2r x 2c of skip8, 4r x 4c of skip4) -> logits [N,1,16r,16c]. Only where `decodes_regions`.
        The terms have batch 1 (one crop), or N (each object's own crop) where `batches_regions`."""
        ...


class PartRunner(ABC):
    """A NetworkRunner built on one `run_part` call: the calling convention of the three network calls
    lives here once, and each backend only says how it runs one exported part (parts.py)."""

    name: str
    device: torch.device
    decodes_regions: bool = False
    batches_regions: bool = False
    encodes_regions: bool = False

    @abstractmethod
    def run_part(self, part: str, objects: int, *inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        """Runs `part` (one of parts.PART_NAMES) for `objects` objects; inputs and outputs in the order of
        parts.INPUT_NAMES / OUTPUT_NAMES; outputs are float32 tensors on `self.device` the caller may own (the
        decoder's frame terms excepted: see `NetworkRunner.decode_frame_terms`)."""

    def encode_key(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        key, query_value, f16, f8, f4 = self.run_part("key_encoder", 1, image)
        return key, query_value, f16, f8, f4

    def encode_value(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        return self.run_part("value_encoder", masks.shape[0], image, key_f16, masks, others)[0]

    def encode_value_local(
        self, image: torch.Tensor, key_f16: torch.Tensor, masks: torch.Tensor, others: torch.Tensor
    ) -> torch.Tensor:
        self._check_regions(self.encodes_regions, "encodes values of whole frames only (encodes_regions is False)")
        return self.run_part(VALUE_LOCAL, masks.shape[0], image, key_f16, masks, others)[0]

    def encode_value_global(self, local: torch.Tensor) -> torch.Tensor:
        self._check_regions(self.encodes_regions, "encodes values of whole frames only (encodes_regions is False)")
        return self.run_part(VALUE_GLOBAL, local.shape[0], local)[0]

    def decode(
        self, readout: torch.Tensor, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        return self.run_part("decoder", readout.shape[0], readout, query_value, f8, f4)[0]

    def decode_frame_terms(
        self, query_value: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check_regions(self.decodes_regions, "decodes whole frames only (decodes_regions is False)")
        query_term, query_shortcut, skip8, skip4 = self.run_part(FRAME_TERMS, 1, query_value, f8, f4)
        return query_term, query_shortcut, skip8, skip4

    def decode_region(
        self, readout: torch.Tensor, query_term: torch.Tensor, query_shortcut: torch.Tensor, skip8: torch.Tensor,
        skip4: torch.Tensor,
    ) -> torch.Tensor:
        self._check_regions(self.decodes_regions, "decodes whole frames only (decodes_regions is False)")
        return self.run_part(REGION_DECODER, readout.shape[0], readout, query_term, query_shortcut, skip8, skip4)[0]

    def _check_regions(self, runs: bool, otherwise: str) -> None:
        if not runs:
            raise BackendUnavailable(f"the {self.name} runner {otherwise}")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine; the message says why."""


def module_installed(name: str) -> bool:
    """True for a real, importable package; False when absent or only a stub/namespace directory exists
    (a `pip install tensorrt-stubs` into site-packages leaves a `tensorrt/` with only `.pyi` files)."""
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


def unavailable_reason(what: str, package: str, device: torch.device | None, install_hint: str) -> str | None:
    """Why a GPU backend (`what`, from Python package `package`) cannot run on `device`, or None.

    Imports nothing: CUDA is checked before the package is even looked for, because TensorRT's lean
    wheels import fine and then crash on the first engine without a GPU.
    """
    if not torch.cuda.is_available():
        return f"CUDA is not available (torch.cuda.is_available() is False): {what} needs an NVIDIA GPU"
    if device is not None and device.type != "cuda":
        return f"{what} needs a CUDA device, got device {device}"
    if not module_installed(package):
        return f"the {package} Python package is not installed ({install_hint})"
    return None
