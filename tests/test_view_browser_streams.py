"""The web view of two streams in a real browser (issue #22): headless Chromium (selenium) on the page of a view
whose service runs two cameras of different sizes. The stream bar shows both (live pictures on a wide screen);
a tile, a key or `#stream=` shows one large; point-and-track, a correction and remove work on each, and each
command names the stream it was made on; on a phone-sized screen the page is sent the shown stream only.

Each test runs twice: against the service itself (`streams:` in configs/cpu.yaml's service with the bundled
weights and prompt network, on two synthetic scenes; boxes and clicks aimed at the scenes' ground truth), and
against tests/two_streams.py, a two-camera publisher and control replier written for these tests (its objects
are exactly the boxes drawn, so the page's drawing is checked to the pixel). Skipped (with the reason) where no
browser is installed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_vos.client import CommandClient
from edge_vos.view.config import ViewConfig
from edge_vos.view.server import ViewServer

from .test_view_browser import _browser_paths, _chrome, _screenshot, _severe, _wait
from .two_streams import TwoStreams

FRAMES = 300
# The service's scenes: (seed, height, width, objects, distractors) per stream.
SCENES = {"front": (3, 240, 432, 3, 1), "back": (5, 192, 256, 2, 0)}
FAKE_SIZES = {"front": (320, 180), "back": (240, 160)}  # width, height


@dataclass
class Cameras:
    """A view of two streams: of the service (`scenes`: each stream's ground truth [T,H,W]) or of the fake."""

    view: ViewServer
    control: str
    sizes: dict[str, tuple[int, int]]  # width, height
    scenes: dict[str, np.ndarray] | None = None

    def command(self, command: dict[str, Any]) -> dict[str, Any]:
        with CommandClient(self.control, timeout_s=60) as ctl:
            return ctl.request(command, check=False)

    def truth(self, name: str, capture_seq: int, obj: int) -> np.ndarray:
        """Object `obj`'s mask in the frame stream `name` sent as `capture_seq` (the service's scenes loop
        forwards then backwards); for the fake, the object its test adds: the box (40, 40)-(100, 100)."""
        if self.scenes is None:
            w, h = self.sizes[name]
            mask = np.zeros((h, w), bool)
            mask[40:100, 40:100] = True
            return mask
        r = capture_seq % (2 * FRAMES - 2)
        return self.scenes[name][r if r < FRAMES else 2 * FRAMES - 2 - r] == obj

    def box_of(self, name: str, capture_seq: int, obj: int, margin: int = 5) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.truth(name, capture_seq, obj))
        assert len(xs), f"object {obj} not visible in frame {capture_seq} of {name}"
        w, h = self.sizes[name]  # 2 px inside the picture: a press on its very edge can miss it
        return (max(2, int(xs.min()) - margin), max(2, int(ys.min()) - margin),
                min(w - 3, int(xs.max()) + margin), min(h - 3, int(ys.max()) + margin))


@pytest.fixture(scope="module", params=["service", "fake"])
def cameras(request: pytest.FixtureRequest) -> Iterator[Cameras]:
    _browser_paths()
    if request.param == "fake":
        with TwoStreams(streams=tuple((name, w, h) for name, (w, h) in FAKE_SIZES.items()), fps=8.0) as fake:
            view = ViewServer(ViewConfig(listen="127.0.0.1:0", stats_every_s=0.5), fake.masks_endpoint,
                              fake.control_endpoint)
            view.start()
            try:
                _wait(lambda: len(view.feed.streams) == 2, "both streams seen by the view")
                yield Cameras(view, fake.control_endpoint, FAKE_SIZES)
            finally:
                view.stop()
        return
    from edge_vos.config import load_yaml
    from edge_vos.data.synthetic import generate_sequence
    from edge_vos.program import Program
    from edge_vos.run_config import RunConfig

    root = Path(__file__).resolve().parents[1]
    streams = [{"id": name, "source": f"synthetic:seed={seed}&frames={FRAMES}&size={h}x{w}&objects={n}"
                                      f"&distractors={d}"} for name, (seed, h, w, n, d) in SCENES.items()]
    config = load_yaml(RunConfig, root / "configs" / "cpu.yaml", {
        "streams": streams, "source.fps": 4.0, "publish.endpoint": "tcp://127.0.0.1:*",
        "control.endpoint": "tcp://127.0.0.1:*", "publish.preview": True, "prompt.use_source_mask": False,
        "control.history": 300, "pipeline.torch_threads": 1, "view.listen": "127.0.0.1:0",
        "view.stats_every_s": 0.5})
    program = Program(config)
    program.start()
    try:
        view = program.view
        assert view is not None
        # A first frame of each stream published: the runners are built, so a prompt is answered in time.
        _wait(lambda: all(s.snapshot["seq"] is not None for s in view.feed.streams) and len(view.feed.streams) == 2,
              "both streams' first frames", timeout=240)
        scenes = {name: generate_sequence(seed, FRAMES, (h, w), n, d)[1] for name, (seed, h, w, n, d) in SCENES.items()}
        yield Cameras(view, program.service.control.last_endpoint,
                      {name: (w, h) for name, (_, h, w, _, _) in SCENES.items()}, scenes)
    finally:
        program.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with _chrome() as driver:
        yield driver


