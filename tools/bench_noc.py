"""Prompt networks measured with interactive segmentation's protocol: box IoU, IoU after 1/2/3 clicks, NoC.

    OMP_NUM_THREADS=1 nice -n 5 python tools/bench_noc.py accuracy --set coco [--weights NAME=FILE ...]
    OMP_NUM_THREADS=1 nice -n 5 python tools/bench_noc.py accuracy --set davis [--weights NAME=FILE ...]
    python tools/bench_noc.py accuracy ... --shard K/N              # objects K, K+N, ...: parallel runs
    python tools/bench_noc.py merge runs/bench-noc/coco-NAME.shard*  # joins them into coco-NAME.json
    python tools/bench_noc.py compare BEFORE.json AFTER.json     # per object / sequence: who wins
    python tools/bench_noc.py table                              # docs/prompt.md's tables
    ... accuracy --weights shipped=edge_vos/weights/prompt.safetensors \
        --correction-weights edge_vos/weights/prompt-correct.safetensors   # the shipped corrections
    ... accuracy --first-look '' --frame-margin 0 --no-carve     # the segmenter before issue #21's second round

Sets: `coco`, the COCO hold-out (edge_vos.data.coco: a quarter of coco-mval-train's images by COCO image
id, drawn per category; never trained on), one object per image at 640 px; `davis`, DAVIS-2016 val-dev
at 480p, the first frame of each sequence and every 10th after it (never trained on).
Per object: the tight box's IoU and the ±10 % jittered box's (edge_vos.prompt.evaluation); the jittered
box with 1-3 clicks placed on its mask's errors, in one prompt (an operator fixing a box's answer: **box
+ clicks**); then clicks as RITM's NoC protocol places them (first click deepest inside the object, each
next one at the point farthest from the boundary of the larger error region of the network's own last
mask; positive in a missed region, negative in a false one), at most 20, in two ways: **stateless** (each
prompt holds all clicks so far and nothing else: the control socket's `add`) and **corrective** (from click
2 on, the network's previous mask goes along as the prompt's mask: a correction of an existing mask). NoC@85 /
NoC@90: clicks until IoU >= 0.85 / 0.90 (20 when never). The segmenter runs as shipped (2 refinement
passes, mirrored final pass). `--max-clicks 3` gives the click IoUs only (a quick screen of snapshots).
Results: runs/bench-noc/<set>-<name>.json (per object and means).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from edge_vos.prompt.evaluation import (  # noqa: E402
    EvalFrame,
    click_series,
    clicks_to_reach,
    coco_eval_frames,
    davis_eval_frames,
    iou,
    jittered_box,
    tight_box,
)
from edge_vos.prompt.spec import make_prompt  # noqa: E402
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench_noc")
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "runs" / "bench-noc"
SETS = ("coco", "davis")
MODES = ("stateless", "corrective")
TARGETS = (0.85, 0.90)
BOX_CLICKS = 3  # clicks after the jittered box (the box + clicks series)


def eval_frames(name: str, data: Path, every: int) -> list[EvalFrame]:
    if name == "coco":
        return list(coco_eval_frames(data / "static", "holdout"))
    return list(davis_eval_frames(data / "davis2016", "val-dev", "480p", every=every))


def measure_object(method: object, frame: EvalFrame, seed: int, max_clicks: int) -> dict[str, object]:
    """One object's box IoUs and both click series (IoU after each click)."""
    hw = frame.truth.shape
    row: dict[str, object] = {"name": frame.sequence, "index": frame.index}
    row["box"] = iou(method(frame.image, make_prompt(hw, box=tight_box(frame.truth))), frame.truth)  # type: ignore[operator]
    jitter = make_prompt(hw, box=jittered_box(frame.truth, np.random.default_rng(seed)))
    jitter_mask = method(frame.image, jitter)  # type: ignore[operator]
    row["box_jitter"] = iou(jitter_mask, frame.truth)
    # A box, then clicks on what its mask got wrong (the operator's fix of a box's answer), all in one prompt.
    row["box_clicks"] = [round(v, 4) for v in click_series(method, frame, BOX_CLICKS, box=jitter.box,  # type: ignore[arg-type]
                                                           start=jitter_mask)]
    stop = max(TARGETS) if max_clicks > 3 else None
    for mode in MODES:
        row[mode] = [round(v, 4) for v in click_series(method, frame, max_clicks, stop, min_clicks=3,  # type: ignore[arg-type]
                                                       corrective=mode == "corrective")]
    return row


