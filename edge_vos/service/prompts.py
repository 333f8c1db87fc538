"""Prompts and the command policy: what the inference thread prompts on each frame, and how the commands
that change tracking are applied. Used by the inference thread only (it owns the tracker), between frames.

- The initial prompt (`prompt.mask`, or the source's own mask) is fitted to the first frame by the
  `prompt.resize` policy; a mask that cannot fit is a StartupError: the operator's configuration is wrong.
- An `add` for the next frame waits here, combined with the other adds for that frame (a later command wins
  where masks overlap), and is answered after that frame's step with the pixels it got.
- An `add` for a recent frame, `remove` and `reset` apply at once (`add_prompt`, `remove_object`, `reset`).
- A correction (`add` with `"correct": true`) applies at once to a recent frame: its clicks refine the object's
  mask on that frame (the tracker's own output, kept here with the frame), and the result is prompted there
  (`add_prompt`), so the tracker goes on from the corrected mask. The reply carries the corrected mask.
- The object limit counts the tracked objects and those waiting to be added.
Every command gets exactly one reply through the `reply(token, body)` callback.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_vos.config import ConfigError
from edge_vos.prompt import PromptError, with_coarse_mask
from edge_vos.prompt.methods import PromptMasks
from edge_vos.service.capture import Frame
from edge_vos.service.commands import AddObject, CommandError, PendingCommand, RemoveObject, Reset, fit_mask
from edge_vos.service.config import PromptConfig
from edge_vos.tracker import TrackerInputError
from edge_vos.wire.protocol import encode_rle_counts

log = logging.getLogger(__name__)

Reply = Callable[[int, dict[str, Any]], None]


class TrackerLike(Protocol):
    """What the service needs of edge_vos.tracker.Tracker (tests drive the service with a fake). Input it
    refuses raises edge_vos.tracker.TrackerInputError before any state changes."""

    @property
    def object_ids(self) -> list[int]: ...

    def step(
        self, image: np.ndarray, mask: np.ndarray | None = None, objects: list[int] | None = None, *,
        defer_memory_write: bool = False,
    ) -> Any: ...

    def write_deferred_memory(self) -> float:
        """Runs the memory write a step(defer_memory_write=True) left; returns its ms (0: none)."""
        ...

    def add_prompt(self, image: np.ndarray, mask: np.ndarray, objects: list[int] | None = None) -> None: ...

    def remove_object(self, obj_id: int) -> None: ...

    def reset(self) -> None: ...


class StartupError(RuntimeError):
    """A configuration problem that shows only once frames arrive (e.g. the prompt mask's size)."""


def load_prompt_mask(path: str | Path) -> np.ndarray:
    """A palette or greyscale PNG label map (pixel value = object id)."""
    from edge_vos.data.davis import read_mask

    path = Path(path)
    if not path.is_file():
        raise ConfigError("prompt.mask", f"file not found: {path}")
    try:
        return read_mask(path)
    except (ValueError, OSError) as exc:
        raise ConfigError("prompt.mask", str(exc)) from None


@dataclass
class FramePrompt:
    """What to prompt on one frame: a label map and the ids it prompts (both None: nothing), and the add
    commands it carries with the pixels each got (answered after the step)."""

    labels: np.ndarray | None = None
    objects: list[int] | None = None
    commands: list[tuple[PendingCommand, int]] | None = None
    initial: bool = False  # it carries the initial prompt


def _reply_body(ok: bool, **fields: Any) -> dict[str, Any]:
    return {"ok": ok, **fields}


class PromptBook:
    def __init__(self, tracker: TrackerLike, config: PromptConfig, max_objects: int, history: int, reply: Reply,
                 initial_mask: np.ndarray | None = None, prompt_masks: PromptMasks | None = None,
                 stream_id: str = "") -> None:
        self.tracker, self.config, self.max_objects, self.reply = tracker, config, max_objects, reply
        self.stream_id = stream_id  # names the stream in the log, where several cameras share one
        # Turns a box / clicks into a mask by the command's method (the learned network, loaded once by the
        # service at start-up, or GrabCut).
        self.prompt_masks = prompt_masks or PromptMasks(
            config.weights or None, box_weights=config.box_weights or None,
            correction_weights=config.correction_weights or None)
        self.initial_mask = initial_mask
        self.history: collections.deque[Frame] = collections.deque(maxlen=history)  # recent frames, for `frame`
        self.tracked_labels: dict[int, np.ndarray] = {}  # capture seq -> the label map tracked (recent frames)
        self._next: list[PendingCommand] = []  # adds waiting for the next frame

    def remember(self, frame: Frame) -> None:
        self.history.append(frame)

    def tracked(self, frame: Frame, labels: np.ndarray) -> None:
        """The tracker's label map for a recent frame: what a correction on that frame starts from."""
        kept = {f.seq for f in self.history}
        self.tracked_labels = {seq: m for seq, m in self.tracked_labels.items() if seq in kept}
        if frame.seq in kept:
            self.tracked_labels[frame.seq] = labels

    @property
    def recent(self) -> tuple[int, int] | None:
        return (self.history[0].seq, self.history[-1].seq) if self.history else None

    # ---- commands --------------------------------------------------------------------------------

    def apply(self, pending: PendingCommand) -> None:
        """Applies one command from the control thread, or keeps it for the next frame. Any exception it
        raises (a bug, a tracker failure) becomes this command's error reply: no command ends the thread."""
        if pending.cancelled.is_set():  # its reply timed out: the client was told it was not applied
            return
        command = pending.command
        try:
            body = self._apply(pending)
        except (CommandError, TrackerInputError) as exc:
            body = exc.to_reply() if isinstance(exc, CommandError) else _reply_body(False, error=str(exc))
        except Exception as exc:
            log.exception("stream %s: %s command failed", self.stream_id, command.name)
            body = _reply_body(False, error=f"internal error: {exc!r}")
        if body is not None:
            self.reply(pending.token, body)

    def _apply(self, pending: PendingCommand) -> dict[str, Any] | None:
        cmd = pending.command
        tracked = list(self.tracker.object_ids)
        if isinstance(cmd, Reset):
            self.tracker.reset()
            self.cancel_waiting("cancelled by reset")
            return _reply_body(True)
        if isinstance(cmd, RemoveObject):
            if cmd.obj_id not in tracked:
                raise CommandError("id", f"unknown object id {cmd.obj_id}; tracking {tracked}")
            self.tracker.remove_object(cmd.obj_id)
            return _reply_body(True, id=cmd.obj_id, objects=list(self.tracker.object_ids))
        if not isinstance(cmd, AddObject):
            raise CommandError("cmd", f"{cmd.name} is not applied by the inference thread")
        if cmd.correct:
            return self._correct(cmd, tracked)
        waiting_new = set(self.waiting_objects()) - set(tracked)
        if cmd.obj_id not in tracked and cmd.obj_id not in waiting_new:
            if len(tracked) + len(waiting_new) + 1 > self.max_objects:
                raise CommandError("id", f"cannot track more than {self.max_objects} objects "
                                         f"(tracking {tracked}, waiting to add {sorted(waiting_new)})")
        if cmd.frame is None:
            self._next.append(pending)  # applied with the next frame; answered after its step
            return None
        frame = self._recent_frame(cmd.frame)
        mask = self._object_mask(cmd, frame)
        self.tracker.add_prompt(frame.image, mask.astype(np.uint8) * np.uint8(cmd.obj_id), [cmd.obj_id])
        return _reply_body(True, id=cmd.obj_id, frame=frame.seq, area=int(mask.sum()))

    def _recent_frame(self, seq: int | None) -> Frame:
        """The kept frame `seq` (None: the latest), or a CommandError naming the range kept."""
        frame = self.history[-1] if seq is None and self.history else next(
            (f for f in self.history if f.seq == seq), None)
        if frame is None:
            span = "{}..{}".format(*self.recent) if self.recent else "none yet"
            raise CommandError("frame", f"frame {seq} is not among the recent frames ({span})")
        return frame

    def _correct(self, cmd: AddObject, tracked: list[int]) -> dict[str, Any]:
        """Refines object `cmd.obj_id`'s mask on a recent frame with the command's clicks, starting from the
        mask it has there, and prompts the tracker with the result on that frame."""
        if cmd.obj_id not in tracked:
            raise CommandError("id", f"object {cmd.obj_id} is not tracked, so there is nothing to correct "
                                     f"(tracking {tracked}); add it without \"correct\"")
        seq = max(self.tracked_labels, default=None) if cmd.frame is None else cmd.frame  # None: the latest tracked
        frame = self._recent_frame(seq)
        labels = self.tracked_labels.get(frame.seq)
        if labels is None:  # kept, but its step failed or has not run: there is no mask to start from
            raise CommandError("frame", f"frame {frame.seq} has no tracked masks to correct; pick another frame")
        if cmd.prompt is None:
            raise CommandError("points", "the correction carries no clicks")
        _check_frame_size(cmd, labels.shape[:2])
        try:
            prompt = with_coarse_mask(cmd.prompt, labels == cmd.obj_id)
        except PromptError as exc:
            raise CommandError(exc.field, f"object {cmd.obj_id} on frame {frame.seq}: {exc.message}") from None
        mask = self._object_mask(AddObject(cmd.obj_id, prompt=prompt, method=cmd.method), frame)
        self.tracker.add_prompt(frame.image, mask.astype(np.uint8) * np.uint8(cmd.obj_id), [cmd.obj_id])
        corrected = labels.copy()
        corrected[corrected == cmd.obj_id] = 0
        corrected[mask] = cmd.obj_id
        self.tracked_labels[frame.seq] = corrected  # a next correction on this frame starts from this one
        h, w = mask.shape
        return _reply_body(True, id=cmd.obj_id, frame=frame.seq, area=int(mask.sum()), corrected=True,
                           rle={"size": [h, w], "counts": encode_rle_counts(mask)})

    def waiting_objects(self) -> list[int]:
        """Ids the next frame will prompt: the initial prompt's and the waiting adds'."""
        ids = [int(v) for v in np.unique(self.initial_mask) if v] if self.initial_mask is not None else []
        return ids + [p.command.obj_id for p in self._next if isinstance(p.command, AddObject)]

    def cancel_waiting(self, reason: str) -> None:
        """Answers the adds still waiting for a frame (reset, or the service stopping)."""
        for pending in self._next:
            self.reply(pending.token, _reply_body(False, error=reason))
        self._next = []

    # ---- the next frame --------------------------------------------------------------------------

    def for_frame(self, frame: Frame) -> FramePrompt:
        """The label map and ids to prompt on `frame`: the initial prompt, then the waiting adds."""
        h, w = frame.image.shape[:2]
        labels: np.ndarray | None = None
        objects: list[int] = []
        if self.initial_mask is not None:
            try:
                labels = fit_mask(self.initial_mask, (h, w), self.config.resize, self.config.resize_tolerance,
                                  field="prompt.mask", resize_hint="set prompt.resize: true, or --set "
                                  "prompt.resize=true,").astype(np.uint8)
            except CommandError as exc:  # the operator's prompt cannot apply: stop rather than track nothing
                raise StartupError(str(exc)) from None
            objects = [int(v) for v in np.unique(labels) if v != 0]
        carried: list[tuple[PendingCommand, int]] = []
        waiting, self._next = self._next, []
        for pending in waiting:
            cmd = pending.command
            if pending.cancelled.is_set() or not isinstance(cmd, AddObject):
                continue
            try:
                mask = self._object_mask(cmd, frame)
            except CommandError as exc:
                self.reply(pending.token, exc.to_reply())
                continue
            except Exception as exc:  # e.g. OpenCV failing inside a segmentation method
                log.exception("stream %s: making the mask of add %s failed", self.stream_id, cmd.obj_id)
                self.reply(pending.token, _reply_body(False, error=f"internal error: {exc!r}"))
                continue
            if labels is None:
                labels = np.zeros((h, w), np.uint8)
            labels[mask] = cmd.obj_id
            if cmd.obj_id not in objects:
                objects.append(cmd.obj_id)
            carried.append((pending, int(mask.sum())))
        if labels is None:
            return FramePrompt()
        present = set(np.unique(labels).tolist())
        # An object painted over entirely by a later one has nothing left to prompt with.
        for pending, _ in [c for c in carried if c[0].command.obj_id not in present]:
            self.reply(pending.token, _reply_body(False, error="mask entirely covered by a later object's mask"))
        carried = [c for c in carried if c[0].command.obj_id in present]
        objects = [o for o in objects if o in present]
        initial = self.initial_mask is not None
        return FramePrompt(labels if objects else None, objects or None, carried, initial)

    def answer(self, prompt: FramePrompt, frame_seq: int) -> None:
        """The prompt was applied on frame `frame_seq`: each add command learns its frame and area."""
        if prompt.initial:
            self.initial_mask = None  # applied; until then a frame the tracker failed on keeps it waiting
            log.info("stream %s: initial prompt applied on frame %d: objects %s", self.stream_id, frame_seq,
                     prompt.objects)
        for pending, area in prompt.commands or []:
            cmd = pending.command
            self.reply(pending.token, _reply_body(True, id=cmd.obj_id, frame=frame_seq, area=area))

    def refuse(self, prompt: FramePrompt, error: str) -> None:
        """The prompt was not applied (the tracker refused it or failed): each add command is told why; the
        initial prompt waits for the next frame."""
        for pending, _ in prompt.commands or []:
            self.reply(pending.token, _reply_body(False, error=error))

    def _object_mask(self, cmd: AddObject, frame: Frame) -> np.ndarray:
        h, w = frame.image.shape[:2]
        _check_frame_size(cmd, (h, w))
        if cmd.prompt is not None:
            try:
                mask = self.prompt_masks(frame.image, cmd.prompt, cmd.method)
            except PromptError as exc:
                raise CommandError(exc.field, exc.message) from None
            if not mask.any():
                raise CommandError("box" if cmd.prompt.box is not None else "points",
                                   f"method {cmd.method} found no object for this prompt; add a click on the "
                                   "object or try another method")
            return mask
        if cmd.mask is None:
            raise CommandError("mask", "the command carries neither a mask nor a prompt")
        return cmd.mask


def _check_frame_size(cmd: AddObject, frame_hw: tuple[int, int]) -> None:
    """The one check that an add fits the frame it is applied to. The control thread decoded it at the
    stream's size when it arrived; the stream may have changed size since (a camera reconnecting)."""
    given = cmd.prompt.frame_hw if cmd.prompt is not None else cmd.mask.shape[:2] if cmd.mask is not None else None
    if given is None or tuple(given) == frame_hw:
        return
    field = "mask" if cmd.prompt is None else "box" if cmd.prompt.box is not None else "points"
    (gh, gw), (h, w) = given, frame_hw
    raise CommandError(field, f"the {'mask' if cmd.prompt is None else 'prompt'} was given for a {gw}x{gh} frame "
                              f"but the frame is {w}x{h}")
