"""The streaming tracker: one `step()` per frame, composing encoders, ring memory, readout and decoder.

Per frame: encode the key once; if objects are tracked, read the memory out and decode all objects in one
batch; apply a prompt mask if one came with the frame; aggregate objects softly; write the frame to
memory when it is a prompt (pinned) or every `mem_every` frames (ring). Nothing here knows about I/O.

The memory write (the value encoder) can be deferred: `step(..., defer_memory_write=True)` returns the
label map first and `write_deferred_memory()` encodes the frame into memory afterwards, so a memory frame
does not delay its own mask. A write still pending when anything else is called is done first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from edge_vos.backends.base import NetworkRunner
from edge_vos.model.network import STCN
from edge_vos.model.preprocess import (
    FrameGeometry,
    frame_geometry,
    image_to_tensor,
    input_footprint,
    masks_to_tensor,
    to_input_size,
)
from edge_vos.readout.build import Readout, build_readout
from edge_vos.tracker.aggregate import label_map, soft_aggregate
from edge_vos.tracker.config import TrackerConfig
from edge_vos.tracker.engines import TrackerEngines
from edge_vos.tracker.errors import TrackerInputError
from edge_vos.tracker.inputs import check_image
from edge_vos.tracker.inputs import prompt_ids as check_prompt
from edge_vos.tracker.memory import RingMemory
from edge_vos.tracker.objects import ObjectManager
from edge_vos.tracker.prior import MotionPrior
from edge_vos.tracker.regions import PixelRegion, decode_objects, encode_values

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    frame_index: int
    labels: np.ndarray  # uint8 [H,W], object ids, 0 = background
    object_ids: list[int]
    probabilities: np.ndarray  # float32 [O,H,W] in object_ids order
    # "total" always; per stage (key_encode, readout, decode, ...) only with TrackerConfig.profile
    timings_ms: dict[str, float] = field(default_factory=dict)
    memory_written: bool = False


@dataclass
class _Frame:
    """Per-frame feature store: what the encoders produced, reused by decode and memory writing."""

    image: torch.Tensor
    key: torch.Tensor
    query_value: torch.Tensor
    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor


@dataclass
class _MemoryWrite:
    """A memory write decided by step() and run later (defer_memory_write=True)."""

    runner: NetworkRunner
    frame: _Frame
    probs: torch.Tensor
    ids: list[int]
    pin: bool
    frame_index: int


class Tracker:
    def __init__(
        self, config: TrackerConfig | None = None, network: STCN | None = None, readout: Readout | None = None,
        engines: TrackerEngines | None = None,
    ) -> None:
        """`network`: instead of loading the configured weights; `readout`: instead of the configured one (the
        reference readouts of tests/readout_reference.py in tools/bench_readout.py); `engines`: the network and
        runners shared with other streams' trackers (tracker/engines.py), instead of its own."""
        self.config = config or TrackerConfig()
        if engines is None:
            engines = TrackerEngines(self.config, network)
        engines.check_compatible(self.config)  # ValueError naming what differs
        self.engines = engines
        self.device = engines.device
        self.network = engines.network
        self.objects = ObjectManager(self.config.max_objects)
        self.precision = engines.precision
        self.memory_dtype = self._memory_dtype()
        self._geometry: FrameGeometry | None = None
        self._memory: RingMemory | None = None
        self._readout = readout or build_readout(self.config.readout)  # owns what it keeps per stream
        self._prior = MotionPrior(self.config.prior) if self.config.prior.enabled else None
        self.frame_index = -1
        self._last_write = -(10**9)
        self._pending_write: _MemoryWrite | None = None

    # ---- public API ----------------------------------------------------------------------------

    @property
    def object_ids(self) -> list[int]:
        return self.objects.ids

    @property
    def memory(self) -> RingMemory | None:
        return self._memory

    def reset(self) -> None:
        """Forgets every object and the memory; the next frame starts a new stream."""
        self._pending_write = None
        self.objects.clear()
        if self._memory is not None:
            self._memory.clear()
        self._readout.reset()
        if self._prior is not None:
            self._prior.clear()
        self._last_write = -(10**9)

    def remove_object(self, obj_id: int) -> None:
        if obj_id in self.objects.ids:  # an unknown id raises below, with the pending write left as it was
            self.write_deferred_memory()
        index = self.objects.remove(obj_id)
        if self._prior is not None:
            self._prior.forget(obj_id)
        if self._memory is not None:
            self._memory.forget_object(index)
        if not len(self.objects):
            self.reset()

    @torch.no_grad()
    def step(
        self, image: np.ndarray, mask: np.ndarray | None = None, objects: list[int] | None = None, *,
        defer_memory_write: bool = False,
    ) -> StepResult:
        """Tracks every object into `image` (RGB uint8 [H,W,3]); `mask` prompts objects on this frame.

        With `defer_memory_write`, a frame that goes to memory is only encoded into it by the next
        `write_deferred_memory()` (or the next call that needs the memory): call that after handing the
        result on. `memory_written` is True either way.
        """
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        geometry, prompt_ids = self._prepare(image, mask, objects)
        if self._pending_write is not None:  # the caller did not write the previous frame: it goes in first
            written_ms = self.write_deferred_memory()
            if self.config.profile:
                timings["deferred_write"] = written_ms
        self.frame_index += 1
        tracked = [i for i in self.objects.ids if i not in prompt_ids]
        # Built (an engine exported, maybe) on a stream's first frame, objects or not: the first prompt of a
        # live stream must not wait for it.
        runner = self._runner(geometry)
        if not tracked and not prompt_ids:
            empty = np.zeros((geometry.in_h, geometry.in_w), np.uint8)
            return self._result(empty, [], np.zeros((0, geometry.in_h, geometry.in_w), np.float32), timings, t_start)

        with self._timed(timings, "preprocess"):
            image_t = image_to_tensor(image, geometry, self.device)
        with self._timed(timings, "key_encode"):
            frame = _Frame(image_t, *runner.encode_key(image_t))

        # Probabilities on the padded working canvas, one per object in internal-index order.
        for obj_id in prompt_ids:
            self.objects.add(obj_id)
        order = self.objects.ids
        memory = self._memory_or_fail()
        readable = [i for i in tracked if memory.has_memory_for(self.objects.index(i))]
        predicted: torch.Tensor | None = None  # [len(readable),1,H,W]
        regions: list[PixelRegion | None] = []  # per readable object, where its plane may be nonzero
        if readable:
            with self._timed(timings, "readout"):
                view = memory.view([self.objects.index(i) for i in readable])
                qk = frame.key.to(self.memory_dtype)
                memory_readout = self._readout(qk, view.keys, view.values, view.valid, view.slot_versions)[0].float()
            with self._timed(timings, "decode"):
                # each object only where its window lets it be (regions.py); the planes are ours from here on
                reach = None
                if self._prior is not None and self.config.prior.decode_inside:
                    reach = self._prior.reach(readable, geometry.padded_hw)
                predicted, regions = decode_objects(
                    runner, memory_readout, frame.query_value, frame.f8, frame.f4, reach
                )
            if self._prior is not None:
                with self._timed(timings, "prior"):
                    predicted = self._prior.select(readable, self._prior.weigh(readable, predicted, regions), regions)
        if predicted is not None and readable == order:  # every object predicted (no prompt, no new object)
            probs = predicted
        else:
            probs = torch.zeros(len(order), 1, *geometry.padded_hw, device=self.device)
            if predicted is not None:
                probs[[order.index(i) for i in readable]] = predicted
        if prompt_ids:
            if mask is None:  # _prepare takes prompt ids from the mask only
                raise RuntimeError("internal error: prompted objects without a mask")
            prompt = self._mask_probabilities(mask, prompt_ids, geometry)
            union = prompt.amax(dim=0, keepdim=True)
            probs = probs * (1 - union)  # the given mask wins over predictions where they overlap
            probs[[order.index(i) for i in prompt_ids]] = prompt
        with self._timed(timings, "aggregate"):
            full = soft_aggregate(probs)  # [O+1,1,H,W]
        # Per object, where its plane may be above the aggregation's floor: a cropped object was 0 outside its
        # crop before aggregation, so there it is far below 0.5 and never above background after it.
        cropped = dict(zip(readable, regions, strict=True)) if predicted is not None else {}
        planes_inside = [cropped.get(i) for i in order]
        if self._prior is not None:
            with self._timed(timings, "prior"):
                self._prior.update(order, full[1:], planes_inside)

        written = bool(prompt_ids) or self.frame_index - self._last_write >= self.config.memory.mem_every
        if written:
            self._last_write = self.frame_index
            write = _MemoryWrite(runner, frame, full[1:], order, bool(prompt_ids), self.frame_index)
            if defer_memory_write:
                self._pending_write = write
            else:
                with self._timed(timings, "value_encode"):
                    self._write_memory(write)

        with self._timed(timings, "postprocess"):
            labels, out_probs = self._outputs(full, order, geometry, planes_inside)
        return self._result(labels, order, out_probs, timings, t_start, written)

    @torch.no_grad()
    def write_deferred_memory(self) -> float:
        """Encodes the frame a `step(defer_memory_write=True)` left for memory; returns its ms (0: none). On
        CUDA without TrackerConfig.profile that is the time to queue the work, not to run it."""
        write, self._pending_write = self._pending_write, None
        if write is None:
            return 0.0
        timings: dict[str, float] = {}
        start = time.perf_counter()
        with self._timed(timings, "value_encode"):
            self._write_memory(write)
        return timings.get("value_encode", (time.perf_counter() - start) * 1000)

    @torch.no_grad()
    def add_prompt(self, image: np.ndarray, mask: np.ndarray, objects: list[int] | None = None) -> None:
        """Prompts objects on a recent (already seen) frame: writes it to memory pinned, emits nothing.

        Only the prompted objects get a value in that slot; other objects ignore it.
        """
        geometry, prompt_ids = self._prepare(image, mask, objects, prompt_required=True)
        self.write_deferred_memory()
        for obj_id in prompt_ids:
            self.objects.add(obj_id)
        runner = self._runner(geometry)
        image_t = image_to_tensor(image, geometry, self.device)
        frame = _Frame(image_t, *runner.encode_key(image_t))
        prompt = self._mask_probabilities(mask, prompt_ids, geometry)
        self._write_memory(_MemoryWrite(runner, frame, soft_aggregate(prompt)[1:], prompt_ids, True, self.frame_index))

    # ---- internals -----------------------------------------------------------------------------

    def _memory_dtype(self) -> torch.dtype:
        """Half memory on CUDA only. On a CPU, bf16 means the network's calls in bf16 (backends/torch_backend.py)
        while the memory and the readout stay float32: bf16 keys there lost whole sequences on val-dev
        (docs/benchmarks.md, "step")."""
        precision = self.precision
        if self.device.type != "cuda":
            return torch.float32
        if precision == "fp16":
            return torch.float16
        if precision == "bf16":
            return torch.bfloat16
        return torch.float32

    def _prepare(
        self, image: np.ndarray, mask: np.ndarray | None, objects: list[int] | None, *, prompt_required: bool = False
    ) -> tuple[FrameGeometry, list[int]]:
        """Validates the frame and its prompt, and only then starts a new stream if the frame size changed:
        a rejected frame loses nothing that was accepted before. Returns the geometry and the prompted ids."""
        h, w = check_image(image)
        geometry = self._geometry
        same_size = geometry is not None and (geometry.in_h, geometry.in_w) == (h, w)
        if geometry is None or not same_size:
            geometry = frame_geometry(h, w, self.config.working_short_side(h, w))
        # A new size starts a new stream without objects: the prompt is checked against that.
        tracked = self.objects if same_size else ObjectManager(self.config.max_objects)
        prompt_ids = check_prompt(mask, objects, geometry, tracked)
        if prompt_required and not prompt_ids:
            raise TrackerInputError("the prompt mask holds none of the requested objects")
        if not same_size:
            self._pending_write = None  # it belongs to the stream that ends here
            self._start_stream(geometry)
        return geometry, prompt_ids

    def _start_stream(self, geometry: FrameGeometry) -> None:
        """Forgets objects and memory and allocates the memory for a new frame size."""
        if self._geometry is not None:
            log.warning("frame size changed from %dx%d to %dx%d: memory and objects reset",
                        self._geometry.in_w, self._geometry.in_h, geometry.in_w, geometry.in_h)
            self.objects.clear()
        if self._prior is not None:
            self._prior.clear()
        self._geometry = geometry
        mem = self.config.memory
        self._memory = RingMemory(
            mem.capacity, self.config.max_objects, self.network.key_dim, self.network.value_dim,
            geometry.feature_hw, max_pinned=mem.max_pinned, unbounded=mem.unbounded,
            device=self.device, dtype=self.memory_dtype,
        )
        self._readout.reset()
        self._last_write = -(10**9)

    def _mask_probabilities(self, mask: np.ndarray, ids: list[int], geometry: FrameGeometry) -> torch.Tensor:
        label = torch.from_numpy(mask.astype(np.int64)).to(self.device)
        one_hot = torch.stack([(label == i) for i in ids])[:, None].float()
        return masks_to_tensor(one_hot, geometry).clamp_(0, 1)

    def _runner(self, geometry: FrameGeometry) -> NetworkRunner:
        """The runner for this working size, from the (maybe shared) engines."""
        return self.engines.runner(geometry.padded_hw)

    def _memory_or_fail(self) -> RingMemory:
        if self._memory is None:
            raise RuntimeError("no memory yet")
        return self._memory

    def _write_memory(self, write: _MemoryWrite) -> None:
        probs = write.probs
        others = probs.sum(dim=0, keepdim=True) - probs
        if self.config.memory.encode_inside and not write.pin:  # a prompt's values stay exact: pinned for good
            values = encode_values(write.runner, write.frame.image, write.frame.f16, probs, others)
        else:
            values = write.runner.encode_value(write.frame.image, write.frame.f16, probs, others)
        slot = self._memory_or_fail().write(
            write.frame.key, values, [self.objects.index(i) for i in write.ids], pin=write.pin,
            frame_index=write.frame_index,
        )
        log.debug("frame %d -> memory slot %d (pinned=%s)", write.frame_index, slot, write.pin)

    @staticmethod
    def _outputs(
        full: torch.Tensor, order: list[int], geometry: FrameGeometry, planes_inside: list[PixelRegion | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Label map and per-object probabilities at input size: one resize of the aggregated probabilities
        (none when the working size is the input size); the probabilities are a view of that, not a copy. An
        object with a region in `planes_inside` is never above background outside it, so it is labelled on
        that region's footprint only: the same labels, without a whole frame's pass per object on a crop."""
        # [O+1,1,h,w] resized as a batch of one-channel maps: the same maths as [1,O+1,h,w], whose three-channel
        # case (two objects) torch resizes several times slower
        full = to_input_size(full, geometry)[:, 0]  # [O+1,H,W]
        inside = [None if region is None else input_footprint(region, geometry) for region in planes_inside]
        labels = label_map(full, order, inside).cpu().numpy()
        return labels, full[1:].float().cpu().numpy()

    def _timed(self, timings: dict[str, float], name: str) -> _Timer:
        return _Timer(timings if self.config.profile else None, name, self.device)

    def _result(
        self, labels: np.ndarray, order: list[int], probs: np.ndarray, timings: dict[str, float],
        t_start: float, written: bool = False,
    ) -> StepResult:
        timings["total"] = (time.perf_counter() - t_start) * 1000
        return StepResult(self.frame_index, labels, list(order), probs, timings, written)


class _Timer:
    """Adds the wall time of a block to timings[name] in ms, synchronising CUDA so that the time is the
    stage's and not its launch's; does nothing when `timings` is None (profiling off: a synchronisation per
    stage would stall the GPU's queue on every frame)."""

    def __init__(self, timings: dict[str, float] | None, name: str, device: torch.device) -> None:
        self.timings, self.name, self.device = timings, name, device

    def __enter__(self) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[self.name] = self.timings.get(self.name, 0.0) + (time.perf_counter() - self.start) * 1000
