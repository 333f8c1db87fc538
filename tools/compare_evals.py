"""Per-sequence J&F of several `edge-vos eval` outputs side by side, and who wins how many sequences.

The project's rule for a change (docs/model-card.md, "How a change is chosen") counts per-sequence wins, not
a mean moved by one sequence. Usage, first folder = the reference:
    python tools/compare_evals.py runs/eval/bundled/valdev runs/eval/coco-a-s60/valdev [--label a --label b]
Prints a Markdown table: one row per sequence, the mean, and per later column the sequences it wins /
loses against the reference (a difference within `--tie` points counts as neither).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def sequence_scores(folder: Path) -> dict[str, float]:
    """{sequence: J&F} from FOLDER/metrics.json (sequences that were not scored are left out)."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} an `edge-vos eval --out` folder?")
    data = json.loads(path.read_text())
    return {name: s["J&F"] for name, s in data["sequences"].items() if s.get("J&F") is not None}


def table(columns: list[dict[str, float]], labels: list[str], tie: float) -> str:
    names = sorted(set().union(*columns))
    rows = [f"| sequence | {' | '.join(labels)} |", "|---" * (len(labels) + 1) + "|"]
    for name in names:
        rows.append(f"| {name} | " + " | ".join(f"{c[name]:.1f}" if name in c else "—" for c in columns) + " |")
    means = [sum(c.values()) / len(c) if c else float("nan") for c in columns]
    rows.append("| **mean** | " + " | ".join(f"**{m:.2f}**" for m in means) + " |")
    ref = columns[0]
    tally = ["—"]
    for col in columns[1:]:
        common = [n for n in names if n in ref and n in col]
        wins = sum(col[n] - ref[n] > tie for n in common)
        losses = sum(ref[n] - col[n] > tie for n in common)
        tally.append(f"{wins} / {losses}")
    rows.append(f"| wins / losses vs {labels[0]} (tie {tie}) | " + " | ".join(tally) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="eval output folders; the first is the reference")
    parser.add_argument("--label", action="append", default=[], help="column label per folder (in order)")
    parser.add_argument("--tie", type=float, default=0.1, help="differences within this many points are ties")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.folders):
        parser.error(f"{len(args.label)} labels for {len(args.folders)} folders")
    try:
        columns = [sequence_scores(f) for f in args.folders]
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(table(columns, args.label or [f.parent.name or str(f) for f in args.folders], args.tie))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
