"""Where each object can be now: a soft window around where it was on the previous frame.

An appearance matcher (STCN's readout, TMRN's) scores every pixel that looks like the object, so a
look-alike elsewhere in the frame (a second dog, a retinted copy) is painted as the object. Objects move
a bounded distance between frames, so each object's probability is multiplied by a window that is 1 on
its previous bounding box and falls off as a Gaussian outside it, with a width proportional to the box's
size (large objects move more pixels per frame). Objects with no previous mask (just lost, fully
occluded) get no window, so they can be found again anywhere. Cost: one [H] and one [W] vector per object.

Optional refinements (PriorConfig): the window can move ahead with the object's last motion
(`velocity`); a mask that falls apart into separate pieces can be cut back to the pieces that fit the
track (`split: track`, edge_vos/tracker/pieces.py), which stops a look-alike that overlapped the object
from leaving with part of its mask (the window alone follows whatever the mask is on, so it cannot undo
a mask that has already taken something in); and an object whose mask suddenly shrinks can be scaled
back up inside its window (`hold`), so one unsure frame does not lose it and teach the memory the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from edge_vos.model.preprocess import Rect
from edge_vos.tracker.config import PriorConfig
from edge_vos.tracker.pieces import Box, keep_track_pieces

# A pixel counts as the object's when its aggregated probability is above this (argmax of two classes).
_PRESENT = 0.5
# Smoothing of the reference area (the object's usual size) from frame to frame.
_AREA_EMA = 0.3
# Frames a "merged" state may last before the merged size becomes the object's size (a real growth:
# the object came closer, an occluder left).
_MAX_MERGED_FRAMES = 30
# Frames after a merge ends during which the velocity keeps its pre-merge value.
_SETTLE_FRAMES = 3
# `hold` scales a fading object's probabilities by at most this: below 1/_MAX_GAIN of _PRESENT a pixel
# is too unlike the object to be called it.
_MAX_GAIN = 3.0
# Below this windowed probability not even `hold`'s largest gain brings a pixel to _PRESENT: where the
# window is lower the object cannot be called, which is where `reach` ends.
_REACH_FLOOR = _PRESENT / _MAX_GAIN
# The distance outside the box, in window widths, at which the Gaussian falls to _REACH_FLOOR.
_REACH_WIDTHS = math.sqrt(2 * math.log(1 / _REACH_FLOOR))


# Per object, the rows and columns of the canvas outside which its plane is 0 (None: anywhere).
Regions = list[Rect | None] | None


@dataclass
class _Track:
    """One object's state between frames (working-canvas pixels)."""

    box: Box  # last observed box: the window's centre
    velocity: tuple[float, float] = (0.0, 0.0)  # last motion (rows, columns per frame), from the box's edges
    area: float = 0.0  # reference area: what the object covered before any sudden growth
    # While merged (the mask grew past `growth` x area in one go): the object's box before the growth,
    # moved on by the velocity each frame; pieces are judged against it instead of the merged box.
    anchor: Box | None = None
    merged_frames: int = 0
    settling: int = 0  # frames left, after a merge, before the velocity follows the box again


