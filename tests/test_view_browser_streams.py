"""The web view of two streams in a real browser (issue #22): headless Chromium (selenium) on the page of a view
whose service runs two cameras of different sizes. The stream bar shows both (live pictures on a wide screen);
a tile, a key or `#stream=` shows one large; point-and-track, a correction and remove work on each, and each
command names the stream it was made on; on a phone-sized screen the page is sent the shown stream only.

The service here is tests/two_streams.py, a two-camera publisher and control replier written for these tests
(the multi-stream wire of docs/protocol.md; its objects are the boxes drawn, not a tracker's masks): this
tests the view and the page, not the tracker. Skipped (with the reason) where no browser is installed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_vos.client import CommandClient
from edge_vos.view.config import ViewConfig
from edge_vos.view.server import ViewServer

from .test_view_browser import _browser_paths, _screenshot, _severe, _wait
from .two_streams import TwoStreams

SIZES = {"front": (320, 180), "back": (240, 160)}  # width, height


@pytest.fixture(scope="module")
def cameras() -> Iterator[tuple[TwoStreams, ViewServer]]:
    _browser_paths()
    with TwoStreams(streams=tuple((name, w, h) for name, (w, h) in SIZES.items()), fps=8.0) as fake:
        view = ViewServer(ViewConfig(listen="127.0.0.1:0", stats_every_s=0.5), fake.masks_endpoint,
                          fake.control_endpoint)
        view.start()
        try:
            _wait(lambda: len(view.feed.streams) == 2, "both streams seen by the view")
            yield fake, view
        finally:
            view.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,800",
                "--force-device-scale-factor=1", "--disable-extensions", "--no-first-run",
                "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(cameras: tuple[TwoStreams, ViewServer], browser: Any) -> Any:
    """The page freshly loaded on two streams with no objects, at desktop size, front shown."""
    fake, view = cameras
    for name in SIZES:
        assert _command(fake, {"cmd": "reset", "stream": name})["ok"]
    browser.set_window_size(1280, 800)
    browser.get(f"http://127.0.0.1:{view.port}/")
    browser.get_log("browser")
    _shows(browser, "front")
    return browser


def _command(fake: TwoStreams, command: dict[str, Any]) -> dict[str, Any]:
    with CommandClient(fake.control_endpoint, timeout_s=10) as ctl:
        return ctl.request(command, check=False)


def _shows(driver: Any, name: str) -> None:
    """Waits until stream `name` is the one shown large, with a frame of it painted."""
    w, h = SIZES[name]
    _wait(lambda: driver.find_element("id", "stream-name").text == name
          and driver.execute_script("return document.getElementById('m-size').textContent") == f"{w}×{h}"
          and driver.execute_script("return document.getElementById('placeholder').hidden")
          and driver.find_element("id", "state").text == "streaming", f"stream {name} shown large")


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
    """Whether the tile's picture shows the stream (its colour), not black."""
    return bool(driver.execute_script("""
        const c = document.querySelector(`#streams .tile[data-stream="${arguments[0]}"] canvas`);
        const d = c.getContext('2d').getImageData(0, c.height - 4, c.width, 2).data;
        let sum = 0;
        for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
        return sum / (d.length / 4) > 60;""", name))


def _freeze(driver: Any) -> int:
    button = driver.find_element("id", "freeze")
    if button.get_attribute("aria-pressed") != "true":
        button.click()
    time.sleep(0.3)
    _wait(lambda: driver.execute_script("const b = document.getElementById('frozen-badge');"
                                        "return !b.hidden && b.textContent.startsWith('frozen');"), "a frozen frame")
    return int(driver.find_element("id", "m-frame").text)


def _at(driver: Any, name: str, x: float, y: float) -> tuple[Any, int, int]:
    """The annotation layer and the offset from its centre of frame pixel (x, y) of stream `name`."""
    svg = driver.find_element("id", "draw")
    rect = svg.rect
    scale = rect["width"] / SIZES[name][0]
    return svg, round(x * scale - rect["width"] / 2), round(y * scale - rect["height"] / 2)


