"""Averages the tensors of snapshots of one architecture into one file (checkpoint averaging, a "model
soup"): snapshots fine-tuned from the same start usually sit in one basin, and their mean often generalises
better than any one of them; a fine-tune averaged with its own start (weight-space ensembling, WiSE-FT) keeps
much of what the start knew while holding much of what the fine-tune learned. Tracker files and prompt network
files (header `arch` prompt-*) both work. The result is judged like any other weights (tracker:
tools/eval_checks.sh, docs/model-card.md "How a change is chosen"; prompt network: tools/bench_noc.py).

    python tools/average_weights.py OUT.safetensors A.safetensors B.safetensors [C ...] [--weights 0.5,0.5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_vos.model.checkpoint import load_network, read_metadata, save_network  # noqa: E402
from edge_vos.prompt.model import load_weights, save_weights  # noqa: E402


def is_prompt_network(path: str) -> bool:
    return str(read_metadata(path).get("arch", "")).startswith("prompt-")


def average(paths: list[str], weights: list[float]) -> torch.nn.Module:
    """The weighted mean of every floating-point tensor; integer buffers (batch-norm counters) are taken from
    the first file. All files must hold the same architecture (load_network / load_weights check each)."""
    prompt = [is_prompt_network(p) for p in paths]
    if any(prompt) and not all(prompt):
        raise SystemExit("give only tracker files or only prompt network files, not both")
    networks = [load_weights(p)[0] for p in paths] if all(prompt) else [load_network(p) for p in paths]
    arch = {n.config.arch if all(prompt) else n.arch for n in networks}
    if len(arch) != 1:
        raise SystemExit(f"the snapshots hold different architectures: {sorted(arch)}")
    states = [n.state_dict() for n in networks]
    mean = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            mean[name] = sum(w * s[name].double() for w, s in zip(weights, states, strict=True)).to(first.dtype)
        else:
            mean[name] = first
    networks[0].load_state_dict(mean)
    return networks[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("snapshots", nargs="+")
    parser.add_argument("--weights", default="", help="comma-separated, one per snapshot (default: uniform)")
    args = parser.parse_args(argv)
    if len(args.snapshots) < 2:
        parser.error("give at least two snapshots to average")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1.0] * len(args.snapshots)
    if len(weights) != len(args.snapshots) or min(weights) < 0 or sum(weights) <= 0:
        parser.error(f"--weights: {len(args.snapshots)} non-negative numbers with a positive sum are needed")
    weights = [w / sum(weights) for w in weights]
    network = average(args.snapshots, weights)
    sources = [{"file": p, "weight": round(w, 4), "steps": read_metadata(p).get("steps", "?")}
               for p, w in zip(args.snapshots, weights, strict=True)]
    provenance = {"source": "tools/average_weights.py", "averaged": json.dumps(sources)}
    if is_prompt_network(args.snapshots[0]):
        save_weights(network, args.out, {**provenance, "steps": "averaged"})  # type: ignore[arg-type]
    else:
        save_network(network, args.out, provenance)
    print(f"wrote {args.out}: the mean of {len(sources)} snapshots {[s['file'] for s in sources]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
