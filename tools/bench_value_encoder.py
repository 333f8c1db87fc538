"""Time of the value encoder alone (one memory write) in ONNX Runtime on this CPU, for several weights files
(their own archs) at 1 and 8 objects, interleaved round by round so the machine's load hits each alike.

    /work/bin/bench-lock .venv/bin/python tools/bench_value_encoder.py edge_vos/weights/default.safetensors \
        runs/lightvalue/final.safetensors

Inputs are the shapes of a 480x854 frame at working short side 360 (padded 368x640); the masks are random
blobs (the cost does not depend on their content). One intra-op thread, as configs/cpu.yaml's
`pipeline.torch_threads`. Prints the median milliseconds per call and per object, and first each network's
GMAC once per frame and per object, counted as tools/bench_objects.py's `count_parts` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OBJECT_COUNTS = (1, 8)


def value_encoder_gmac(net: torch.nn.Module, padded_hw: tuple[int, int]) -> tuple[float, float]:
    """(GMAC once per frame, GMAC per object) of the value encoder part: counted at 1 and 8 objects
    (torch.utils.flop_counter), per object = the difference / 7."""
    from torch.utils.flop_counter import FlopCounterMode

    from edge_vos.backends.parts import example_inputs, make_part

    gmac = {}
    for n in (1, 8):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            make_part(net, "value_encoder")(*example_inputs(net, "value_encoder", padded_hw, n))
        gmac[n] = counter.get_total_flops() / 2e9
    per_object = (gmac[8] - gmac[1]) / 7
    return gmac[1] - per_object, per_object


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, nargs=2, default=(368, 640), metavar=("H", "W"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from edge_vos.backends.onnxruntime_backend import OnnxRuntimeRunner
    from edge_vos.model.checkpoint import load_network

    torch.set_num_threads(1)
    h, w = args.size
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, h, w, generator=generator)
    masks = torch.nn.functional.avg_pool2d((torch.rand(8, 1, h, w, generator=generator) > 0.7).float(), 31, 1, 15)
    others = masks.sum(0, keepdim=True) - masks
    runners = {}
    with tempfile.TemporaryDirectory() as cache:
        for path in args.weights:
            net = load_network(path).eval()
            frame, per_object = value_encoder_gmac(net, (h, w))
            print(f"{path} ({net.arch}): value encoder {frame:.3f} GMAC once per frame, {per_object:.3f} per object")
            runner = OnnxRuntimeRunner(net, torch.device("cpu"), "fp32", (h, w), Path(cache) / path.stem,
                                       threads=1, parts=("key_encoder", "value_encoder"))
            f16 = runner.encode_key(image)[2]
            runners[path] = (runner, f16)
        times: dict[tuple[Path, int], list[float]] = {(p, n): [] for p in args.weights for n in OBJECT_COUNTS}
        for r in range(args.rounds + 1):
            for path, (runner, f16) in runners.items():
                for n in OBJECT_COUNTS:
                    start = time.perf_counter()
                    runner.encode_value(image, f16, masks[:n], others[:n])
                    if r:  # the first round warms up
                        times[(path, n)].append((time.perf_counter() - start) * 1e3)
    for (path, n), values in times.items():
        median = statistics.median(values)
        print(f"{path}  {n} object(s): {median:7.1f} ms per call, {median / n:6.1f} ms per object")
    for path in args.weights:
        one, eight = (statistics.median(times[(path, n)]) for n in OBJECT_COUNTS)
        print(f"{path}  per added object: {(eight - one) / 7:6.1f} ms; 8 objects / 1 object: {eight / one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
