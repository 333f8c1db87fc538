"""Prompt -> mask: turns a box, clicks and/or a coarse mask on one frame into an object mask.

`make_prompt` validates (spec.py, the one owner of the rules); `grabcut_segment` is the model-free
method (`method: grabcut`). The service and the Python API both go through here.
"""

from edge_vos.prompt.grabcut import grabcut_segment
from edge_vos.prompt.spec import (
    AVAILABLE_METHODS,
    DEFAULT_METHOD,
    MAX_POINTS,
    METHODS,
    Prompt,
    PromptError,
    check_image,
    make_prompt,
)

__all__ = ["AVAILABLE_METHODS", "DEFAULT_METHOD", "MAX_POINTS", "METHODS", "Prompt", "PromptError", "check_image",
           "grabcut_segment", "make_prompt"]
