"""Per-frame `Tracker.step` time of two weight files at the shipped CPU config, interleaved.

    OMP_NUM_THREADS=1 /work/bin/bench-lock python tools/time_weights.py OLD.safetensors NEW.safetensors

Both trackers (configs/cpu.yaml's tracker, 1 torch thread) follow val-dev's first 40 frames of blackswan
(480p input) after a first-frame prompt; frames are timed in blocks of 5 that alternate between the two
files (order swapped every block), so load swings on a shared machine hit both alike. Prints the medians
and their ratio (new / old). Used by docs/model-card.md to check that new weights keep the frame time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from edge_vos.data.davis import davis_sequences
    from edge_vos.tracker import Tracker, TrackerConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "davis2016"))
    parser.add_argument("--blocks", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seq = next(s for s in davis_sequences(args.data, "val-dev", "480p") if s.name == "blackswan")
    images = [seq.image(i) for i in range(min(40, len(seq)))]
    mask = (seq.mask(0) > 0).astype(np.uint8)
    trackers = {w: Tracker(TrackerConfig.from_yaml(None, {"model.weights": w})) for w in (args.old, args.new)}
    times: dict[str, list[float]] = {w: [] for w in trackers}
    for tracker in trackers.values():
        tracker.step(images[0], mask, [1])
    for block in range(args.blocks):
        order = (args.old, args.new) if block % 2 == 0 else (args.new, args.old)
        for w in order:
            for i in range(1 + 5 * block, 6 + 5 * block):
                start = time.perf_counter()
                trackers[w].step(images[i % len(images)])
                times[w].append(time.perf_counter() - start)
    for w, values in times.items():
        print(f"{w}: median {1000 * statistics.median(values):.1f} ms over {len(values)} frames")
    print(f"ratio new/old {statistics.median(times[args.new]) / statistics.median(times[args.old]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
