"""Prompt -> mask by the method a caller names: the learned network or GrabCut.

`PromptMasks` is what the service holds: it loads the learned network once (`load()` at start-up) and
dispatches each prompt to the method its command asked for. A missing or unreadable weights file does not
stop the service: learned prompts are then answered with an error that names the file and suggests
`method: grabcut`, which needs no model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_vos.prompt.grabcut import grabcut_segment
from edge_vos.prompt.segmenter import (
    BUNDLED_BOX_WEIGHTS,
    BUNDLED_CORRECTION_WEIGHTS,
    BUNDLED_WEIGHTS,
    PromptSegmenter,
)
from edge_vos.prompt.spec import METHODS, Prompt, PromptError

log = logging.getLogger(__name__)


class PromptMasks:
    def __init__(self, weights: str | Path | None = None, device: str = "cpu", threads: int = 0,
                 box_weights: str | Path | None = None, correction_weights: str | Path | None = None) -> None:
        """`weights` None: the bundled networks (for clicks, for a box alone, for corrections); a file: that
        network for every prompt, unless `box_weights` names one for a box alone or `correction_weights` one
        for clicks with a box or a mask."""
        self.weights = Path(weights) if weights else BUNDLED_WEIGHTS
        self.box_weights = Path(box_weights) if box_weights else (None if weights else BUNDLED_BOX_WEIGHTS)
        self.correction_weights = (Path(correction_weights) if correction_weights
                                   else (None if weights else BUNDLED_CORRECTION_WEIGHTS))
        self.device = device
        self.threads = threads  # of the thread the prompts run on (0: torch's count where loaded)
        self.segmenter: PromptSegmenter | None = None
        self.load_error: str | None = None

    def load(self) -> bool:
        """Loads the learned network (once); False, with the reason logged, when it cannot be loaded."""
        if self.segmenter is None and self.load_error is None:
            try:
                self.segmenter = PromptSegmenter.from_file(self.weights, self.device, threads=self.threads,
                                                           box_path=self.box_weights,
                                                           correction_path=self.correction_weights)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                self.load_error = str(exc)
                log.warning("learned prompts unavailable (%s); method grabcut still works", exc)
        return self.segmenter is not None

    def __call__(self, image: np.ndarray, prompt: Prompt, method: str) -> np.ndarray:
        if method not in METHODS:
            raise PromptError("method", f"must be one of {list(METHODS)}, got {method!r}")
        if method == "grabcut":
            return grabcut_segment(image, prompt)
        if not self.load():
            raise PromptError("method", f"the learned prompt network is unavailable ({self.load_error}); "
                                        f"use method grabcut")
        assert self.segmenter is not None
        return self.segmenter(image, prompt)
