"""Prompt -> mask with the learned prompt network (`method: learned`).

`PromptSegmenter` holds the network (loaded once; the service keeps one for its lifetime), optionally a
second one for a box alone (`box_model`: every pass of a prompt with a box and no clicks) and a third for
corrections (`correction_model`: every pass of a prompt with clicks and a box or a mask, whose answer the clicks
fix), and turns a validated `Prompt` into a bool mask on the frame (`network_for` says which answers):
- a box: one pass on the window around the box (crops.box_window), box map + any clicks + any coarse mask;
- a coarse mask without a box: one pass on the window around the mask and the positive clicks;
- clicks only: first looks find the object roughly, through several windows: squares around the positive
  clicks of `FIRST_LOOK_SHARES` of the frame's long side, and the whole frame with a margin of
  `FRAME_MARGIN`. In each look the connected parts of its mask that hold a positive click are kept (a look
  sometimes adds a neighbouring thing); the look whose kept parts the network is surest of (the highest mean
  probability over them) wins. With the frame alone, the network often answered a blob around the click,
  mostly on large objects (docs/history/prompt-network-runs.md, "Issue #21, second round"). A second pass
  zooms into the window around the winner and the positive clicks, with it as the coarse mask. When no look
  holds a click, the second pass looks at a square of half the frame's long side around the clicks instead
  (`click_window`).
Then `refine` more passes (two by default): each looks again at the window around the box (or around the
last prediction and the positive clicks) with the last prediction as the coarse mask, so the network corrects
its own mask (holes, bleeding, a part it missed); only the last pass averages with the mirrored crop, and for
the roles in `FINAL_PASS_PARTNERS` with a second network's answer on the same crops (a box alone: the box and
the correction networks, trained on different mixes, err in different places).
Several clicks alone (`chain`, with a correction network of its own): the click network answers the first
positive click (a start: `CHAIN_START_REFINE` refinement passes, none mirrored), and the correction network
answers all the clicks with that start as the object's mask, as if the operator had corrected it click by click.
Last, negative clicks the network ignored (`carve`): where a negative click still lies on the mask, the
part of its connected piece nearer to the negative clicks than to every positive one is taken off. The
network follows negative clicks weakly; ignored, the click protocol would repeat the same click forever.
Every pass runs on an S x S crop whatever the frame size, so a prompt's cost is bounded (docs/model-card.md,
"Prompt network", has the measured times).

`segment(image, box=..., points=..., labels=..., mask=...)` is the convenience function: it uses the
bundled weights through `default_segmenter()`, which loads them on the first call and keeps them for the
life of the process (an explicit `functools.lru_cache`; `default_segmenter.cache_clear()` drops them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import torch

from edge_vos.prompt.crops import (
    Window,
    box_map,
    box_window,
    click_maps,
    click_window,
    crop_image,
    frame_window,
    mask_box,
    paste_back,
    to_crop,
)
from edge_vos.prompt.model import PromptNet, load_weights
from edge_vos.prompt.runtime import Passes, make_passes
from edge_vos.prompt.spec import Prompt, check_image, make_prompt

log = logging.getLogger(__name__)

BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "prompt.safetensors"
# The bundled network for a box alone: the click network fine-tuned with COCO photographs as box samples
# only. COCO annotates a rider and a horse apart where DAVIS has one object; a box settles which is meant,
# a click does not, and the same training lost DAVIS's clicks (docs/history/prompt-network-runs.md, "Fourth round").
BUNDLED_BOX_WEIGHTS = BUNDLED_WEIGHTS.with_name("prompt-box.safetensors")
# The bundled network for corrections (clicks with a box or the object's mask): the click network trained ten
# times longer with COCO photographs. Given clicks alone it loses DAVIS's whole objects (a rider without the
# horse), which a box or a mask settles (docs/history/prompt-network-runs.md, "Eighth round").
BUNDLED_CORRECTION_WEIGHTS = BUNDLED_WEIGHTS.with_name("prompt-correct.safetensors")
# Which network answers a prompt (`network_for`): clicks alone, a box alone, clicks with a box or a mask.
NETWORK_ROLES = ("clicks", "box", "correction")
# A role's last pass also asks this other role's network (mirrored too) and averages the answers: a box alone's
# mask by the box and the correction networks together (docs/history/prompt-network-runs.md, "Ninth round").
# Only when the partner role has its own network; it costs one more mirrored pass per prompt.
FINAL_PASS_PARTNERS: Mapping[str, str] = MappingProxyType({"box": "correction"})
# Several clicks alone are answered as a correction of the first click's answer (`chain`): the click network
# settles which object is meant (DAVIS's whole objects), the correction network, trained on COCO's 80 categories,
# fixes it with the other clicks (docs/history/prompt-network-runs.md, "Ninth round"). The start takes this many
# refinement passes and no mirrored one: the correction network goes over it again.
CHAIN_CLICKS = True
CHAIN_START_REFINE = 1
# Extra passes on the network's own mask (`PromptSegmenter.refine`); chosen on val-dev
# (docs/history/prompt-network-runs.md, "Second round").
DEFAULT_REFINE = 2
# Share of the frame's long side looked at around clicks the first looks missed (PromptSegmenter).
LOST_CLICK_WINDOW = 0.5
# First looks at clicks alone: squares around the clicks of these shares of the frame's long side, and the
# frame with this margin (box_window's context); chosen on COCO's training part and DAVIS train frames
# (docs/history/prompt-network-runs.md, "Issue #21, second round").
FIRST_LOOK_SHARES = (0.8,)
FRAME_MARGIN = 0.5
# Negative clicks left on the mask take off the part nearer to them than to the positive clicks (same rounds).
CARVE_IGNORED_NEGATIVES = True


def network_for(prompt: Prompt) -> str:
    """The role (NETWORK_ROLES) of the network that answers `prompt`: a box without clicks -> box; clicks with a
    box or a mask, which settle what the object is (an operator's fix of a box's or a track's mask) -> correction;
    clicks alone, or a coarse mask alone -> clicks."""
    if not len(prompt.points):
        return "box" if prompt.box is not None else "clicks"
    return "correction" if prompt.box is not None or prompt.mask is not None else "clicks"


class PromptSegmenter:
    """A prompt network on the CPU (or `device`), in inference mode; with `box_model`, a second one that
    answers a box alone (no clicks), and with `correction_model` one that answers clicks with a box or a mask,
    every pass of the prompt (`network_for`)."""

    def __init__(self, model: PromptNet, device: str = "cpu", crop_size: int | None = None,
                 flip: bool = True, refine: int = DEFAULT_REFINE, refine_size: int | None = None,
                 lost_click_window: float = LOST_CLICK_WINDOW, first_look: tuple[float, ...] = FIRST_LOOK_SHARES,
                 frame_margin: float = FRAME_MARGIN, carve: bool = CARVE_IGNORED_NEGATIVES,
                 runtime: str = "auto", threads: int = 0, box_model: PromptNet | None = None,
                 correction_model: PromptNet | None = None,
                 partners: Mapping[str, str] | None = None, chain: bool = CHAIN_CLICKS) -> None:
        for role, other in (("box", box_model), ("correction", correction_model)):
            if other is not None and other.config != model.config:
                raise ValueError(f"the {role} network's config ({other.config}) differs from the click network's "
                                 f"({model.config}): all must take the same crops and click maps")
        self.model = model.eval().to(device)
        # The final pass averages with the mirrored crop: about twice its cost, measured better
        # (docs/history/prompt-network-runs.md, first round).
        self.flip = flip
        self.device = torch.device(device)
        # `runtime`: one of runtime.RUNTIMES; auto = ONNX Runtime on a CPU (faster there), eager torch elsewhere;
        # `threads`: ONNX Runtime's threads (0: torch's count here).
        self._passes, self.runtime = make_passes(self.model, self.device, runtime, threads)
        # The other roles' passes (NETWORK_ROLES); a role without its own network is answered by `model`.
        self._role_passes: dict[str, Passes] = {}
        for role, other in zip(NETWORK_ROLES, (None, box_model, correction_model), strict=True):
            self._role_passes[role] = (make_passes(other.eval().to(device), self.device, runtime, threads)[0]
                                       if other is not None else self._passes)
        # `partners`: FINAL_PASS_PARTNERS by default, {} for none. A partner role without a network of its own
        # (answered by `model`) is left out: the pairing was measured with the partner's own network.
        partners = FINAL_PASS_PARTNERS if partners is None else partners
        for role, partner in partners.items():
            if role not in NETWORK_ROLES or partner not in NETWORK_ROLES or role == partner:
                raise ValueError(f"partners: {role!r} -> {partner!r}; expected two different roles of "
                                 f"{NETWORK_ROLES}")
        self._partner_passes: dict[str, Passes] = {
            role: self._role_passes[partner] for role, partner in partners.items()
            if self._role_passes[partner] is not self._passes}
        # Several clicks alone as a correction of the first click's answer, when corrections have their own network.
        self.chain = chain and correction_model is not None
        self.size = crop_size or model.config.crop_size  # the network is fully convolutional
        # `refine` more passes, each on the window around the previous prediction with it as the coarse
        # mask (a second look: the box or clicks stay, the network corrects its own mask), at `refine_size`.
        self.refine = refine
        self.refine_size = refine_size or self.size
        self.radius = model.config.click_radius
        # Clicks alone whose first looks find nothing under them: the next look is a square window
        # of this share of the frame's long side around them (0: the window around whatever it found).
        self.lost_click_window = lost_click_window
        # Clicks alone: the first looks' windows (FIRST_LOOK_SHARES, FRAME_MARGIN); () and 0: the frame alone.
        self.first_look = tuple(first_look)
        self.frame_margin = frame_margin
        self.carve = carve

    @classmethod
    def from_file(cls, path: str | Path = BUNDLED_WEIGHTS, device: str = "cpu", crop_size: int | None = None,
                  flip: bool = True, refine: int = DEFAULT_REFINE, refine_size: int | None = None,
                  lost_click_window: float = LOST_CLICK_WINDOW, first_look: tuple[float, ...] = FIRST_LOOK_SHARES,
                  frame_margin: float = FRAME_MARGIN, carve: bool = CARVE_IGNORED_NEGATIVES,
                  runtime: str = "auto", threads: int = 0, box_path: str | Path | None = None,
                  correction_path: str | Path | None = None,
                  partners: Mapping[str, str] | None = None, chain: bool = CHAIN_CLICKS) -> PromptSegmenter:
        """`box_path`: the network for a box alone, `correction_path`: for clicks with a box or a mask (None:
        `path`'s answers those prompts too); `partners`: see FINAL_PASS_PARTNERS; `chain`: see CHAIN_CLICKS."""
        for file in (path, box_path, correction_path):
            if file is not None and not Path(file).is_file():
                raise FileNotFoundError(f"prompt network weights not found: {file}")
        model, header = load_weights(path)
        box_model = load_weights(box_path)[0] if box_path is not None else None
        correction_model = load_weights(correction_path)[0] if correction_path is not None else None
        segmenter = cls(model, device, crop_size, flip, refine, refine_size, lost_click_window, first_look,
                        frame_margin, carve, runtime, threads, box_model, correction_model, partners, chain)
        log.info("prompt network loaded from %s (steps: %s; passes in %s)%s%s", path, header.get("steps", "?"),
                 segmenter.runtime, f"; a box alone from {box_path}" if box_path is not None else "",
                 f"; corrections from {correction_path}" if correction_path is not None else "")
        return segmenter

    def segment(self, image: np.ndarray, *, box: object = None, points: object = None, labels: object = None,
                mask: np.ndarray | None = None) -> np.ndarray:
        """Validates the inputs (PromptError naming the field) and returns the object's bool mask [H,W]."""
        image = check_image(image)
        prompt = make_prompt(image.shape[:2], box=box, points=points, labels=labels, mask=mask)  # type: ignore[arg-type]
        return self(image, prompt)

    def __call__(self, image: np.ndarray, prompt: Prompt) -> np.ndarray:
        return self.probabilities(image, prompt) > 0.5

    def probabilities(self, image: np.ndarray, prompt: Prompt) -> np.ndarray:
        """The object's probability per pixel, float32 [H,W] (0 outside the window looked at)."""
        hw = prompt.frame_hw
        if image.shape[:2] != hw:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the prompt was made for "
                             f"{hw[1]}x{hw[0]}")
        if self.chain and prompt.box is None and prompt.mask is None and len(prompt.points) > 1:
            first = int(np.flatnonzero(prompt.labels == 1)[0])
            start = self._answer(image, make_prompt(hw, points=prompt.points[first:first + 1], labels=[1]),
                                 CHAIN_START_REFINE, final=False) > 0.5
            if start.any():
                prompt = make_prompt(hw, points=prompt.points, labels=prompt.labels, mask=start)
        return self._answer(image, prompt, self.refine, final=True)

    def _answer(self, image: np.ndarray, prompt: Prompt, refine: int, final: bool) -> np.ndarray:
        """The prompt's probabilities after `refine` refinement passes; `final`: the last pass is a final one
        (`_pass`: the mirrored crop and the partner averaged in), not a start that another pass goes over."""
        hw = prompt.frame_hw
        positives = prompt.positives
        last = not refine and final
        role = network_for(prompt)
        passes, partner = self._role_passes[role], self._partner_passes.get(role)
        if prompt.box is not None:
            prob = self._pass(image, box_window(prompt.box), prompt, prompt.mask, final=last, passes=passes,
                              partner=partner)
        elif prompt.mask is not None:
            window = box_window(mask_box(prompt.mask, positives) or frame_window(hw))
            prob = self._pass(image, window, prompt, prompt.mask, final=last, passes=passes, partner=partner)
        else:
            rough = self._first_look(image, prompt)
            if rough.any() or not self.lost_click_window:
                window = box_window(mask_box(rough, positives) or frame_window(hw))
            else:  # the whole-frame look found nothing under the clicks: look closer around them instead
                window = click_window(positives, hw, self.lost_click_window)
            prob = self._pass(image, window, prompt, rough if rough.any() else None, final=last, partner=partner)
        for i in range(refine):
            coarse = prob > 0.5
            if not coarse.any():
                break
            window = box_window(prompt.box if prompt.box is not None
                                else mask_box(coarse, positives) or frame_window(hw))
            prob = self._pass(image, window, prompt, coarse, final=final and i == refine - 1,
                              size=self.refine_size, passes=passes, partner=partner)
        if self.carve:
            prob[_ignored_negatives_share(prob > 0.5, prompt)] = 0.0
        return prob

    def _first_look(self, image: np.ndarray, prompt: Prompt) -> np.ndarray:
        """The clicked object, roughly: the parts under the positive clicks of the look (window) whose parts
        the network is surest of; nothing when no look holds a click (or, with `lost_click_window` 0 and a
        single look, all of that look's mask)."""
        hw = prompt.frame_hw
        windows = [click_window(prompt.positives, hw, share) for share in self.first_look]
        windows.append(box_window(frame_window(hw), context=self.frame_margin) if self.frame_margin
                       else frame_window(hw))
        best, best_score = np.zeros(hw, bool), -1.0
        for window in windows:
            prob = self._pass(image, window, prompt, None, final=False)
            keep_unclicked = len(windows) == 1 and not self.lost_click_window
            parts = _clicked_parts(prob > 0.5, prompt, keep_unclicked=keep_unclicked)
            score = float(prob[parts].mean()) if parts.any() else -1.0
            if score > best_score:
                best, best_score = parts, score
        return best

    def _pass(self, image: np.ndarray, window: Window, prompt: Prompt, coarse: np.ndarray | None,
              final: bool = True, size: int | None = None, passes: Passes | None = None,
              partner: Passes | None = None) -> np.ndarray:
        """One look through `window`; a `final` look also averages the mirrored crop and `partner`'s answers."""
        s = size or self.size
        maps = np.zeros((4, s, s), np.float32)
        if prompt.box is not None:
            maps[0] = box_map(prompt.box, window, s)
        if len(prompt.points):
            maps[1:3] = click_maps(to_crop(prompt.points, window, s), prompt.labels, s, self.radius)
        if coarse is not None:
            maps[3] = crop_image(coarse.astype(np.float32), window, s) > 0.5
        rgb = crop_image(image, window, s, edge=True)
        with torch.inference_mode():
            x = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float().div_(255)
            m = torch.from_numpy(maps).to(self.device)[None]
            flip = self.flip and final  # the rough first pass of clicks alone only has to find the object
            if flip:  # the crop and its mirror image as one batch of two, averaged
                x, m = torch.cat([x, x.flip(-1)]), torch.cat([m, m.flip(-1)])
            answers = [passes or self._passes] + ([partner] if final and partner is not None else [])
            batch = torch.stack([torch.sigmoid(answer(x, m))[:, 0] for answer in answers]).mean(0)
            prob = ((batch[0] + batch[1].flip(-1)) / 2 if flip else batch[0]).cpu().numpy()
        return paste_back(prob, window, prompt.frame_hw)


def _clicked_parts(mask: np.ndarray, prompt: Prompt, keep_unclicked: bool = False) -> np.ndarray:
    """The connected parts of `mask` that hold a positive click; when none does, nothing (or all of `mask`
    with `keep_unclicked`)."""
    if not mask.any():
        return mask
    count, parts = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    hit = {int(parts[y, x]) for x, y in (prompt.pixel(int(i)) for i in np.flatnonzero(prompt.labels == 1))} - {0}
    if hit:
        return np.isin(parts, list(hit))
    return mask if keep_unclicked else np.zeros_like(mask)


def _ignored_negatives_share(mask: np.ndarray, prompt: Prompt) -> np.ndarray:
    """The pixels of `mask` to take off for the negative clicks it still covers: in the connected pieces
    holding such a click, those nearer to one of them than to every positive click (none without a
    positive click: a box with negative clicks only keeps its mask)."""
    out = np.zeros_like(mask)
    positives = np.flatnonzero(prompt.labels == 1)
    ignored = [int(i) for i in np.flatnonzero(prompt.labels == 0) if mask[prompt.pixel(int(i))[::-1]]]
    if not ignored or not len(positives):
        return out

    def distance(indices: list[int]) -> np.ndarray:
        seeds = np.ones(mask.shape, np.uint8)
        for i in indices:
            x, y = prompt.pixel(int(i))
            seeds[y, x] = 0
        return cv2.distanceTransform(seeds, cv2.DIST_L2, 5)

    _, pieces = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    held = [int(pieces[prompt.pixel(int(i))[::-1]]) for i in ignored]
    return np.isin(pieces, held) & (distance(ignored) < distance([int(i) for i in positives]))


@functools.lru_cache(maxsize=1)
def default_segmenter() -> PromptSegmenter:
    """The bundled networks (clicks, box, corrections), loaded on the first call and cached for the process
    (`cache_clear()` drops them)."""
    return PromptSegmenter.from_file(BUNDLED_WEIGHTS, box_path=BUNDLED_BOX_WEIGHTS,
                                     correction_path=BUNDLED_CORRECTION_WEIGHTS)


def segment(image: np.ndarray, *, box: object = None, points: object = None, labels: object = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    """The object's mask (bool [H,W]) for a box (x0, y0, x1, y1), clicks (points [(x, y), ...] with labels
    1 object / 0 background) and/or a coarse mask to refine, on an RGB uint8 image [H,W,3].

    Uses the bundled prompt network through `default_segmenter()` (loaded once, then cached). Raises
    `PromptError` (a ValueError) naming the argument at fault for any invalid input."""
    return default_segmenter().segment(image, box=box, points=points, labels=labels, mask=mask)
