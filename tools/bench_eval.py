"""J&F table for docs/benchmarks.md (section `eval`): every method on DAVIS-2016 val-dev and on a
synthetic multi-object set with distractors, each measured in one `edge-vos eval` run.

    nice python tools/bench_eval.py run --resolution 240 --random-network   # runs all, writes the doc
    python tools/bench_eval.py table                                         # rebuilds the doc table only

Runs go to runs/eval/<dataset>/<method>/ (masks, per-sequence.csv, metrics.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_vos.cli import main as edge_vos  # noqa: E402
from tools.doc_tables import markdown_table, write_section  # noqa: E402

log = logging.getLogger("bench_eval")

DAVIS = ROOT.parent / "shared" / "data" / "davis2016"
METHODS = {  # name -> extra `edge-vos eval` arguments
    "first-frame-copy": ["--baseline", "first-frame-copy"],
    "official-stcn": ["--official-stcn"],
    "tmrn": ["--readout", "tmrn"],
}
SYNTHETIC = {
    "num_sequences": 4,
    "seed": 1000,
    "num_frames": 30,
    "size": (240, 432),
    "num_objects": 3,
    "num_distractors": 2,
}


def datasets(out: Path) -> dict[str, list[str]]:
    """Dataset name -> `edge-vos eval` data arguments; writes the synthetic set on first use."""
    from edge_vos.data.synthetic import write_synthetic_davis

    synth = out / "synthetic-data"
    if not (synth / "ImageSets").is_dir():
        write_synthetic_davis(synth, **SYNTHETIC)  # type: ignore[arg-type]
    found = {"synthetic": ["--data", str(synth), "--split", "val", "--res", f"{SYNTHETIC['size'][0]}p"]}
    if DAVIS.is_dir():
        found = {"davis2016 val-dev": ["--data", str(DAVIS), "--split", "val-dev", "--res", "480p"], **found}
    return found


def run(args: argparse.Namespace) -> int:
    # TrackerConfig's defaults: the shipped tracker. (The documented rows before issue #25 ran the defaults of
    # then: fp32 eager torch, 128 agents every frame, no prior; `st` was a readout kind then, now an ablation in
    # tests/readout_reference.py.)
    tracker = ["--config", "none", "--resolution", str(args.resolution), "--no-progress"]
    tracker += ["--random-network"] if args.random_network else ["--weights", args.weights] if args.weights else []
    for name, data in datasets(args.out).items():
        for method in args.methods.split(","):
            out = args.out / name.split()[0] / (f"{method}@{args.tag}" if args.tag else method)
            argv = ["eval", *data, "--out", str(out), *METHODS[method]]
            argv += tracker if method != "first-frame-copy" else ["--no-progress"]
            log.info("edge-vos %s", " ".join(argv))
            if edge_vos(argv) != 0:
                log.error("%s / %s failed", name, method)
    return table(args)


def table(args: argparse.Namespace) -> int:
    rows = []
    notes = set()
    for metrics in sorted(args.out.glob("*/*/metrics.json")):
        m = json.loads(metrics.read_text())
        cfg = m.get("config")
        dataset = "DAVIS-2016 val-dev" if "davis" in metrics.parent.parent.name else "synthetic (3 obj + 2 distractors)"
        weights = (
            "-"
            if cfg is None
            else ("random" if m.get("random_network") else Path(cfg["model"]["weights"]).name or "bundled")
        )
        res = "input" if cfg is None else (cfg["resolution"] or "input")
        fps = f"{m['fps']:.2f}" if m.get("fps") else "-"
        rows.append(
            [
                dataset,
                metrics.parent.name.split("@")[0],
                weights,
                res,
                f"{m['J&F']:.1f}",
                f"{m['J']:.1f}",
                f"{m['F']:.1f}",
                m["frames"],
                fps,
            ]
        )
        if m.get("random_network"):
            notes.add("random")
    order = list(METHODS)
    rows.sort(key=lambda r: (r[0], r[2] != "-", r[2], order.index(r[1]) if r[1] in order else 99))
    header = ["dataset", "method", "weights", "working short side", "J&F", "J", "F", "frames", "tracker fps"]
    body = [
        "## J&F (DAVIS protocol)",
        "",
        "Official davis2017-evaluation rules (first and last frame excluded; overall = mean over objects), "
        "computed by `edge-vos eval`. Masks are predicted at the working short side given and scored at "
        "the annotation size. fps is frames per second inside `Tracker.step` on this machine "
        "(2 CPU cores shared with other engineers' jobs, no GPU, `OMP_NUM_THREADS=1`): slow and noisy.",
        "",
        markdown_table(header, rows),
    ]
    if "random" in notes:
        body += [
            "",
            "Weights `random`: an untrained network (seed 0); these rows check the pipeline and its speed, "
            "not segmentation quality.",
        ]
    if args.note:
        body += ["", args.note]
    body += [
        "",
        "Reproduce: `nice python tools/bench_eval.py run --resolution 240 --random-network` "
        "(or `--weights FILE`); see docs/evaluation.md.",
    ]
    write_section(args.doc, "eval", "\n".join(body))
    log.info("section `eval` (%d rows) -> %s", len(rows), args.doc)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "eval")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--resolution", type=int, default=240)
    parser.add_argument("--weights")
    parser.add_argument("--random-network", action="store_true")
    parser.add_argument("--note", help="a paragraph appended to the section (e.g. where the weights came from)")
    parser.add_argument("--tag", help="suffix of the run folders (method@TAG), to keep runs of other weights")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    raise SystemExit(main())
