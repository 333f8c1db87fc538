"""Writes the `longstream` section of docs/benchmarks.md from the bench.json of one `edge-vos bench` run.

    nice edge-vos bench --data ../shared/data/davis2016 --frames 2000 --out runs/bench \
        --plot docs/img/longstream.png      # the shipped CPU config; ring vs unbounded memory
    python tools/bench_longstream.py runs/bench/bench.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.doc_tables import markdown_table, write_section  # noqa: E402


def readout_first_last(folder: Path, mode: str) -> str:
    """Mean readout ms over the first and last 100 frames, from the run's per-frame CSV if present."""
    path = folder / f"{mode}.csv"
    if not path.is_file():
        return "-"
    with path.open(newline="") as fh:
        values = [float(r["readout_ms"]) for r in csv.DictReader(fh)]
    tail = max(1, min(100, len(values) // 10))
    first = values[10 : 10 + tail] or values[:tail]
    return f"{sum(first) / len(first):.0f} → {sum(values[-tail:]) / tail:.0f}"


def section(data: dict, doc: Path, folder: Path) -> str:
    setup = data["setup"]
    header = [
        "mode",
        "readout",
        "fps",
        "total p50 / p95 / p99 ms",
        "key encode p50",
        "readout p50 / p99",
        "value encode p50 / p99",
        "ms/frame first → last",
        "readout ms first → last",
        "memory tensors first → last MiB",
        "RSS first → last (peak) MiB",
    ]
    rows = []
    for s in data["modes"]:
        st = s["stages_ms"]
        cfg = setup["configs"][s["mode"]]
        rows.append(
            [
                s["mode"],
                f"{cfg['readout']['kind']}"
                + (f" top-{cfg['readout']['top_k']}" if cfg["readout"]["kind"] == "stcn" else ""),
                f"{s['fps']:.2f}" if s["fps"] else "-",
                " / ".join(f"{st['total'][k]:.0f}" for k in ("p50", "p95", "p99")),
                f"{st['key_encode']['p50']:.0f}",
                f"{st['readout']['p50']:.0f} / {st['readout']['p99']:.0f}",
                f"{st['value_encode']['p50']:.0f} / {st['value_encode']['p99']:.0f}",
                f"{s['total_ms_first']:.0f} → {s['total_ms_last']:.0f}",
                readout_first_last(folder, s["mode"]),
                f"{s['memory_first_mib']:.1f} → {s['memory_last_mib']:.1f}",
                f"{s['rss_first_mib']:.0f} → {s['rss_last_mib']:.0f} ({s['rss_peak_mib']:.0f})",
            ]
        )
    cfg0 = next(iter(setup["configs"].values()))
    mem = {m: c["memory"] for m, c in setup["configs"].items()}
    readouts = {json.dumps(c["readout"], sort_keys=True) for c in setup["configs"].values()}
    same_readout = (
        f"Both modes use the same readout ({cfg0['readout']['kind']}), so they differ only in memory policy. "
        if len(readouts) == 1
        else ""
    )
    body = [
        "## Long stream: latency and memory against frame index",
        "",
        f"{setup['frames']} frames per mode through `Tracker.step`: {setup['clip']} looped forwards and "
        f"backwards; working short side {cfg0['resolution']}; {setup['machine']}; "
        f"{'untrained (random) network' if setup['random_network'] else 'trained weights'}. "
        f"Ring memory: capacity {mem.get('ring', {}).get('capacity', '-')}, every "
        f"{mem.get('ring', {}).get('mem_every', '-')}th frame. "
        + "".join(f"{name}: every {mem[mode]['mem_every']}th frame kept, never evicted. "
                  for mode, name in (("unbounded", "Unbounded"), ("official-stcn", "Official STCN")) if mode in mem)
        + f"{same_readout}"
        f"Percentiles leave out the first {setup['warmup_frames_excluded']} frames; "
        '"first → last" are means over the first and last 100 frames (10% of shorter runs); stages not run '
        'on a frame count as 0 ms (value encode runs on memory frames only, so its p50 is 0). "Memory tensors" '
        "is what the memory has allocated (the unbounded memory doubles its preallocation when full).",
        "",
        markdown_table(header, rows),
        "",
        "Measured in one `edge-vos bench` run (both modes, `OMP_NUM_THREADS=1`, `nice`); per-frame CSVs and "
        "bench.json in its `--out`. The development machine is shared (2 cores, other engineers' jobs running "
        "at the same time), so absolute times are inflated and noisy: the trend against frame index is the "
        "measurement, not the level.",
    ]
    if setup.get("plot"):
        plot = Path(setup["plot"])
        try:
            plot = plot.resolve().relative_to(doc.resolve().parent)
        except ValueError:
            pass
        body += ["", f"![per-frame time and memory against frame index]({plot.as_posix()})"]
    return "\n".join(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench_json", type=Path)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_section(
        args.doc, "longstream", section(json.loads(args.bench_json.read_text()), args.doc, args.bench_json.parent)
    )
    logging.getLogger("bench_longstream").info("section `longstream` -> %s", args.doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
