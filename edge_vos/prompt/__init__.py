"""Prompt -> mask: turns a box, clicks and/or a coarse mask on one frame into an object mask.

    from edge_vos.prompt import segment
    mask = segment(image, box=(40, 30, 120, 110))                      # bool [H, W]
    mask = segment(image, points=[(80, 60), (100, 70)], labels=[1, 0])

- spec.py: what a prompt is and the one place its rules are checked (`make_prompt`, `PromptError`);
- segmenter.py: the learned network's inference (`PromptSegmenter`, `segment`); model.py the network,
  crops.py where it looks; data.py and train.py how it was trained; evaluation.py how it is measured;
- grabcut.py: the model-free method (`method: grabcut`);
- methods.py: `PromptMasks`, what the service holds: one network, both methods.
Torch is imported only by the learned path (segmenter/model); spec and grabcut are numpy/OpenCV.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_vos.prompt.grabcut import grabcut_segment
from edge_vos.prompt.spec import (
    DEFAULT_METHOD,
    MAX_POINTS,
    METHODS,
    Prompt,
    PromptError,
    check_image,
    make_prompt,
    with_coarse_mask,
)

__all__ = ["DEFAULT_METHOD", "MAX_POINTS", "METHODS", "Prompt", "PromptError", "check_image", "grabcut_segment",
           "make_prompt", "segment", "with_coarse_mask"]


def segment(image: np.ndarray, *, box: Any = None, points: Any = None, labels: Any = None,
            mask: np.ndarray | None = None) -> np.ndarray:
    """The object's mask (bool [H,W]) from the bundled prompt network, loaded on the first call and cached
    (edge_vos.prompt.segmenter.segment; torch is imported then, not with this package)."""
    from edge_vos.prompt.segmenter import segment as _segment

    return _segment(image, box=box, points=points, labels=labels, mask=mask)