def summarise(rows: list[dict], max_clicks: int) -> dict[str, float]:
    """Means over objects: box IoUs, IoU after 1/2/3 clicks and NoC per mode."""
    out = {"box": float(np.mean([r["box"] for r in rows])),
           "box_jitter": float(np.mean([r["box_jitter"] for r in rows]))}
    if all("box_clicks" in r for r in rows):
        for k in range(BOX_CLICKS):
            out[f"box_click{k + 1}"] = float(np.mean([r["box_clicks"][k] for r in rows]))
    for mode in MODES:
        for k in (1, 2, 3):
            out[f"{mode}_click{k}"] = float(np.mean([r[mode][min(k, len(r[mode])) - 1] for r in rows]))
        if max_clicks > 3:
            for t in TARGETS:
                nocs = [clicks_to_reach(r[mode], t, max_clicks) for r in rows]
                out[f"{mode}_noc{round(t * 100)}"] = float(np.mean(nocs))
                out[f"{mode}_fail{round(t * 100)}"] = int(sum(max(r[mode]) < t for r in rows))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def segmenter_options(args: argparse.Namespace) -> dict[str, object]:
    """The segmenter's click options given on the command line (the shipped defaults otherwise)."""
    options: dict[str, object] = {"carve": not args.no_carve}
    if args.first_look is not None:
        options["first_look"] = tuple(float(v) for v in args.first_look.split(",") if v)
    if args.frame_margin is not None:
        options["frame_margin"] = args.frame_margin
    if args.box_weights:
        options["box_path"] = args.box_weights
    if args.correction_weights:
        options["correction_path"] = args.correction_weights
    if args.no_partners:
        options["partners"] = {}
    if args.no_chain:
        options["chain"] = False
    return options


def accuracy(args: argparse.Namespace) -> int:
    import torch

    from edge_vos.prompt.segmenter import BUNDLED_WEIGHTS, PromptSegmenter

    torch.set_num_threads(args.threads)
    weights = args.weights or [f"bundled={BUNDLED_WEIGHTS}"]
    frames = eval_frames(args.set, Path(args.data), args.every)[: args.limit or None]
    shard, shards = (int(v) for v in args.shard.split("/"))
    mine = list(range(len(frames)))[shard - 1::shards]  # global indices: the jittered box's seed
    OUT.mkdir(parents=True, exist_ok=True)
    for spec in weights:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--weights {spec!r}: expected NAME=FILE")
        segmenter = PromptSegmenter.from_file(path, **segmenter_options(args))
        t0 = time.time()
        rows = []
        for i in mine:
            frame = frames[i]
            rows.append(measure_object(segmenter, frame, seed=i, max_clicks=args.max_clicks))
            log.info("%s %s %s box %.3f clicks %s", name, args.set, frame.sequence, rows[-1]["box"],
                     rows[-1]["stateless"])
        result = {"set": args.set, "name": name, "weights": path, "box_weights": args.box_weights,
                  "correction_weights": args.correction_weights,
                  "partners": not args.no_partners, "chain": not args.no_chain,
                  "objects": len(rows),
                  "max_clicks": args.max_clicks, "every": args.every if args.set == "davis" else None,
                  "seconds": round(time.time() - t0), "mean": summarise(rows, args.max_clicks), "per_object": rows}
        suffix = ("-quick" if args.max_clicks <= 3 else "") + (f".shard{shard}of{shards}" if shards > 1 else "")
        out = Path(args.json) if args.json else OUT / f"{args.set}-{name}{suffix}.json"
        out.write_text(json.dumps(result, indent=1))
        print(name, json.dumps(result["mean"]))
    return 0


