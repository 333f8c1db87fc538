"""The tables tools/bench_view.py writes into docs/benchmarks.md ("view") and docs/view.md ("view-stream")."""

from __future__ import annotations

from typing import Any

import numpy as np

from tools.doc_tables import markdown_table


def overhead_markdown(result: dict[str, Any], setup: dict[str, Any]) -> str:
    from tools.bench_view import CONDITIONS, SETTLE, SIZE

    windows = result["windows"]
    cycles = sorted({w["cycle"] for w in windows})
    by = {(w["cycle"], w["condition"]): w for w in windows}
    base, viewer = CONDITIONS[0], CONDITIONS[2]

    def values(condition: str, key: str) -> list[float]:
        return [by[c, condition][key] for c in cycles]

    def ratios(condition: str) -> np.ndarray:
        return np.array([100 * (by[c, condition]["frame_interval_ms"] / by[c, base]["frame_interval_ms"] - 1)
                         for c in cycles])

    rows = []
    for c in CONDITIONS:
        r = ratios(c)
        q1, q3 = np.percentile(r, [25, 75])
        rows.append([
            c, f"{np.median(values(c, 'frame_interval_ms')):.1f}", f"{np.median(values(c, 'step_ms_mean')):.1f}",
            "-" if c == base else f"{np.median(r):+.1f}% ({q1:+.1f} .. {q3:+.1f})",
            "-" if c == base else f"{np.median(values(c, 'view_cpu_ms_per_frame')):.2f}",
            f"{np.median(values(c, 'publisher_cpu_ms_per_frame')):.2f}",
        ])
    one = float(np.median(ratios(viewer)))
    pooled = 100 * (sum(values(viewer, "frame_interval_ms")) / sum(values(base, "frame_interval_ms")) - 1)
    verdict = "under" if one < 5 else "OVER"
    added_cpu = float(np.median(values(viewer, "view_cpu_ms_per_frame")) + np.median(
        values(viewer, "publisher_cpu_ms_per_frame")) - np.median(values(base, "publisher_cpu_ms_per_frame")))
    added_pct = 100 * added_cpu / float(np.median(values(base, "frame_interval_ms")))
    counts = result["viewer"]
    t = setup["tracker"]
    return "\n".join([
        "## Web view: what it costs the service at 240p (CPU)",
        "",
        f"`tools/bench_view.py`: one `edge-vos` service (synthetic scene {SIZE[1]}x{SIZE[0]} with 2 objects, "
        f"`pace: fastest`, tracker from `{setup['config']}`: arch {t['model']['arch']}, readout "
        f"{t['readout']['kind']}, working short side {t['resolution']}, {t['device']} "
        f"{t['precision']}, {setup['threads']} torch thread, weights {setup['weights']}), its conditions switched "
        f"every {SETTLE + setup['frames']} frames: **no view** (no previews, no view), **view, no viewer** "
        "(previews on and the view on the service's sockets, as `run --view` starts it; nobody watching), "
        "**view, one viewer** (the same, with a WebSocket client in another process that acknowledges every "
        "frame, as the page does); "
        f"{len(cycles)} cycles of the three after one for warm-up, order alternating, {setup['frames']} frames "
        f"measured per window after "
        f"{SETTLE} frames that straddle the switch. Fine interleaving because this shared 2-core machine's load "
        f"swings the frame time by tens of percent within a minute; {setup['machine']}; load average "
        f"{result['load_before']:.1f} before, {result['load_after']:.1f} after.",
        "",
        markdown_table(["condition", "frame time ms (median of windows)", "Tracker.step ms",
                        "frame time vs no view in the same cycle: median (quartiles)", "view threads CPU ms/frame",
                        "publisher thread CPU ms/frame"], rows),
        "",
        f"**One viewer connected vs no view: {one:+.1f}% frame time** (median over cycles; all windows pooled: "
        f"{pooled:+.1f}%; goal: under 5%, {verdict}). The viewer received {counts['frames']} frames "
        f"({counts['bytes'] / max(1, counts['frames']) / 1024:.1f} kB each) and spent "
        f"{1000 * counts['cpu_s'] / max(1, counts['frames']):.1f} ms of CPU per frame on this machine's two cores "
        "(a browser elsewhere costs the service nothing of that). The CPU time the view adds per frame, "
        f"from the kernel's per-thread counters (schedstat), independent of the frame-time noise: its three "
        f"threads (HTTP/WebSocket, ZeroMQ feed, commands) plus the publisher thread's preview JPEG = "
        f"**{added_cpu:.1f} ms per frame, {added_pct:.1f}% of the frame time**, spent beside the inference thread, "
        "not in it. Frame time = mean publish-to-publish interval of a window.",
    ])


def stream_markdown(rows: list[dict[str, Any]]) -> str:
    return "\n".join([
        "The work that differs per frame on the service host, and the bytes per frame (`tools/bench_view.py "
        "--stream-only`; synthetic scene with 3 objects, preview JPEG quality 75, one OpenCV thread, median of "
        "repeated runs). Both then write about the same bytes to each viewer's socket; everything the view costs "
        "per frame, sending included, is measured in benchmarks.md (\"Web view\").",
        "",
        markdown_table(["frame", "WebSocket: pack ms", "WebSocket kB/frame", "MJPEG: compose + encode ms",
                        "MJPEG kB/frame"],
                       [[r["size"], f"{r['ws_ms']:.3f}", f"{r['ws_kb']:.1f}", f"{r['mjpeg_ms']:.2f}",
                         f"{r['mjpeg_kb']:.1f}"] for r in rows]),
    ])
