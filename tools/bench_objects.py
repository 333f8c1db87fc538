"""Per-frame cost of `Tracker.step` against the number of tracked objects (1, 2, 4, 8), memory writes included,
at the shipped CPU config on 480x854 synthetic frames; writes the "objects" section of docs/benchmarks.md.

    /work/bin/bench-lock .venv/bin/python tools/bench_objects.py                       # this tree alone
    git archive COMMIT | tar -x -C /tmp/objects/base
    /work/bin/bench-lock .venv/bin/python tools/bench_objects.py --before /tmp/objects/base --before-commit COMMIT

One synthetic scene with 8 objects; the configuration for N objects prompts objects 1..N on its first frame (the
others stay unlabelled scenery). Every configuration (object count, and tree with `--before`) runs in its own
worker process, tools/bench_step.py's worker: its own tracker, one torch thread as `pipeline.torch_threads`
ships, the tree's own configs/cpu.yaml, stage timings on. The parent hands frame i to every worker in turn
(order rotated per frame) and waits for each, so only one computes at a time and the machine's load hits every
configuration alike: only ratios within one run mean anything on a shared machine. Memory writes run inside
`step` (not deferred), so a frame's time is all the work it costs; every `mem_every`-th frame writes, and the
headline figure is the median over blocks of `mem_every` consecutive frames of the block's mean frame time
(each block holds one write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "key_encode", "readout", "decode", "prior", "aggregate", "value_encode", "postprocess")
OBJECT_COUNTS = (1, 2, 4, 8)
BLOCK = 5  # frames per block: configs/cpu.yaml's memory.mem_every, so each block holds one memory write


def make_frames(out_dir: Path, frames: int, size: tuple[int, int], seed: int) -> dict[int, Path]:
    """One synthetic scene with max(OBJECT_COUNTS) objects; an .npz per object count whose first mask keeps only
    objects 1..N (the format tools/bench_step.py's worker reads)."""
    sys.path.insert(0, str(ROOT))
    from edge_vos.data.synthetic import generate_sequence

    images, labels = generate_sequence(seed, frames, size, num_objects=max(OBJECT_COUNTS), num_distractors=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for n in OBJECT_COUNTS:
        first = labels[0]
        mask = np.where(first <= n, first, 0).astype(np.uint8)
        missing = [i for i in range(1, n + 1) if not (mask == i).any()]
        if missing:
            raise SystemExit(f"seed {seed}: objects {missing} are not visible on the first frame; try another --seed")
        files[n] = out_dir / f"objects_{n}.npz"
        np.savez(files[n], images=images, mask=mask)
    return files


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = tuple(int(v) for v in args.size.lower().split("x"))
    files = make_frames(Path(args.workdir), args.frames, size, args.seed)  # type: ignore[arg-type]
    trees = {"after": ROOT} if args.before is None else {"before": Path(args.before).resolve(), "after": ROOT}
    configs = {(tree, n): path for tree, path in trees.items() for n in OBJECT_COUNTS}
    procs: dict[tuple[str, int], subprocess.Popen[str]] = {}
    for (tree, n), path in configs.items():
        spec = json.dumps({"overrides": {}})  # the tree's shipped config, memory writes inside step()
        procs[(tree, n)] = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "bench_step.py"), "worker", "--tree", str(path), "--threads", "1",
             "--frames", str(files[n]), "--spec", spec],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
            cwd=str(path),
        )
    precisions = set()
    for p in procs.values():
        assert p.stdout is not None
        precisions.add(json.loads(p.stdout.readline())["precision"])
    from tools.bench_step import interleave

    load_before = os.getloadavg()[0]
    records = interleave(procs, args.frames)
    return {"records": records, "load": [load_before, os.getloadavg()[0]], "size": size,
            "precision": "/".join(sorted(precisions))}


