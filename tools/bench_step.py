"""Stage times of `Tracker.step` on real DAVIS frames at 240x432, several configurations interleaved in one
run; writes the "step" section of docs/benchmarks.md.

    /work/bin/bench-lock .venv/bin/python tools/bench_step.py --before /tmp/step/base      # before/after
    /work/bin/bench-lock .venv/bin/python tools/bench_step.py --variants threads --no-doc  # 1 vs 2 threads

Each configuration runs in its own worker process (its own tracker, torch threads and, for `--before`, its own
source tree: an unpacked older commit, so the code before a change and after it run side by side). The parent
hands frame i to every worker in turn (rotating the order per frame) and waits for each, so only one worker
computes at a time and load from other processes hits every configuration alike. A worker steps its tracker
and answers with the stage times the tracker reports plus the wall time of the calls. With deferred memory
writes the mask is ready when `step` returns and the value encoding runs after (`write_deferred_memory`);
`to mask` is the first, `frame work` both.
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
SIZE = (240, 432)  # frame height, width (--size changes it)
STAGES = ("preprocess", "key_encode", "readout", "decode", "prior", "aggregate", "postprocess", "value_encode")


# ---- worker ------------------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Steps one tracker on the frames the parent names (one index per stdin line), answers JSON lines."""
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree))
    import torch

    import edge_vos
    from edge_vos.config import from_dict, read_yaml
    from edge_vos.tracker.config import TrackerConfig

    if not Path(edge_vos.__file__).resolve().is_relative_to(tree):
        raise SystemExit(f"worker imported edge_vos from {edge_vos.__file__}, not from {tree}")
    torch.set_num_threads(args.threads)
    try:  # the process set-up `edge-vos` does, where the tree has it
        from edge_vos.allocator import keep_freed_memory
    except ImportError:
        pass
    else:
        keep_freed_memory()
    from edge_vos.tracker import Tracker

    spec = json.loads(args.spec)
    shipped = read_yaml(tree / "configs" / "cpu.yaml")
    for dotted, value in spec.get("overrides", {}).items():  # "tracker.resolution": 240, ...
        *path, last = dotted.split(".")
        node = shipped
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    config = from_dict(TrackerConfig, shipped["tracker"], "tracker")
    if hasattr(config, "profile"):  # stage timings are opt-in (a tree before that timed every stage always)
        config.profile = True
    tracker = Tracker(config)
    defer = bool(spec.get("defer"))
    data = np.load(args.frames)
    images, first_mask = data["images"], data["mask"]
    print(json.dumps({"ready": True, "precision": str(getattr(tracker, "precision", config.precision))}), flush=True)
    for line in sys.stdin:
        if line.strip() == "q":
            break
        index = int(line)
        mask = first_mask if index == 0 else None
        t0, c0 = time.perf_counter(), time.process_time()
        if defer:
            result = tracker.step(images[index], mask, defer_memory_write=True)
        else:
            result = tracker.step(images[index], mask)
        t_mask, c_mask = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
        timings = dict(result.timings_ms)
        if defer:
            t1 = time.perf_counter()
            timings["value_encode"] = tracker.write_deferred_memory()
            t_write = (time.perf_counter() - t1) * 1000
        else:
            t_write = 0.0
        c_work = (time.process_time() - c0) * 1000
        print(json.dumps({"to_mask": t_mask, "work": t_mask + t_write, "cpu_to_mask": c_mask, "cpu_work": c_work,
                          "timings": timings}), flush=True)


# ---- parent ------------------------------------------------------------------------------------------------


def load_frames(data: Path, sequence: str, frames: int, out: Path) -> None:
    """The first `frames` frames of a DAVIS sequence resized to SIZE, and its first mask, into an .npz."""
    import cv2

    from edge_vos.data.davis import davis_sequences

    seq = next(s for s in davis_sequences(data, "val-dev") if s.name == sequence)
    h, w = SIZE
    images = np.stack([cv2.resize(seq.image(i), (w, h), interpolation=cv2.INTER_AREA) for i in range(frames)])
    first = seq.mask(0)
    assert first is not None
    mask = cv2.resize(first, (w, h), interpolation=cv2.INTER_NEAREST)
    np.savez(out, images=images, mask=mask)