def merge(args: argparse.Namespace) -> int:
    """Joins the shard files given (one network, one set, `--shard K/N` runs) into one result."""
    parts = [json.loads(Path(p).read_text()) for p in args.files]
    if len({(p["set"], p["name"], p["max_clicks"]) for p in parts}) != 1:
        raise SystemExit("merge: the files are not shards of one network on one set")
    rows = sorted((r for p in parts for r in p["per_object"]), key=lambda r: (str(r["name"]), r["index"]))
    result = {**parts[0], "objects": len(rows), "seconds": sum(p["seconds"] for p in parts),
              "mean": summarise(rows, parts[0]["max_clicks"]), "per_object": rows}
    suffix = "-quick" if result["max_clicks"] <= 3 else ""
    out = Path(args.json) if args.json else OUT / f"{result['set']}-{result['name']}{suffix}.json"
    out.write_text(json.dumps(result, indent=1))
    print(result["name"], result["set"], result["objects"], json.dumps(result["mean"]))
    return 0


def _groups(result: dict) -> dict[str, list[dict]]:
    """Objects grouped for win counts: COCO per object, DAVIS per sequence."""
    groups: dict[str, list[dict]] = {}
    for r in result["per_object"]:
        key = r["name"] if result["set"] == "coco" else str(r["name"])
        groups.setdefault(key, []).append(r)
    return groups


def compare(args: argparse.Namespace) -> int:
    """Per object (COCO) or sequence (DAVIS): how often AFTER beats, ties or loses to BEFORE."""
    before, after = (json.loads(Path(p).read_text()) for p in args.files)
    gb, ga = _groups(before), _groups(after)
    mc = min(before["max_clicks"], after["max_clicks"])
    metrics = {"box": lambda rs: np.mean([r["box"] for r in rs]),
               "click1": lambda rs: np.mean([r["stateless"][0] for r in rs])}
    for k in [k for k in (2, 3) if k <= mc]:  # a --max-clicks 1 file has one click per series
        metrics[f"click{k} corrective"] = (lambda n: lambda rs: np.mean([r["corrective"][n - 1] for r in rs]))(k)
    if all("box_clicks" in r for res in (before, after) for r in res["per_object"]):
        for k in range(1, BOX_CLICKS + 1):
            metrics[f"box + {k} clicks"] = (lambda n: lambda rs: np.mean([r["box_clicks"][n - 1] for r in rs]))(k)
    if mc > 3:
        for mode in MODES:  # fewer clicks is better: negate so that higher wins everywhere
            metrics[f"{mode} NoC@90"] = (
                lambda m: lambda rs: -np.mean([clicks_to_reach(r[m], 0.9, mc) for r in rs]))(mode)
    for label, fn in metrics.items():
        wins = ties = losses = 0
        for key in gb.keys() & ga.keys():
            a, b = fn(ga[key]), fn(gb[key])
            wins, ties, losses = wins + (a > b + 1e-9), ties + (abs(a - b) <= 1e-9), losses + (a < b - 1e-9)
        print(f"{label}: {after['name']} wins {wins}, ties {ties}, loses {losses} of {len(gb.keys() & ga.keys())} "
              f"{'objects' if before['set'] == 'coco' else 'sequences'}")
    return 0