class MotionPrior:
    """Previous boxes per object id, and the windows they imply for the next frame."""

    def __init__(self, config: PriorConfig) -> None:
        self.config = config
        self._tracks: dict[int, _Track] = {}

    def clear(self) -> None:
        self._tracks.clear()

    def forget(self, obj_id: int) -> None:
        self._tracks.pop(obj_id, None)

    def windows(self, ids: list[int], hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """[len(ids),1,H,W] multipliers in (0, 1]; all ones for objects without a previous box."""
        out = torch.ones(len(ids), 1, *hw, device=device)
        return self.weigh(ids, out)

    def weigh(self, ids: list[int], probs: torch.Tensor, regions: Regions = None) -> torch.Tensor:
        """Multiplies each object's probabilities [len(ids),1,H,W] by its window, in place (the same values
        as `probs * windows(...)`); objects without a previous box are left as they are. `regions`: per
        object, the rows and columns outside which its plane is 0 (None: anywhere); only they are touched."""
        h, w = probs.shape[-2:]
        ys = torch.arange(h, device=probs.device, dtype=torch.float32)
        xs = torch.arange(w, device=probs.device, dtype=torch.float32)
        for row, obj_id in enumerate(ids):
            track = self._tracks.get(obj_id)
            if track is None:
                continue
            box = self._window_box(track)
            rows, cols = _region(regions, row)
            wy = _falloff(ys[rows], box.y0, box.y1, self._width(box.height))
            wx = _falloff(xs[cols], box.x0, box.x1, self._width(box.width))
            probs[row, 0, rows, cols].mul_(torch.outer(wy, wx))
        return probs

    def reach(self, ids: list[int], hw: tuple[int, int]) -> list[Box | None]:
        """Per object, the box (canvas pixels, clipped to `hw`) outside which its window is too low for the
        object to be called there; None for an object without a previous box (it may be anywhere). The
        tracker decodes each object only inside it."""
        h, w = hw
        boxes: list[Box | None] = []
        for obj_id in ids:
            track = self._tracks.get(obj_id)
            if track is None:
                boxes.append(None)
                continue
            box = self._window_box(track)
            dy, dx = _REACH_WIDTHS * self._width(box.height), _REACH_WIDTHS * self._width(box.width)
            boxes.append(Box(max(0.0, box.y0 - dy), min(h - 1.0, box.y1 + dy),
                             max(0.0, box.x0 - dx), min(w - 1.0, box.x1 + dx)))
        return boxes

    def select(self, ids: list[int], probs: torch.Tensor, regions: Regions = None) -> torch.Tensor:
        """Applies `split: track` and `hold` to each object's windowed probabilities.

        probs: [len(ids),1,H,W] per-object probabilities before aggregation; returned changed in place.
        regions: as `weigh`'s; the same result, found on the region alone.
        """
        if self.config.split != "track" and not self.config.hold:
            return probs
        for row, obj_id in enumerate(ids):
            track = self._tracks.get(obj_id)
            if track is None:
                continue
            rows, cols = _region(regions, row)
            plane = probs[row, 0, rows, cols]
            if self.config.split == "track":
                reference = (track.anchor if track.anchor is not None else track.box).shifted(*track.velocity)
                keep_track_pieces(
                    plane, reference.shifted(-(rows.start or 0), -(cols.start or 0)), _PRESENT,
                    self.config.keep_inside, self.config.min_margin_px,
                )
            if self.config.hold:
                _hold(plane, self.config.hold * track.area, probs[row, 0].numel())
        return probs

    def update(self, ids: list[int], probs: torch.Tensor, regions: Regions = None) -> None:
        """Remembers each object's box from this frame's aggregated probabilities [O,1,H,W] (ids order).
        regions: per object, the rows and columns outside which it is below _PRESENT (None: anywhere)."""
        for i, obj_id in enumerate(ids):
            rows, cols = _region(regions, i)
            present = probs[i, 0, rows, cols] > _PRESENT
            r = torch.nonzero(present.any(dim=1)).flatten()
            if r.numel() == 0:
                self._tracks.pop(obj_id, None)
                continue
            c = torch.nonzero(present.any(dim=0)).flatten()
            top, left = rows.start or 0, cols.start or 0
            box = Box(int(r[0]) + top, int(r[-1]) + top, int(c[0]) + left, int(c[-1]) + left)
            area = float(present.sum())
            track = self._tracks.get(obj_id)
            if track is None:
                self._tracks[obj_id] = _Track(box, area=area)
            else:
                self._tracks[obj_id] = self._advance(track, box, area)

    def _advance(self, track: _Track, box: Box, area: float) -> _Track:
        """The track after one more frame: its velocity and usual size keep their pre-merge values
        while the mask is larger than the object (merged with a look-alike), so they still describe
        the object when the two part."""
        vy, vx = track.velocity
        if track.anchor is not None:
            ended = area <= self.config.growth * track.area or track.merged_frames >= _MAX_MERGED_FRAMES
            if not ended:
                return replace(track, box=box, anchor=track.anchor.shifted(vy, vx),
                               merged_frames=track.merged_frames + 1)
            # Back to its size: the look-alike left, or stands right on the object, so the box may still
            # be moved by it for a few frames: the velocity waits.
            area_ref = area if area > self.config.growth * track.area else track.area
            return _Track(box, track.velocity, area_ref, settling=_SETTLE_FRAMES)
        if self.config.split == "track" and area > self.config.growth * track.area:
            return replace(track, box=box, anchor=track.box.shifted(vy, vx), merged_frames=1)
        if track.settling:
            return _Track(box, track.velocity, track.area, settling=track.settling - 1)
        area_ref = (1 - _AREA_EMA) * track.area + _AREA_EMA * area
        old = track.box
        vy = _shift(old.y0, old.y1, box.y0, box.y1, track.velocity[0])
        vx = _shift(old.x0, old.x1, box.x0, box.x1, track.velocity[1])
        return _Track(box, (vy, vx), area_ref)

    def _window_box(self, track: _Track) -> Box:
        """The box the window is 1 on: the previous box, moved ahead by `velocity` of its last motion."""
        lead = self.config.velocity
        return track.box.shifted(lead * track.velocity[0], lead * track.velocity[1])

    def _width(self, extent: float) -> float:
        return max(self.config.margin * extent, self.config.min_margin_px)


def _shift(lo0: float, hi0: float, lo1: float, hi1: float, last: float) -> float:
    """How far an object moved along one axis, from its box's two edges: the smaller edge motion when both
    edges moved the same way. When only one moved, or they moved apart or together, the box changed size,
    which says nothing of the motion (something touching the object, a limb stretching, a leak into the
    background): the last motion stands."""
    a, b = lo1 - lo0, hi1 - hi0
    if a == b == 0:
        return 0.0
    if a * b <= 0:
        return last
    return a if abs(a) < abs(b) else b


def _hold(plane: torch.Tensor, area: float, canvas: int) -> None:
    """Scales an object's probabilities up (at most _MAX_GAIN x) so that about `area` pixels pass
    _PRESENT, when fewer do: a matcher unsure of an object next to its look-alikes fades it for a
    frame or two, and a frame it vanishes from goes to memory as background and teaches the loss.
    `plane` may be the region of a canvas of `canvas` pixels outside which the object's plane is 0."""
    k = int(area)
    if k < 1 or k > canvas or int((plane > _PRESENT).sum()) >= k:
        return
    # The k-th largest over the canvas: the region's, or one of the zeros outside it.
    kth = float(plane.flatten().kthvalue(plane.numel() - k + 1).values) if k <= plane.numel() else 0.0
    gain = min(_PRESENT / max(kth, 1e-6) * 1.01, _MAX_GAIN)
    plane.mul_(gain).clamp_(max=1.0)


def _region(regions: Regions, row: int) -> Rect:
    region = regions[row] if regions is not None else None
    return region if region is not None else (slice(None), slice(None))


def _falloff(coords: torch.Tensor, lo: float, hi: float, width: float) -> torch.Tensor:
    """1 inside [lo, hi], exp(-d^2 / (2 width^2)) at distance d outside."""
    d = torch.clamp(lo - coords, min=0) + torch.clamp(coords - hi, min=0)
    return torch.exp(-0.5 * (d / width) ** 2)
