"""Prompt -> mask quality and speed (issue #10): the learned prompt network vs GrabCut, same prompts.

    OMP_NUM_THREADS=1 nice -n 5 /work/bin/test-lock python tools/bench_prompt.py accuracy   # IoU, ~5 min
    /work/bin/bench-lock python tools/bench_prompt.py timing                               # ms per prompt
    python tools/bench_prompt.py table                                                       # docs tables

Accuracy: DAVIS-2016 val-dev at 480p, the first frame of every sequence and every 10th frame after it;
prompts from the ground truth (edge_vos.prompt.evaluation: tight box, box jittered by up to 10 % of its
size, 1 / 2 / 3 clicks placed as RITM's protocol places them, each click on the method's own errors;
each prompt is sent alone, as a stateless `add` sends it; for the learned network a second click series
also sends its previous mask back with clicks 2 and 3, as an interactive client may ("+ own previous
mask" rows; --no-previous-mask skips it). Timing: the first frame of each val-dev sequence at 854x480,
one box, one click, one correction prompt (a second click with the first click's mask) and the same two clicks
without the mask per frame, methods interleaved, medians (tools/bench_noc.py measures NoC on the COCO hold-out and
val-dev). `shipped` is the service's segmenter (the click, box and correction files), `shipped-before` the same
without a box's partner pass and without chained clicks (segmenter.FINAL_PASS_PARTNERS, CHAIN_CLICKS).
`--methods learned:R:S:F` adds a variant of the learned segmenter (R refine passes at crop side S, F 1/0
mirrored-crop averaging); `learned-before` is the learned segmenter as it was before issue #21's second round
(clicks alone looked at on the whole frame only, ignored negative clicks not carved); `learned-torch` is the
shipped segmenter with its passes in eager torch instead of ONNX Runtime (edge_vos/prompt/runtime.py).
Results go to runs/bench-prompt/*.json; `table` writes section `prompt` of docs/benchmarks.md (the model
card's prompt results come from tools/bench_noc.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_vos.prompt.evaluation import (  # noqa: E402
    MASK_FED_TYPES,
    PROMPT_TYPES,
    davis_eval_frames,
    evaluate_clicks,
    evaluate_frame,
    next_click,
    tight_box,
)
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench_prompt")
DAVIS = ROOT.parent / "shared" / "data" / "davis2016"
OUT = ROOT / "runs" / "bench-prompt"
LABELS = {"box": "tight box", "box_jitter": "box ±10 %", "click1": "1 click", "click2": "2 clicks",
          "click3": "3 clicks", "click2_mask": "2 clicks + own previous mask",
          "click3_mask": "3 clicks + own previous mask"}


def _methods(weights: str | None, names: list[str], crop_size: int | None = None, flip: bool = True,
             refine: int | None = None, refine_size: int | None = None) -> dict[str, tuple[object, bool]]:
    """name -> (callable(image, prompt) -> mask, whether it gets its previous mask with further clicks)."""
    from edge_vos.prompt import grabcut_segment
    from edge_vos.prompt.segmenter import (
        BUNDLED_BOX_WEIGHTS,
        BUNDLED_CORRECTION_WEIGHTS,
        BUNDLED_WEIGHTS,
        DEFAULT_REFINE,
        PromptSegmenter,
    )

    out: dict[str, tuple[object, bool]] = {}
    for name in names:
        if name.split(":")[0] == "learned":  # learned[:refine[:refine size[:flip 0/1]]] for variants side by side
            opts = [int(v) for v in name.split(":")[1:]]
            out[name] = (PromptSegmenter.from_file(
                weights or BUNDLED_WEIGHTS, crop_size=crop_size, flip=bool(opts[2]) if len(opts) > 2 else flip,
                refine=opts[0] if opts else DEFAULT_REFINE if refine is None else refine,
                refine_size=opts[1] if len(opts) > 1 else refine_size), True)
        elif name == "learned-before":  # the segmenter before issue #21's second round: one look, no carving
            out[name] = (PromptSegmenter.from_file(weights or BUNDLED_WEIGHTS, crop_size=crop_size, flip=flip,
                                                   first_look=(), frame_margin=0.0, carve=False), True)
        elif name == "learned-torch":  # the same segmenter, its passes in eager torch
            out[name] = (PromptSegmenter.from_file(weights or BUNDLED_WEIGHTS, crop_size=crop_size, flip=flip,
                                                   runtime="torch"), True)
        elif name in ("shipped", "shipped-before"):  # the service's three files; -before: as issue #21's eighth round
            before = {"partners": {}, "chain": False} if name == "shipped-before" else {}
            out[name] = (PromptSegmenter.from_file(BUNDLED_WEIGHTS, crop_size=crop_size, flip=flip,
                                                   box_path=BUNDLED_BOX_WEIGHTS,
                                                   correction_path=BUNDLED_CORRECTION_WEIGHTS, **before), True)  # type: ignore[arg-type]
        elif name == "grabcut":
            out[name] = (grabcut_segment, False)
        else:
            raise SystemExit(f"unknown method {name!r} (learned, learned-before, learned-torch, shipped, "
                             "shipped-before, grabcut)")
    return out


def accuracy(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    methods = _methods(args.weights, args.methods.split(","), args.crop_size, args.flip, args.refine,
                       args.refine_size)
    scores: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    frames = []
    t0 = time.time()
    for i, frame in enumerate(davis_eval_frames(args.data, "val-dev", "480p", every=args.every)):
        frames.append(f"{frame.sequence}/{frame.index:05d}")
        for name, (method, uses_previous) in methods.items():
            row = evaluate_frame(method, frame, seed=i)  # type: ignore[arg-type]
            if uses_previous and args.previous_mask:
                fed = evaluate_clicks(method, frame, uses_previous_mask=True)  # type: ignore[arg-type]
                row.update({f"{k}_mask": v for k, v in fed.items() if k != "click1"})
            scores[name].append(row)
        log.info("%s %s", frames[-1], {m: round(s[-1]["box"], 3) for m, s in scores.items()})
    result = {
        "weights": args.weights or "bundled", "crop_size": args.crop_size, "flip": args.flip,
        "refine": _effective_refine(args.refine), "refine_size": args.refine_size,
        "previous_mask": args.previous_mask,
        "frames": len(frames), "every": args.every,
        "seconds": round(time.time() - t0, 1),
        "mean_iou": {m: {k: round(float(np.mean([r[k] for r in rows])), 4) for k in PROMPT_TYPES + MASK_FED_TYPES
                         if k in rows[0]} for m, rows in scores.items()},
        "per_sequence_box": {m: _per_sequence(frames, rows) for m, rows in scores.items()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = Path(args.json or OUT / "accuracy.json")
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["mean_iou"], indent=1))
    return 0


def _effective_refine(refine: int | None) -> int:
    from edge_vos.prompt.segmenter import DEFAULT_REFINE

    return DEFAULT_REFINE if refine is None else refine


def _per_sequence(frames: list[str], rows: list[dict[str, float]]) -> dict[str, float]:
    seqs: dict[str, list[float]] = {}
    for name, row in zip(frames, rows, strict=True):
        seqs.setdefault(name.split("/")[0], []).append(row["box"])
    return {s: round(float(np.mean(v)), 3) for s, v in seqs.items()}


def timing(args: argparse.Namespace) -> int:
    import torch

    from edge_vos.prompt import make_prompt

    torch.set_num_threads(args.threads)
    methods = _methods(args.weights, args.methods.split(","), args.crop_size, args.flip, args.refine,
                       args.refine_size)
    frames = [f for f in davis_eval_frames(args.data, "val-dev", "480p", every=10_000)]
    kinds = ("box", "click", "correction", "two clicks")
    times: dict[str, list[float]] = {f"{m} {p}": [] for m in methods for p in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in times}  # the process's CPU time: what others' load inflates least
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for frame in frames:
            hw = frame.truth.shape
            point, label = next_click(frame.truth, None)
            prompts = {"box": make_prompt(hw, box=tight_box(frame.truth)),
                       "click": make_prompt(hw, points=[point], labels=[label])}
            first_answers: dict[str, np.ndarray] = {}  # each method's answer to the click (kinds keep that order)
            for kind in kinds:
                for name, (method, _) in methods.items():
                    if kind in ("correction", "two clicks"):  # a second click on the first click's answer,
                        first = first_answers[name]
                        second, second_label = next_click(frame.truth, first)  # with that answer or not
                        mask = first if first.any() and kind == "correction" else None
                        prompt = make_prompt(hw, points=[point, second], labels=[label, second_label], mask=mask)
                    else:
                        prompt = prompts[kind]
                    t0, c0 = time.perf_counter(), time.process_time()
                    answer = method(frame.image, prompt)  # type: ignore[operator]
                    if kind == "click":
                        first_answers[name] = answer
                    if repeat:
                        times[f"{name} {kind}"].append((time.perf_counter() - t0) * 1000)
                        cpu[f"{name} {kind}"].append((time.process_time() - c0) * 1000)
    result = {"threads": args.threads, "frame": "854x480", "weights": args.weights or "bundled", "flip": args.flip,
              "refine": _effective_refine(args.refine),
              "prompts_per_case": len(frames) * args.repeats,
              "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
              "p90_ms": {k: round(float(np.percentile(v, 90)), 1) for k, v in times.items()},
              "median_cpu_ms": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
              "load_average": [round(v, 2) for v in os.getloadavg()]}
    OUT.mkdir(parents=True, exist_ok=True)
    path = Path(args.json or OUT / f"timing-{args.threads}t.json")
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


def table(args: argparse.Namespace) -> int:
    acc = json.loads((OUT / "accuracy.json").read_text())
    timings = [json.loads(p.read_text()) for p in sorted(OUT.glob("timing-*t.json"))]
    methods = list(acc["mean_iou"])
    types = [k for k in PROMPT_TYPES + MASK_FED_TYPES if any(k in acc["mean_iou"][m] for m in methods)]
    rows = [[LABELS[k], *(f"{acc['mean_iou'][m][k]:.3f}" if k in acc["mean_iou"][m] else "—" for m in methods)]
            for k in types]
    if "learned" in methods and "grabcut" in methods:
        for row, k in zip(rows, types, strict=True):
            both = k in acc["mean_iou"]["learned"] and k in acc["mean_iou"]["grabcut"]
            row.append(f"{acc['mean_iou']['learned'][k] - acc['mean_iou']['grabcut'][k]:+.3f}" if both else "—")
    header = ["prompt", *(f"{m} IoU" for m in methods)] + (["learned − grabcut"] if len(rows[0]) > len(methods) + 1
                                                              else [])
    body = [
        "## Prompts: box / clicks -> mask (`tools/bench_prompt.py`)",
        "",
        f"DAVIS-2016 val-dev at 480p, {acc['frames']} frames (first of each sequence and every {acc['every']}th);"
        " prompts from the ground truth (tight box; box with each side moved by up to 10 % of its size, seeded;"
        " clicks as RITM's protocol places them, each on the method's own errors, each prompt sent alone as a"
        " stateless `add` sends it; the '+ own previous mask' rows send the learned network's previous mask back"
        " with clicks 2 and 3). Mean IoU per prompt, weights: " + acc["weights"] + f", refine passes: "
        f"{acc.get('refine')}.",
        "",
        markdown_table(header, rows),
        "",
        "Box IoU per sequence (tight box): " + "; ".join(
            f"{m}: " + ", ".join(f"{s} {v:.2f}" for s, v in acc["per_sequence_box"][m].items()) for m in methods),
    ]
    for t in timings:
        trows = [[k, f"{t['median_ms'][k]:.0f}", f"{t['p90_ms'][k]:.0f}"] for k in t["median_ms"]]
        body += ["", f"Time per prompt at {t['frame']}, {t['threads']} torch thread(s), {t['prompts_per_case']} "
                 "prompts per case (first frame of each val-dev sequence), learned with "
                 f"{t.get('refine', 0)} refinement passes, methods interleaved, measured under "
                 "`/work/bin/bench-lock` (training paused):", "",
                 markdown_table(["method prompt", "median ms", "p90 ms"], trows)]
    body += ["", "Commands: `OMP_NUM_THREADS=1 nice -n 5 python tools/bench_prompt.py accuracy`, "
             "`/work/bin/bench-lock python tools/bench_prompt.py timing [--threads N]`, "
             "`python tools/bench_prompt.py table`."]
    text = "\n".join(body)
    write_section(ROOT / "docs" / "benchmarks.md", "prompt", text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="prompt -> mask benchmark (issue #10)")
    parser.add_argument("part", choices=["accuracy", "timing", "table"])
    parser.add_argument("--data", default=str(DAVIS))
    parser.add_argument("--weights", help="prompt network file (default: the bundled one)")
    parser.add_argument("--methods", default="learned,grabcut")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--crop-size", type=int, help="the learned network's crop side (default: as trained)")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="the learned network's final pass without mirrored-crop averaging")
    parser.add_argument("--refine", type=int,
                        help="the learned network's extra passes on its own mask (default: the segmenter's)")
    parser.add_argument("--refine-size", type=int, help="crop side of those passes (default: --crop-size)")
    parser.add_argument("--no-previous-mask", dest="previous_mask", action="store_false",
                        help="skip the extra click series with the learned network's previous mask fed back")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="where to write the result (default runs/bench-prompt/)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.part != "table" and not Path(args.data).is_dir():
        log.error("DAVIS-2016 not found at %s", args.data)
        return 1
    return {"accuracy": accuracy, "timing": timing, "table": table}[args.part](args)


if __name__ == "__main__":
    raise SystemExit(main())