def variants(kind: str, before: Path | None, threads: int, before_defers: bool = False) -> dict[str, dict[str, Any]]:
    """name -> {tree, threads, spec}: the configurations one run interleaves."""
    after = str(ROOT)
    stcn = {"tracker.readout": {"kind": "stcn"}}  # the STCN readout with its default options (top-20)
    out: dict[str, dict[str, Any]] = {}
    if kind == "before-after":
        if before is not None:
            if before_defers:  # a tree with the deferred memory write and its own shipped config
                out["before: tmrn (shipped)"] = {"tree": str(before), "threads": threads, "spec": {"defer": True}}
                out["before: stcn"] = {"tree": str(before), "threads": threads,
                                       "spec": {"defer": True, "overrides": stcn}}
            else:
                out["before: tmrn fp32"] = {"tree": str(before), "threads": threads, "spec": {"overrides": {}}}
                out["before: stcn fp32"] = {"tree": str(before), "threads": threads, "spec": {"overrides": stcn}}
        out["after: tmrn (shipped)"] = {"tree": after, "threads": threads, "spec": {"defer": True}}
        out["after: stcn"] = {"tree": after, "threads": threads, "spec": {"defer": True, "overrides": stcn}}
        out["after: tmrn fp32"] = {"tree": after, "threads": threads,
                                   "spec": {"defer": True, "overrides": {"tracker.precision": "fp32"}}}
    elif kind == "resolution":
        # What the working resolution costs on camera-sized frames: the tree before (its shipped config)
        # against today's shipped config at each working size.
        if before is not None:
            out["before: shipped"] = {"tree": str(before), "threads": threads, "spec": {"overrides": {}}}
        for res in (240, 360, 480):
            out[f"after: shipped, working size {res}"] = {
                "tree": after, "threads": threads, "spec": {"defer": True, "overrides": {"tracker.resolution": res}}}
    elif kind == "readouts":
        # Issue #11's ratios: the shipped TMRN against the STCN readout on the same weights, same frames,
        # and the sparse TMRN as it was before (20 entries per slot, 64 agents)
        out["tmrn (shipped)"] = {"tree": after, "threads": threads, "spec": {"defer": True}}
        out["stcn"] = {"tree": after, "threads": threads, "spec": {"defer": True, "overrides": stcn}}
        out["tmrn, agents every frame (agents_every 1)"] = {
            "tree": after, "threads": threads,
            "spec": {"defer": True, "overrides": {"tracker.readout.tmrn.agents_every": 1}}}
        out["tmrn, previous sparse settings (slot_top_k 20, agents every frame)"] = {
            "tree": after, "threads": threads, "spec": {"defer": True, "overrides": {
                "tracker.readout.tmrn.slot_top_k": 20, "tracker.readout.tmrn.agents_every": 1}}}
    elif kind == "prior":
        # What the motion prior's mask-piece selection and hold cost: the window alone against the shipped
        # prior (docs/history/tracker-runs.md, "Look-alikes in the tracker").
        window_only = {"tracker.prior.split": "keep", "tracker.prior.hold": 0.0}
        out["prior: window only"] = {"tree": after, "threads": threads,
                                     "spec": {"defer": True, "overrides": window_only}}
        out["prior: shipped (split: track, hold)"] = {"tree": after, "threads": threads, "spec": {"defer": True}}
    elif kind == "threads":
        for n in (1, 2):
            out[f"tmrn (shipped), {n} thread(s)"] = {"tree": after, "threads": n, "spec": {"defer": True}}
    elif kind == "backends":
        for backend in ("torch", "onnxruntime"):
            for precision in ("fp32", "bf16"):
                overrides = {"tracker.backend": backend, "tracker.precision": precision}
                out[f"tmrn {backend} {precision}"] = {"tree": after, "threads": threads,
                                                      "spec": {"defer": True, "overrides": overrides}}
    else:
        raise SystemExit(f"unknown --variants {kind!r}")
    return out