def summarise(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Headline: median over BLOCK-frame blocks (after the warm-up) of the block's mean frame time."""
    recs = records[warmup:]
    work = [r["work"] for r in recs]
    blocks = [statistics.fmean(work[i:i + BLOCK]) for i in range(0, len(work) - BLOCK + 1, BLOCK)]
    stages = {s: statistics.fmean(r["timings"].get(s, 0.0) for r in recs) for s in STAGES}
    written = [r["timings"]["value_encode"] for r in recs if r["timings"].get("value_encode")]
    return {"frame": statistics.median(blocks), "mean": statistics.fmean(work), "stages": stages,
            "write": statistics.median(written) if written else 0.0, "frames": len(recs)}


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    sys.path.insert(0, str(ROOT))
    import torch

    from tools.doc_tables import markdown_table

    rows = {c: summarise(r, args.warmup) for c, r in result["records"].items()}
    header = ["tree", "objects", "ms per frame", "x one object", *STAGES, "value encode per memory frame"]
    body = []
    for (tree, n), s in rows.items():
        one = rows[(tree, 1)]["frame"]
        body.append([tree, n, f"**{s['frame']:.1f}**", f"**{s['frame'] / one:.2f}x**",
                     *(f"{s['stages'][k]:.1f}" for k in STAGES), f"{s['write']:.1f}"])
    h, w = result["size"]
    before = f"`before` = the tree at {args.before_commit}; " if args.before else ""
    head = (
        f"`tools/bench_objects.py`, measured {result['when']}: one synthetic scene ({w}x{h}, 8 objects and a "
        f"distractor, seed {args.seed}, {args.frames} frames), objects 1..N prompted on its first frame; each tree's "
        f"shipped `configs/cpu.yaml` tracker (bundled weights, working short side 360, backend and precision auto: "
        f"{result['precision']} here), "
        f"one torch thread, memory writes inside `step()`; {before}"
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; load average "
        f"{result['load'][0]:.1f} before, {result['load'][1]:.1f} after. All "
        f"configurations interleaved frame by frame in one run (a worker process each, order rotated per frame); "
        f"first {args.warmup} frames left out. *ms per frame*: median over {BLOCK}-frame blocks of the block's mean "
        f"frame time (each block holds one memory write); stage columns: mean ms per frame (value_encode "
        f"averaged over all frames, i.e. one write in {BLOCK}); last column: median ms of a frame's memory write."
    )
    return head + "\n\n" + markdown_table(header, body)


def count_parts(tree: Path, padded_hw: tuple[int, int]) -> dict[str, list[float]]:
    """part -> [GMAC once per frame, GMAC per object] of the network of source tree `tree` (bundled weights'
    arch) at a padded working size: counted (torch.utils.flop_counter) at 1 and 8 objects, per object = the
    difference / 7. Runs in a process of its own, so that each tree imports its own edge_vos."""
    code = (
        "import json, sys, torch\n"
        f"sys.path.insert(0, {str(tree)!r})\n"
        "from torch.utils.flop_counter import FlopCounterMode\n"
        "from edge_vos.backends.parts import PART_NAMES, example_inputs, make_part\n"
        "from edge_vos.model.weights import load_configured_network\n"
        "from edge_vos.tracker.config import TrackerConfig\n"
        "net = load_configured_network(TrackerConfig().model).eval()\n"
        "out = {}\n"
        "for part in PART_NAMES:\n"
        "    g = {}\n"
        "    for n in (1, 8):\n"
        "        with FlopCounterMode(display=False) as c, torch.no_grad():\n"
        f"            make_part(net, part)(*example_inputs(net, part, {tuple(padded_hw)!r}, n))\n"
        "        g[n] = c.get_total_flops() / 2e9\n"
        "    per = (g[8] - g[1]) / 7\n"
        "    out[part] = [g[1] - per, per]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(tree))
    return json.loads(done.stdout.strip().splitlines()[-1])


def flop_table(args: argparse.Namespace, padded_hw: tuple[int, int] = (368, 640)) -> str:
    """GMAC per part, once per frame and per object, for this tree (and the `--before` tree)."""
    sys.path.insert(0, str(ROOT))
    from tools.doc_tables import markdown_table

    trees = {"after": ROOT} if args.before is None else {"before": Path(args.before).resolve(), "after": ROOT}
    counts = {name: count_parts(tree, padded_hw) for name, tree in trees.items()}
    header = ["part"] + [f"{name}: {what}" for name in trees for what in ("once per frame", "per object")]
    rows = [[part] + [f"{v:.3f}" for name in trees for v in counts[name][part]] for part in counts["after"]]
    h, w = padded_hw
    before = f"; `before` = the tree at {args.before_commit}" if args.before else ""
    head = (f"`tools/bench_objects.py --flops`: GMAC (multiply-accumulates) of each network part at {w}x{h}, the "
            f"padded working size of 480x854 frames at working short side 360, bundled weights' arch{before}.")
    return head + "\n\n" + markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=65)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", default="480x854", help="frame HEIGHTxWIDTH")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--before", help="source tree of the 'before' code (git archive of an older commit)")
    parser.add_argument("--before-commit", default="-", help="the commit that tree holds (for the doc)")
    parser.add_argument("--workdir", default="/tmp/bench_objects")
    parser.add_argument("--json", type=Path, help="also write the raw per-frame records here")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--flops", action="store_true",
                        help="only count each part's multiply-accumulates, once per frame and per object (no timing)")
    args = parser.parse_args()
    if args.flops:
        text = flop_table(args)
        print(text)
        if not args.no_doc:
            from tools.doc_tables import write_section

            title = "### Many objects: network work per frame and per object"
            write_section(args.doc, "objects-flops", f"{title}\n\n{text}")
        return
    result = run(args)
    result["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = table(result, args)
    print(text)
    if args.json:
        raw = {f"{tree}:{n}": recs for (tree, n), recs in result["records"].items()}
        args.json.write_text(json.dumps({"records": raw, "load": result["load"]}))
    if not args.no_doc:
        from tools.doc_tables import write_section

        write_section(args.doc, "objects", f"## Many objects: cost per frame against the object count (CPU)\n\n{text}")


if __name__ == "__main__":
    main()