def _drag(driver: Any, name: str, box: tuple[int, int, int, int]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    svg, ax, ay = _at(driver, name, box[0], box[1])
    _, bx, by = _at(driver, name, box[2], box[3])
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


def _ids(view: ViewServer, name: str) -> list[int]:
    stream = view.feed.stream(name)
    return [o["id"] for o in stream.snapshot["objects"]] if stream else []


def _bbox(driver: Any) -> list[float]:
    """The box drawn around object 1 on the frame shown large."""
    return list(driver.execute_script("""const r = [...document.querySelectorAll('#draw .tags rect.bbox')]
        .find((e) => e.getAttribute('stroke') === 'rgb(255, 77, 77)');
        return r ? ['x', 'y', 'width', 'height'].map((k) => Number(r.getAttribute(k))) : [];"""))


# ---- the tests ------------------------------------------------------------------------------------------


def test_the_stream_bar_shows_every_stream(page: Any, cameras: tuple[TwoStreams, ViewServer]) -> None:
    tiles = page.find_elements("css selector", "#streams .tile")
    assert [t.get_attribute("data-stream") for t in tiles] == ["front", "back"]  # the service's order
    assert _tile(page, "front").get_attribute("aria-pressed") == "true"
    _wait(lambda: _thumb_painted(page, "back") and _thumb_painted(page, "front"), "both tiles show their picture")
    assert "streaming" in _tile(page, "back").text
    # A tile shows its stream large; so do the keys 1..9 and #stream= in the address (kept over a reload).
    _tile(page, "back").click()
    _shows(page, "back")
    assert page.execute_script("return location.hash") == "#stream=back"
    page.refresh()
    _shows(page, "back")
    page.find_element("css selector", "body").send_keys("1")
    _shows(page, "front")
    assert _severe(page) == []


def test_point_and_track_on_each_stream(page: Any, cameras: tuple[TwoStreams, ViewServer], tmp_path: Path) -> None:
    """Object 1 on each camera, by a box dragged on each: each add names its stream and the frame shown,
    and each object appears on its own stream only."""
    fake, view = cameras
    boxes = {"front": (40, 40, 140, 120), "back": (30, 30, 110, 100)}
    for name in ("front", "back"):
        _tile(page, name).click()
        _shows(page, name)
        seq = _freeze(page)
        _drag(page, name, boxes[name])
        toast = _track(page, 1)
        assert f"object 1 added on frame {seq}" in toast, toast
        add = [c for c in fake.commands if c.get("cmd") == "add"][-1]
        assert add["stream"] == name and add["frame"] == seq and add["id"] == 1
        x0, y0, x1, y1 = add["box"]
        assert abs(x0 - boxes[name][0]) <= 2 and abs(y1 - boxes[name][3]) <= 2  # where it was drawn, in its pixels
        _wait(lambda: _ids(view, name) == [1], f"object 1 on {name}")  # noqa: B023
        _wait(lambda: page.find_elements("css selector", '#objects li[data-id="1"]'), "object 1 listed")
        if page.find_element("id", "freeze").get_attribute("aria-pressed") == "true":
            page.find_element("id", "freeze").click()
    assert _ids(view, "front") == [1] and _ids(view, "back") == [1]  # one object 1 per camera
    # Each stream's objects list is its own: back has object 1 with back's box size.
    _wait(lambda: len(_bbox(page)) == 4 and abs(_bbox(page)[2] - 80) <= 3 and abs(_bbox(page)[3] - 70) <= 3,
          "back's object 1 drawn with its own box")
    time.sleep(1.5)  # both tiles repainted with their object
    page.execute_script("window.scrollTo(0, 0)")
    _screenshot(page, "view-streams.png", tmp_path)
    assert _severe(page) == []


def test_correct_and_remove_on_the_second_stream(page: Any, cameras: tuple[TwoStreams, ViewServer]) -> None:
    fake, view = cameras
    for name in SIZES:  # object 1 on both cameras, as if tracked
        assert _command(fake, {"cmd": "add", "id": 1, "box": [40, 40, 100, 100], "stream": name})["ok"]
    _tile(page, "back").click()
    _shows(page, "back")
    _wait(lambda: page.find_elements("css selector", '#objects li[data-id="1"]'), "back's object 1 listed")
    _press(page, '#objects li[data-id="1"] button.correct')
    _wait(lambda: not page.find_element("id", "frozen-badge").get_attribute("hidden"), "frozen for correcting")
    frozen = int(page.find_element("id", "m-frame").text)
    from selenium.webdriver.common.action_chains import ActionChains

    svg, dx, dy = _at(page, "back", 130, 60)  # right of the object: a part it "missed"
    ActionChains(page).move_to_element_with_offset(svg, dx, dy).click().perform()
    toast = _toast(page)
    assert "object 1 corrected on frame" in toast, toast
    correct = [c for c in fake.commands if c.get("correct")][-1]
    assert correct["stream"] == "back" and correct["frame"] == frozen
    _wait(lambda: _bbox(page) and _bbox(page)[0] + _bbox(page)[2] >= 140, "the answered mask drawn at once")
    page.find_element("id", "correct-done").click()
    _press(page, '#objects li[data-id="1"] button.remove')
    _wait(lambda: _ids(view, "back") == [], "object 1 removed from back")
    assert _ids(view, "front") == [1]  # front's object 1 stays
    remove = [c for c in fake.commands if c.get("cmd") == "remove"][-1]
    assert remove["stream"] == "back"
    assert _severe(page) == []


def test_a_phone_is_sent_the_stream_it_shows(page: Any, cameras: tuple[TwoStreams, ViewServer]) -> None:
    _, view = cameras
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
    tile.click()
    _shows(page, "back")
    _wait(lambda: [(v.watch, v.thumbs) for v in view.viewers.connected] == [(("back",), ())], "watching back")
    page.set_window_size(1280, 800)
    _wait(lambda: [(v.watch, v.thumbs) for v in view.viewers.connected] == [(("back",), ("front",))],
          "a wide screen asks for the other's thumbnail again")
    assert _severe(page) == []