@pytest.fixture
def page(cameras: Cameras, browser: Any) -> Any:
    """The page freshly loaded on two streams with no objects, at desktop size, front shown; what it sends to
    /api/command and what comes back is recorded in `window.__sent`."""
    for name in cameras.sizes:
        assert cameras.command({"cmd": "reset", "stream": name})["ok"]
    # A page shows the view's first stream when it loads: the first heard of until the view has the
    # service's order (its `streams` command), then the service's first.
    _wait(lambda: cameras.view.first_stream() == "front", "the view's first stream to be the service's first")
    browser.set_window_size(1280, 800)
    browser.get(f"http://127.0.0.1:{cameras.view.port}/")
    browser.get_log("browser")
    browser.execute_script("""window.__sent = [];
        const original = window.fetch;
        window.fetch = async (path, init) => {
            const response = await original(path, init);
            if (String(path).endsWith('/api/command')) {
                response.clone().json().then((reply) => window.__sent.push([JSON.parse(init.body), reply]), () => {});
            }
            return response;
        };""")
    _shows(browser, cameras, "front")
    return browser


def _sent(driver: Any, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last command the page sent with these fields, and its reply. Waits for it: the service can act on a
    command before the page has read its reply and recorded it."""
    def matching() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(c, r) for c, r in driver.execute_script("return window.__sent")
                if all(c.get(k) == v for k, v in fields.items())]
    return _wait(matching, f"the page to send a command with {fields} and read its reply")[-1]


def _shows(driver: Any, cameras: Cameras, name: str) -> None:
    """Waits until stream `name` is the one shown large, with a frame of it painted."""
    w, h = cameras.sizes[name]
    shown = """const $ = (id) => document.getElementById(id);
        return [$('stream-name').textContent, $('m-size').textContent, $('placeholder').hidden,
                $('state').textContent];"""
    try:
        _wait(lambda: driver.execute_script(shown) == [name, f"{w}×{h}", True, "streaming"], f"stream {name} shown")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the page shows {driver.execute_script(shown)}") from None


def _tile(driver: Any, name: str) -> Any:
    """Stream `name`'s tile, scrolled to the middle of the window (not under the sticky top bar)."""
    tile = driver.find_element("css selector", f'#streams .tile[data-stream="{name}"]')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", tile)
    return tile


def _press(driver: Any, selector: str) -> None:
    """Clicks a button scrolled to the middle of the window (not under the sticky top bar)."""
    button = driver.find_element("css selector", selector)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()


def _thumb_painted(driver: Any, name: str) -> bool:
    """Whether the tile's picture shows something, not black."""
    return bool(driver.execute_script("""
        const c = document.querySelector(`#streams .tile[data-stream="${arguments[0]}"] canvas`);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let sum = 0;
        for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
        return sum / (d.length / 4) > 30;""", name))


def _freeze(driver: Any) -> int:
    button = driver.find_element("id", "freeze")
    if button.get_attribute("aria-pressed") != "true":
        button.click()
    time.sleep(0.3)  # a decode in flight finishes before the freeze takes hold
    _wait(lambda: driver.execute_script("const b = document.getElementById('frozen-badge');"
                                        "return !b.hidden && b.textContent.startsWith('frozen');"), "a frozen frame")
    return int(driver.find_element("id", "m-frame").text)


def _at(driver: Any, cameras: Cameras, name: str, x: float, y: float) -> tuple[Any, int, int]:
    """The annotation layer and the offset from its centre of frame pixel (x, y) of stream `name`."""
    svg = driver.find_element("id", "draw")
    rect = svg.rect
    scale = rect["width"] / cameras.sizes[name][0]
    return svg, round(x * scale - rect["width"] / 2), round(y * scale - rect["height"] / 2)


def _click(driver: Any, cameras: Cameras, name: str, x: float, y: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    svg, dx, dy = _at(driver, cameras, name, x, y)
    ActionChains(driver).move_to_element_with_offset(svg, dx, dy).click().perform()


def _drag(driver: Any, cameras: Cameras, name: str, box: tuple[int, int, int, int]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    svg, ax, ay = _at(driver, cameras, name, box[0], box[1])
    _, bx, by = _at(driver, cameras, name, box[2], box[3])
    chain = ActionChains(driver).move_to_element_with_offset(svg, ax, ay).click_and_hold()
    for step in range(1, 5):
        chain = chain.move_to_element_with_offset(svg, ax + (bx - ax) * step // 4, ay + (by - ay) * step // 4)
    chain.release().perform()
    _wait(lambda: driver.execute_script("return document.querySelector('#draw .prompt').innerHTML.length > 0"),
          "the dragged box drawn", timeout=10)


def _toast(driver: Any) -> str:
    text = _wait(lambda: driver.execute_script(
        "const t = [...document.querySelectorAll('.toast')].pop(); return t ? t.textContent : ''"), "a toast")
    driver.execute_script("document.querySelectorAll('.toast').forEach((t) => t.remove())")
    return str(text)


def _track(driver: Any, obj_id: int) -> str:
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element("id", "obj-id")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(obj_id))
    driver.find_element("id", "confirm").click()
    return _toast(driver)


def _ids(cameras: Cameras, name: str) -> list[int]:
    stream = cameras.view.feed.stream(name)
    return [o["id"] for o in stream.snapshot["objects"]] if stream else []  # tracked, visible or not


def _bbox(driver: Any) -> list[float]:
    """The box drawn around object 1 on the frame shown large."""
    return list(driver.execute_script("""const r = [...document.querySelectorAll('#draw .tags rect.bbox')]
        .find((e) => e.getAttribute('stroke') === 'rgb(255, 77, 77)');
        return r ? ['x', 'y', 'width', 'height'].map((k) => Number(r.getAttribute(k))) : [];"""))


# ---- the tests ------------------------------------------------------------------------------------------


def test_the_stream_bar_shows_every_stream(page: Any, cameras: Cameras) -> None:
    tiles = page.find_elements("css selector", "#streams .tile")
    assert [t.get_attribute("data-stream") for t in tiles] == ["front", "back"]  # the service's order
    assert _tile(page, "front").get_attribute("aria-pressed") == "true"
    _wait(lambda: _thumb_painted(page, "back") and _thumb_painted(page, "front"), "both tiles show their picture")
    assert "streaming" in _tile(page, "back").text
    # A tile shows its stream large; so do the keys 1..9 and #stream= in the address (kept over a reload).
    _tile(page, "back").click()
    _shows(page, cameras, "back")
    assert page.execute_script("return location.hash") == "#stream=back"
    page.refresh()
    _shows(page, cameras, "back")
    page.find_element("css selector", "body").send_keys("1")
    _shows(page, cameras, "front")
    assert _severe(page) == []


def test_point_and_track_on_each_stream(page: Any, cameras: Cameras, tmp_path: Path) -> None:
    """Object 1 on each camera, by a box dragged around it on each: each add names its stream and the frame
    shown, and each object is tracked on its own stream only."""
    for name in ("front", "back"):
        _tile(page, name).click()
        _shows(page, cameras, name)
        seq = _freeze(page)
        box = cameras.box_of(name, seq, 1) if cameras.scenes is not None else (40, 40, 100, 100)
        _drag(page, cameras, name, box)
        toast = _track(page, 1)
        assert f"object 1 added on frame {seq}" in toast, toast
        add, reply = _sent(page, cmd="add", id=1, stream=name)
        assert add["frame"] == seq and reply["ok"]
        assert all(abs(a - b) <= 2 for a, b in zip(add["box"], box, strict=True)), (add["box"], box)  # its pixels
        _wait(lambda: 1 in _ids(cameras, name), f"object 1 tracked on {name}")  # noqa: B023
        _wait(lambda: page.find_elements("css selector", '#objects li[data-id="1"]'), "object 1 listed")
        if page.find_element("id", "freeze").get_attribute("aria-pressed") == "true":
            page.find_element("id", "freeze").click()
    assert 1 in _ids(cameras, "front") and 1 in _ids(cameras, "back")  # an object 1 on each camera
    if cameras.scenes is None:  # the fake's object is the box: the page draws back's own box
        _wait(lambda: len(_bbox(page)) == 4 and abs(_bbox(page)[2] - 60) <= 3 and abs(_bbox(page)[3] - 60) <= 3,
              "back's object 1 drawn with its own box")
    time.sleep(1.5)  # both tiles repainted with their object
    page.execute_script("window.scrollTo(0, 0)")
    _screenshot(page, f"view-streams{'' if cameras.scenes is not None else '-fake'}.png", tmp_path)
    assert _severe(page) == []


def test_correct_and_remove_on_the_second_stream(page: Any, cameras: Cameras) -> None:
    """Object 1 on both cameras; on back it was added from the left half of its mask. Correct it there with a
    click on its missed right part: the correction names back and the frame shown, the answered mask holds the
    clicked pixel and is what the page draws at once. Then remove it from back: front's object 1 stays."""
    from edge_vos.client import correction_mask
    from edge_vos.wire.protocol import encode_labels

    for name in ("front", "back"):
        with CommandClient(cameras.control, timeout_s=60, stream=name) as ctl:
            seq = ctl.stats()["recent_frames"][1]
            mask = cameras.truth(name, seq, 1)
            if name == "back":
                mask[:, int(np.median(np.nonzero(mask)[1])):] = False
            reply = ctl.request({"cmd": "add", "id": 1, "frame": seq, "mask": __import__("base64").b64encode(
                encode_labels(mask.astype(np.uint8), "png")).decode()}, check=False)
            assert reply["ok"], reply
    _tile(page, "back").click()
    _shows(page, cameras, "back")
    _wait(lambda: page.find_elements("css selector", '#objects li[data-id="1"]'), "back's object 1 listed")
    _press(page, '#objects li[data-id="1"] button.correct')
    _wait(lambda: not page.find_element("id", "frozen-badge").get_attribute("hidden"), "frozen for correcting")
    frozen = int(page.find_element("id", "m-frame").text)
    truth = cameras.truth("back", frozen, 1)
    ys, xs = np.nonzero(truth)
    if cameras.scenes is not None:  # a pixel in the object's right eighth: the missed part
        right = np.argsort(xs)[-max(1, len(xs) // 8):]
        x, y = xs[right[len(right) // 2]], ys[right[len(right) // 2]]
    else:  # right of the fake's box: its disk joins the box
        x, y = 105, 70
    _click(page, cameras, "back", x + 0.5, y + 0.5)
    toast = _toast(page)
    assert f"object 1 corrected on frame {frozen}" in toast, toast
    correct, reply = _sent(page, cmd="add", correct=True)
    assert correct["stream"] == "back" and correct["frame"] == frozen
    fixed = correction_mask(reply)
    assert fixed[y, x], "the missed part clicked is not in the corrected mask"
    fy, fx = np.nonzero(fixed)
    _wait(lambda: _bbox(page) == [fx.min(), fy.min(), fx.max() - fx.min() + 1, fy.max() - fy.min() + 1],
          "the answered mask drawn at once")
    page.find_element("id", "correct-done").click()
    _press(page, '#objects li[data-id="1"] button.remove')
    _wait(lambda: 1 not in _ids(cameras, "back"), "object 1 removed from back")
    assert _sent(page, cmd="remove")[0]["stream"] == "back"
    assert 1 in _ids(cameras, "front")  # front's object 1 stays
    assert _severe(page) == []


def test_a_phone_is_sent_the_stream_it_shows(page: Any, cameras: Cameras, tmp_path: Path) -> None:
    view = cameras.view
    page.set_window_size(390, 844)
    _wait(lambda: page.execute_script("return window.innerWidth") <= 400, "the phone-sized window")
    _wait(lambda: [(v.watch, v.thumbs) for v in view.viewers.connected] == [(("front",), ())],
          "the page watches front and asks for no thumbnails")
    viewer = next(iter(view.viewers.connected))
    back_sent, front_sent = viewer.last_sent.get("back"), viewer.last_sent.get("front")
    time.sleep(2.0)
    assert viewer.last_sent.get("back") is back_sent  # nothing of the other camera meanwhile
    assert viewer.last_sent.get("front") is not front_sent
    assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    tile = _tile(page, "back")
    assert tile.is_displayed() and tile.size["height"] >= 30  # a tile to touch, without a picture
    page.execute_script("window.scrollTo(0, 0)")
    _screenshot(page, f"view-streams-phone{'' if cameras.scenes is not None else '-fake'}.png", tmp_path)
    tile.click()
    _shows(page, cameras, "back")
    _wait(lambda: [(v.watch, v.thumbs) for v in view.viewers.connected] == [(("back",), ())], "watching back")
    page.set_window_size(1280, 800)
    _wait(lambda: [(v.watch, v.thumbs) for v in view.viewers.connected] == [(("back",), ("front",))],
          "a wide screen asks for the other's thumbnail again")
    assert _severe(page) == []