def table(args: argparse.Namespace) -> int:
    """The results tables (docs/prompt.md and the model card's prompt section): one table per set, a row per
    measured network; `--max-clicks 3` runs have no NoC (a dash). `--rows NAME,...` picks and orders them."""
    body = []
    for name in SETS:
        files = [p for p in sorted(OUT.glob(f"{name}-*.json")) if ".shard" not in p.name]
        results = {(r["name"] + (" (clicks 1-3 only)" if r["max_clicks"] <= 3 else "")): r
                   for r in (json.loads(p.read_text()) for p in files)}
        if args.rows:
            results = {k: results[k] for k in args.rows.split(",") if k in results}
        if not results:
            continue
        rows = []
        for label, r in results.items():
            m = r["mean"]

            def noc(mode: str, m: dict = m) -> list[str]:
                if f"{mode}_noc85" not in m:
                    return ["—", "—"]
                return [f"{m[f'{mode}_noc85']:.2f}", f"{m[f'{mode}_noc90']:.2f} ({m[f'{mode}_fail90']})"]

            box_clicks = (" / ".join(f"{m[f'box_click{k}']:.3f}" for k in range(1, BOX_CLICKS + 1))
                          if "box_click1" in m else "—")
            rows.append([label, f"{m['box']:.3f}", f"{m['box_jitter']:.3f}", box_clicks,
                         *(f"{m[f'stateless_click{k}']:.3f}" for k in (1, 2, 3)), *noc("stateless"),
                         *(f"{m[f'corrective_click{k}']:.3f}" for k in (2, 3)), *noc("corrective")])
        first = next(iter(results.values()))
        what = ("COCO hold-out" if name == "coco" else
                f"DAVIS-2016 val-dev 480p (first frame of each sequence and every {first['every']}th)")
        body += [f"{what}, {first['objects']} objects; stateless = all clicks in one prompt, corrective = "
                 "clicks 2.. sent with the previous mask; NoC at most 20 (objects never reaching 90 % in brackets):",
                 "", markdown_table(["network", "tight box", "box ±10 %", "box ±10 % + 1 / 2 / 3 clicks",
                                     "1 click", "2 clicks", "3 clicks",
                                     "NoC@85", "NoC@90", "2 clicks corr.", "3 clicks corr.", "NoC@85 corr.",
                                     "NoC@90 corr."], rows), ""]
    body.append("`python tools/bench_noc.py table` writes these tables from runs/bench-noc/ (commands: "
                "docs/prompt.md).")
    write_section(ROOT / "docs" / "prompt.md", "prompt-noc", "\n".join(body), title="# Prompts\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["accuracy", "merge", "compare", "table"])
    parser.add_argument("files", nargs="*", help="compare: BEFORE.json AFTER.json; merge: the shard files")
    parser.add_argument("--set", choices=SETS, default="coco")
    parser.add_argument("--data", default=str(DATA), help="the shared data root (static/, davis2016/)")
    parser.add_argument("--weights", action="append", help="NAME=FILE (repeatable; default: the bundled file)")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--every", type=int, default=10, help="davis: every N-th frame")
    parser.add_argument("--limit", type=int, default=0, help="only the first N objects (0 = all)")
    parser.add_argument("--shard", default="1/1", help="K/N: every N-th object from the K-th (parallel runs; merge)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--first-look", help="clicks alone: the first looks' shares of the frame around the clicks, "
                        "comma-separated ('' = none: the frame only; default: the segmenter's)")
    parser.add_argument("--frame-margin", type=float, help="clicks alone: the frame look's margin (0 = none)")
    parser.add_argument("--no-carve", action="store_true",
                        help="leave negative clicks the network ignored as it left them (no carving)")
    parser.add_argument("--box-weights", help="the network for a box alone, as the service's prompt.box_weights "
                        "(default: the --weights network answers it too)")
    parser.add_argument("--correction-weights", help="the network for clicks with a box or a mask (the box + "
                        "clicks and corrective series), as the service's prompt.correction_weights (default: the "
                        "--weights network answers them too)")
    parser.add_argument("--no-partners", action="store_true",
                        help="every last pass by its own network alone (segmenter.FINAL_PASS_PARTNERS off)")
    parser.add_argument("--no-chain", action="store_true",
                        help="several clicks alone by the click network, not as a correction of the first click's "
                        "answer (segmenter.CHAIN_CLICKS off)")
    parser.add_argument("--json", help="where to write the result (one --weights only)")
    parser.add_argument("--rows", help="table: the networks to list, in order (default: all measured)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.part == "compare" and len(args.files) != 2:
        parser.error("compare takes two result files: BEFORE.json AFTER.json")
    return {"accuracy": accuracy, "merge": merge, "compare": compare, "table": table}[args.part](args)


if __name__ == "__main__":
    raise SystemExit(main())