def interleave(procs: dict[Any, subprocess.Popen[str]], frames: int) -> dict[Any, list[dict[str, Any]]]:
    """Steps every worker through frames 0..frames-1, frame by frame, the order rotated each frame so that no
    worker always runs first; then stops them. Returns each worker's records (tools/bench_objects.py too)."""
    records: dict[Any, list[dict[str, Any]]] = {name: [] for name in procs}
    names = list(procs)
    for i in range(frames):
        for name in names[i % len(names):] + names[: i % len(names)]:
            p = procs[name]
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(f"{i}\n")
            p.stdin.flush()
            records[name].append(json.loads(p.stdout.readline()))
    for p in procs.values():
        assert p.stdin is not None
        p.stdin.write("q\n")
        p.stdin.flush()
        p.wait()
    return records


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(args.workdir)
    tmp.mkdir(parents=True, exist_ok=True)
    frames_file = tmp / "bench_step_frames.npz"
    load_frames(args.data, args.sequence, args.frames, frames_file)
    configs = variants(args.variants, Path(args.before).resolve() if args.before else None, args.threads,
                       args.before_defers)
    env = dict(os.environ)
    procs: dict[str, subprocess.Popen[str]] = {}
    for name, c in configs.items():
        env_c = dict(env, OMP_NUM_THREADS=str(c["threads"]))
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, "worker", "--tree", c["tree"], "--threads", str(c["threads"]),
             "--frames", str(frames_file), "--spec", json.dumps(c["spec"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env_c, cwd=c["tree"],
        )
    info = {}
    for name, p in procs.items():
        assert p.stdout is not None
        info[name] = json.loads(p.stdout.readline())
    load_before = os.getloadavg()[0]
    records = interleave(procs, args.frames)
    return {"configs": configs, "info": info, "records": records, "load": [load_before, os.getloadavg()[0]],
            "frames": args.frames, "warmup": args.warmup, "sequence": args.sequence}


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    warm = result["warmup"]
    for name, recs in result["records"].items():
        recs = recs[warm:]
        to_mask = [r["to_mask"] for r in recs]
        work = [r["work"] for r in recs]
        stages = {s: statistics.median([r["timings"].get(s, 0.0) for r in recs]) for s in STAGES}
        written = [r["timings"]["value_encode"] for r in recs if r["timings"].get("value_encode")]
        rows.append({
            "name": name, "stages": stages, "value_encode_when_written": statistics.median(written) if written else 0.0,
            "to_mask_p50": float(np.percentile(to_mask, 50)), "to_mask_p95": float(np.percentile(to_mask, 95)),
            "work_p50": float(np.percentile(work, 50)), "work_p95": float(np.percentile(work, 95)),
            "work_mean": float(np.mean(work)), "frames": len(recs),
            "cpu_to_mask_p50": statistics.median(r["cpu_to_mask"] for r in recs),
            "cpu_work_mean": float(np.mean([r["cpu_work"] for r in recs])),
        })
    return rows


def table(result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    sys.path.insert(0, str(ROOT))
    from tools.doc_tables import markdown_table

    header = ["configuration", *STAGES[:-1], "value encode (memory frames)", "to mask p50 / p95",
              "p95 / p50", "frame work p50 / p95 / mean", "CPU ms: to mask p50, frame work mean"]
    body = []
    for r in rows:
        s = r["stages"]
        body.append([
            r["name"], *(f"{s[k]:.1f}" for k in STAGES[:-1]), f"{r['value_encode_when_written']:.1f}",
            f"**{r['to_mask_p50']:.1f}** / {r['to_mask_p95']:.1f}", f"{r['to_mask_p95'] / r['to_mask_p50']:.2f}",
            f"{r['work_p50']:.1f} / {r['work_p95']:.1f} / {r['work_mean']:.1f}",
            f"{r['cpu_to_mask_p50']:.1f}, {r['cpu_work_mean']:.1f}",
        ])
    import torch

    threads = sorted({c["threads"] for c in result["configs"].values()})
    head = (
        f"`tools/bench_step.py --variants {result['variants']}`, measured {result['when']}: DAVIS-2016 val-dev "
        f"`{result['sequence']}`, first {result['frames']} frames resized to {SIZE[1]}x{SIZE[0]} (INTER_AREA), its "
        f"first mask as the prompt; `configs/cpu.yaml`'s tracker (bundled weights) with the overrides named; "
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads {threads}; "
        f"load average {result['load'][0]:.1f} before, {result['load'][1]:.1f} after; under `/work/bin/bench-lock`. "
        f"Configurations interleaved frame by frame (one worker process each, order rotated per frame); first "
        f"{result['warmup']} frames left out. Stage columns: median ms over all frames (value encode runs on "
        f"every 5th frame, so its median is 0; its own column is the median over the frames that wrote memory). "
        f"*to mask*: wall time of `step()` until the label map is returned; *frame work*: that plus the deferred "
        f"memory write (`write_deferred_memory()`), i.e. all the work a frame costs; *CPU ms*: the process's CPU "
        f"time of the same calls (all its threads), which other jobs on the machine inflate far less than wall "
        f"time. `before` = the tree at {result.get('before_commit', '-')}."
    )
    text = head + "\n\n" + markdown_table(header, body)
    ratios = []  # issue #11's ratios: each configuration against the STCN readout of its own tree, same run
    for prefix in ("", "before: ", "after: "):
        base = next((r for r in rows if r["name"] == f"{prefix}stcn"), None)
        if base is None:
            continue
        group = [r for r in rows if r["name"].startswith(prefix) and (prefix or ":" not in r["name"])]
        ratios += [[r["name"], f"{r['to_mask_p50'] / base['to_mask_p50']:.3f}x",
                    f"{r['stages']['readout'] / base['stages']['readout']:.2f}x"] for r in group]
    if ratios:
        text += "\n\n" + markdown_table(["configuration", "to mask p50 / its tree's stcn", "readout / stcn"], ratios)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--tree", required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--frames", required=True)
    w.add_argument("--spec", required=True)
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "davis2016")
    parser.add_argument("--sequence", default="cows")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--variants", default="before-after",
                        help="before-after | readouts | threads | backends | resolution | prior")
    parser.add_argument("--size", default="240x432", help="frame HEIGHTxWIDTH the DAVIS frames are resized to")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of every configuration (the threads variant sets its own)")
    parser.add_argument("--before", help="source tree of the 'before' code (git archive of an older commit)")
    parser.add_argument("--before-commit", default="-", help="the commit that tree holds (for the doc)")
    parser.add_argument("--before-defers", action="store_true",
                        help="the 'before' tree has the deferred memory write: run it with it, at its shipped config")
    parser.add_argument("--workdir", default="/tmp/bench_step")
    parser.add_argument("--json", type=Path, help="also write the raw per-frame records here")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    if args.cmd == "worker":
        worker(args)
        return
    global SIZE
    SIZE = tuple(int(v) for v in args.size.lower().split("x"))  # type: ignore[assignment]
    sys.path.insert(0, str(ROOT))
    result = run(args)
    result.update(variants=args.variants, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  before_commit=args.before_commit)
    rows = summarise(result)
    text = table(result, rows)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"result": result, "rows": rows}))
    if not args.no_doc:
        from tools.doc_tables import write_section

        section = {"before-after": "step", "threads": "step-threads", "backends": "step-backends",
                   "resolution": "step-resolution", "readouts": f"step-readouts-{SIZE[0]}",
                   "prior": "step-prior"}[args.variants]
        title = {"step": "## Tracker.step stage by stage at 240x432 (CPU)",
                 "step-threads": "### Tracker.step: torch threads",
                 "step-backends": "### Tracker.step: backend and precision",
                 "step-resolution": f"### Tracker.step: working resolution on {SIZE[1]}x{SIZE[0]} frames",
                 f"step-readouts-{SIZE[0]}": f"### Tracker.step: TMRN against the STCN readout on {SIZE[1]}x{SIZE[0]} "
                 "frames",
                 "step-prior": "### Tracker.step: motion prior's pieces and hold"}[section]
        write_section(args.doc, section, f"{title}\n\n{text}")


if __name__ == "__main__":
    main()
