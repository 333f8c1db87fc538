"""What a page is sent when the service runs several cameras (issue #22): bytes per second from the view to one
viewer that shows one stream (a phone), one stream large and thumbnails of the others (the page on a wide
screen), or every stream in full, with 4 streams in one service.

    /work/bin/bench-lock .venv/bin/python tools/bench_view_streams.py          # writes docs/view.md's section
    .venv/bin/python tools/bench_view_streams.py --seconds 3 --no-doc           # a quick look

The service: `streams:` of 4 synthetic 432x240 scenes at 10 fps (`pace: realtime`), previews on (the publish
defaults), configs/cpu.yaml's tracker in eager torch with no object tracked, so what travels is each frame's
preview JPEG and its (empty) label map; tracked objects add their label map's PNG, a few kB a frame. Its view
as `run --view` starts it, and one viewer at a time in this process, acknowledging every frame as the page does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.doc_tables import markdown_table, write_section  # noqa: E402

STREAMS = ("front", "back", "left", "right")
FPS = 10.0
PROFILES = {  # name: (watch, thumbs)
    "phone: one stream": (STREAMS[:1], ()),
    "wide screen: one stream + 3 thumbnails": (STREAMS[:1], STREAMS[1:]),
    "every stream in full": (STREAMS, ()),
}


async def _viewer(port: int, watch: tuple[str, ...], thumbs: tuple[str, ...], seconds: float) -> dict[str, Any]:
    """Bytes and frames per stream a viewer is sent in `seconds` (after one second for its choice to settle)."""
    import aiohttp

    from edge_vos.view.feed import unpack_frame

    sent: dict[str, list[int]] = {}
    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/api/stream") as ws:
        await ws.send_str(json.dumps({"type": "watch", "watch": list(watch), "thumbs": list(thumbs)}))
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds + 1:
            try:
                message = await ws.receive(timeout=seconds + 1 - elapsed)
            except asyncio.TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            await ws.send_str('{"type": "ack"}')
            if elapsed >= 1:
                counts = sent.setdefault(unpack_frame(message.data)[0]["stream"], [0, 0])
                counts[0] += 1
                counts[1] += len(message.data)
    return {name: {"fps": frames / seconds, "kB_s": size / 1024 / seconds} for name, (frames, size) in sent.items()}


def measure(seconds: float) -> dict[str, Any]:
    from edge_vos.config import load_yaml
    from edge_vos.program import Program
    from edge_vos.run_config import RunConfig

    streams = [{"id": name, "source": f"synthetic:seed={i + 1}&frames=120&size=240x432&objects=2&distractors=1"}
               for i, name in enumerate(STREAMS)]
    config = load_yaml(RunConfig, ROOT / "configs" / "cpu.yaml", {
        "streams": streams, "source.fps": FPS, "source.pace": "realtime", "source.loop": True,
        "tracker.backend": "torch", "prompt.use_source_mask": False, "publish.preview": True,
        "publish.endpoint": "tcp://127.0.0.1:*", "control.endpoint": "tcp://127.0.0.1:*",
        "view.listen": "127.0.0.1:0"})
    program = Program(config)
    program.start()
    try:
        view = program.view
        assert view is not None
        deadline = time.monotonic() + 120
        while not all(s["state"] == "streaming" and s["fps"] > 0.8 * FPS for s in view.state()["streams"][:4]) \
                or len(view.feed.streams) < 4:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the 4 streams did not reach {FPS} fps: {view.state()['streams']}")
            time.sleep(0.2)
        before, t0 = {s.id: s.counters.masks for s in view.feed.streams}, time.monotonic()
        results = {name: asyncio.run(_viewer(view.port, watch, thumbs, seconds))
                   for name, (watch, thumbs) in PROFILES.items()}
        elapsed = time.monotonic() - t0
        published = {s.id: (s.counters.masks - before[s.id]) / elapsed for s in view.feed.streams}
    finally:
        program.stop()
    return {"seconds": seconds, "published_fps": published, "profiles": results}


def markdown(data: dict[str, Any]) -> str:
    full = sum(s["kB_s"] for s in data["profiles"]["every stream in full"].values())
    rows = []
    for name, (watch, _) in PROFILES.items():
        sent = data["profiles"][name]
        total = sum(s["kB_s"] for s in sent.values())
        large = sum(sent.get(s, {}).get("fps", 0.0) for s in watch) / len(watch)
        others = [sent[s]["fps"] for s in STREAMS if s not in watch and s in sent]
        rows.append([name, f"{total:.0f}", f"{100 * total / full:.0f} %", f"{large:.1f}",
                     f"{max(others):.1f}" if others else "–"])
    rates = ", ".join(f"{v:.1f}" for v in data["published_fps"].values())
    return (f"`python tools/bench_view_streams.py` ({data['seconds']:.0f} s per viewer; 4 streams of 432x240 at "
            f"{FPS:.0f} fps in one service, {rates} fps each as the view received them meanwhile; previews at the "
            "publish defaults, no object tracked). What one viewer is sent:\n\n"
            + markdown_table(["viewer", "kB/s", "of every stream in full", "fps of each stream shown large",
                              "fps of each other stream"], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per viewer")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "view.md")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    data = measure(args.seconds)
    text = markdown(data)
    print(json.dumps(data, indent=1))  # noqa: T201
    print(text)  # noqa: T201
    if not args.no_doc:
        write_section(args.doc, "view-streams", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
