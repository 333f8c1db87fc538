"""The live web view in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`) driven
by selenium, against `edge-vos run --view` on the bundled synthetic scene with the bundled weights, and
`edge-vos view` (the remote command) with a token.

The page loads with no console errors, the frame shows changing pixels, dragging a box adds an object
whose id then appears in the published headers and in /api/state, clicks add an object, remove works, a
wrong token is refused, and the page fits a phone-sized screen. Skipped (with the reason) only where no
browser is installed; tools/test.sh installs one with apt when it can.

Screenshots for docs/view.md: `EDGE_VOS_SCREENSHOTS=docs/img pytest tests/test_view_browser.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_vos.client import CommandClient, Subscriber

from .service_support import wait_until

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 300
SIZE = (240, 432)
SCENE = f"synthetic:seed=3&frames={FRAMES}&size={SIZE[0]}x{SIZE[1]}&objects=3&distractors=1"
TOKEN = "browser-test-token-1"
WAIT_S = 60.0  # generous: the suite shares two cores with other jobs


def _browser_paths() -> tuple[str, str]:
    binary = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)
    if binary is None or driver is None:
        pytest.skip("no Chromium/chromedriver here (Debian: apt-get install chromium chromium-driver; "
                    "tools/test.sh installs them when it runs as root)")
    return binary, driver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    return wait_until(condition, what, timeout, interval=0.1)


def _get_json(url: str, token: str = "") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


@dataclass
class Stack:
    proc: subprocess.Popen[str]
    url: str
    masks: str
    control: str
    labels: np.ndarray  # the scene's ground truth [T,H,W], to aim boxes and clicks at real objects

    def state(self) -> dict[str, Any]:
        return _get_json(self.url + "api/state")[1]

    def object_ids(self) -> list[int]:
        return [o["id"] for o in self.state().get("objects", [])]

    def box_of(self, capture_seq: int, obj: int, margin: int = 5) -> tuple[int, int, int, int]:
        """The bounding box of ground-truth object `obj` in the frame the source sent as `capture_seq`
        (the synthetic scene loops forwards then backwards). Kept 2 px inside the picture: a pointer put
        exactly on the picture's edge (an object touching the frame's border, a third of the frames here)
        can land just outside it after the offset's rounding, and the page never sees that press."""
        r = capture_seq % (2 * FRAMES - 2)
        index = r if r < FRAMES else 2 * FRAMES - 2 - r
        ys, xs = np.nonzero(self.labels[index] == obj)
        assert len(xs), f"object {obj} not visible in frame {index}"
        h, w = SIZE
        return (max(2, int(xs.min()) - margin), max(2, int(ys.min()) - margin),
                min(w - 3, int(xs.max()) + margin), min(h - 3, int(ys.max()) + margin))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _browser_paths()
    from edge_vos.data.synthetic import generate_sequence

    _, labels = generate_sequence(3, FRAMES, SIZE, 3, 1)
    view_port, pub_port, ctl_port = _free_port(), _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("browser") / "service.log"
    args = ["--config", "configs/cpu.yaml", "--source", SCENE, "--view", f"127.0.0.1:{view_port}",
            "--publish", f"tcp://127.0.0.1:{pub_port}", "--control", f"tcp://127.0.0.1:{ctl_port}",
            "--set", "prompt.use_source_mask=false", "--set", "source.fps=10", "--set", "control.history=300",
            "--set", "pipeline.torch_threads=1", "--set", "view.stats_every_s=0.5"]
    log_file = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge_vos.cli", "run", *args], cwd=ROOT, stdout=log_file,
                            stderr=subprocess.STDOUT, text=True)
    stack = Stack(proc, f"http://127.0.0.1:{view_port}/", f"tcp://127.0.0.1:{pub_port}",
                  f"tcp://127.0.0.1:{ctl_port}", labels)
    try:
        # A first frame published: the tracker has built its runner (on a fresh clone the split runner
        # exports its key encoder first), so a prompt is answered within the reply timeout.
        _wait(lambda: proc.poll() is None and stack.state().get("state") == "streaming"
              and stack.state().get("seq") is not None, "edge-vos run --view streaming its first frame", timeout=240)
        yield stack
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log_file.close()
    assert proc.returncode == 0, log_path.read_text()[-3000:]


@contextlib.contextmanager
def _chrome() -> Iterator[Any]:
    """Headless Chromium at desktop size, its console log kept (this file's and test_view_browser_streams')."""
    binary, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,800", "--force-device-scale-factor=1", "--disable-extensions",
                "--no-first-run", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=DriverService(driver_path), options=options)
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with _chrome() as browser:
        yield browser


@pytest.fixture
def page(stack: Stack, driver: Any) -> Any:
    """The page freshly loaded on a stream with no objects, at desktop size."""
    with CommandClient(stack.control) as ctl:
        ctl.reset()
    driver.set_window_size(1280, 800)
    driver.get(stack.url)
    driver.get_log("browser")  # start each test with an empty console log
    _wait(lambda: driver.find_element("id", "state").text == "streaming", "the page shows 'streaming'")
    _wait(lambda: driver.execute_script("return document.getElementById('placeholder').hidden"), "a frame painted")
    return driver


def _rect(driver: Any, selector: str) -> dict[str, float]:
    """An element's box, read in one script call (no stale reference if the page re-renders meanwhile)."""
    return driver.execute_script("""
        const r = document.querySelector(arguments[0]).getBoundingClientRect();
        return {x: r.left, y: r.top, width: r.width, height: r.height};
    """, selector)


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _canvas_digest(driver: Any) -> tuple[int, float]:
    return tuple(driver.execute_script("""
        const c = document.getElementById('frame');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let h = 0, sum = 0;
        for (let i = 0; i < d.length; i += 4) {
            h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0;
            sum += d[i] + d[i + 1] + d[i + 2];
        }
        return [h, sum / (d.length / 4)];
    """))


def _frozen_frame(driver: Any) -> int:
    """Freezes the picture (the Freeze button) and returns the capture_seq of the frame on screen."""
    button = driver.find_element("id", "freeze")
    if button.get_attribute("aria-pressed") != "true":
        button.click()
    time.sleep(0.3)  # a decode in flight finishes before the freeze takes hold
    # the page shows a frozen frame (its badge is up) before anything is drawn on it
    _wait(lambda: driver.execute_script("const b = document.getElementById('frozen-badge');"
                                        "return !b.hidden && b.textContent.startsWith('frozen');"), "a frozen frame")
    return int(driver.find_element("id", "m-frame").text)


def _drag(driver: Any, box: tuple[int, int, int, int]) -> None:
    """Drags the mouse across `box` (frame pixels) on the annotation layer."""
    from selenium.webdriver.common.action_chains import ActionChains

    svg = driver.find_element("id", "draw")
    rect = svg.rect
    scale = rect["width"] / SIZE[1]

    def offset(x: float, y: float) -> tuple[int, int]:  # selenium offsets are from the element's centre
        return round(x * scale - rect["width"] / 2), round(y * scale - rect["height"] / 2)

    (ax, ay), (bx, by) = offset(box[0], box[1]), offset(box[2], box[3])
    chain = ActionChains(driver).move_to_element_with_offset(svg, ax, ay).click_and_hold()
    for step in range(1, 5):
        chain = chain.move_to_element_with_offset(svg, ax + (bx - ax) * step // 4, ay + (by - ay) * step // 4)
    chain.release().perform()
    # the box is drawn on the page (a prompt exists) before Track is pressed
    _wait(lambda: driver.execute_script("return document.querySelector('#draw .prompt').innerHTML.length > 0"),
          "the dragged box drawn", timeout=10)


def _click(driver: Any, x: float, y: float, shift: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    svg = driver.find_element("id", "draw")
    rect = svg.rect
    scale = rect["width"] / SIZE[1]
    chain = ActionChains(driver).move_to_element_with_offset(
        svg, round(x * scale - rect["width"] / 2), round(y * scale - rect["height"] / 2))
    if shift:
        chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        chain = chain.click()
    chain.perform()


def _track(driver: Any, obj_id: int) -> str:
    """Sets the id, presses Track and returns the toast that answers."""
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element("id", "obj-id")
    # Select and overtype while focused: WebDriver's clear() blurs the field, and the page proposes the
    # lowest free id in an unfocused field whenever the objects change.
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(obj_id))
    driver.find_element("id", "confirm").click()
    try:
        return _wait(lambda: driver.execute_script(
            "const t = document.querySelector('.toast'); return t ? t.textContent : ''"), "the answer to Track")
    except AssertionError as exc:
        state = driver.execute_script("""return {hint: document.getElementById('hint').textContent,
            confirm_disabled: document.getElementById('confirm').disabled,
            badge: document.getElementById('frozen-badge').textContent,
            prompt: document.querySelector('#draw .prompt').innerHTML.slice(0, 300)}""")
        raise AssertionError(f"{exc}; page: {state}") from None


def _published_ids(stack: Stack, want: Callable[[list[int]], bool]) -> list[int]:
    """Object ids of the first published mask message for which `want` holds (within WAIT_S)."""
    with Subscriber(stack.masks, timeout_s=WAIT_S) as sub:
        deadline = time.monotonic() + WAIT_S
        for message in sub:
            if want(message.object_ids):
                return message.object_ids
            if time.monotonic() > deadline:
                break
    raise AssertionError("no published mask message with the expected ids")


def _screenshot(driver: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EDGE_VOS_SCREENSHOTS") or tmp_path)
    if not folder.is_absolute():
        folder = ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path)), f"cannot write {path}"
    assert path.stat().st_size > 10_000
    return path


# ---- the tests ------------------------------------------------------------------------------------------


def test_page_loads_without_console_errors_and_shows_changing_pixels(page: Any) -> None:
    first = _canvas_digest(page)
    assert first[1] > 20, "the frame is black"
    _wait(lambda: _canvas_digest(page)[0] != first[0], "the picture to change", timeout=30)
    assert page.find_element("id", "m-fps").text not in ("", "–")
    assert page.find_element("id", "m-latency").text.endswith("ms")
    assert page.find_element("id", "m-size").text == f"{SIZE[1]}×{SIZE[0]}"
    assert _severe(page) == []


def test_drag_a_box_adds_an_object_then_remove_it(page: Any, stack: Stack, tmp_path: Path) -> None:
    for obj in (1, 2):
        seq = _frozen_frame(page)
        _drag(page, stack.box_of(seq, obj))
        toast = _track(page, obj)
        assert f"object {obj} added on frame {seq}" in toast, toast
        page.execute_script("document.querySelectorAll('.toast').forEach((t) => t.remove())")
        assert page.find_element("id", "freeze").get_attribute("aria-pressed") == "true"
        page.find_element("id", "freeze").click()  # thaw
    assert set(_published_ids(stack, lambda ids: {1, 2} <= set(ids))) >= {1, 2}
    _wait(lambda: {1, 2} <= set(stack.object_ids()), "ids 1 and 2 in /api/state")
    _wait(lambda: len(page.find_elements("css selector", "#objects li[data-id]")) == 2, "two objects listed")
    # The tracker follows them: both stay visible with a real mask over the next frames.
    _wait(lambda: all(o["area"] > 200 for o in stack.state()["objects"]), "both objects tracked")
    time.sleep(3)  # let them move a little for the screenshot
    page.find_element("id", "stats-refresh").click()
    _wait(lambda: "frames processed" in page.find_element("id", "stats").text, "the service's stats shown")
    _screenshot(page, "view.png", tmp_path)
    page.set_window_size(390, 844)
    time.sleep(1.5)
    _screenshot(page, "view-phone.png", tmp_path)
    page.set_window_size(1280, 800)

    page.find_element("css selector", '#objects li[data-id="1"] button.remove').click()
    assert 1 not in _published_ids(stack, lambda ids: 1 not in ids and 2 in ids)
    _wait(lambda: stack.object_ids() == [2], "only id 2 left in /api/state")
    _wait(lambda: not page.find_elements("css selector", '#objects li[data-id="1"]'), "id 1 gone from the list")
    assert _severe(page) == []


def test_clicks_add_an_object(page: Any, stack: Stack) -> None:
    page.find_element("css selector", '[data-tool="points"]').click()
    seq = _frozen_frame(page)
    x0, y0, x1, y1 = stack.box_of(seq, 3, margin=0)
    r = seq % (2 * FRAMES - 2)
    index = r if r < FRAMES else 2 * FRAMES - 2 - r
    ys, xs = np.nonzero(stack.labels[index] == 3)
    inside = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))  # an object pixel near its centre
    _click(page, xs[inside] + 0.5, ys[inside] + 0.5)
    _click(page, 2, 2, shift=True)  # a negative click on the background
    assert len(page.find_elements("css selector", "#draw .pt-pos")) == 1
    assert len(page.find_elements("css selector", "#draw .pt-neg")) == 1
    toast = _track(page, 3)
    assert f"object 3 added on frame {seq}" in toast, toast
    assert 3 in _published_ids(stack, lambda ids: 3 in ids)
    _wait(lambda: 3 in stack.object_ids(), "id 3 in /api/state")
    assert _severe(page) == []


def test_polygon_adds_an_object(page: Any, stack: Stack) -> None:
    page.find_element("css selector", '[data-tool="polygon"]').click()
    seq = _frozen_frame(page)
    x0, y0, x1, y1 = stack.box_of(seq, 2, margin=2)
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):  # the last click closes the outline
        _click(page, x, y)
    assert len(page.find_elements("css selector", "#draw polygon.prompt-poly")) == 1
    toast = _track(page, 2)
    assert f"object 2 added on frame {seq}" in toast, toast
    _wait(lambda: 2 in stack.object_ids(), "id 2 in /api/state")
    assert _severe(page) == []


def _bbox_width(driver: Any, obj_id: int) -> float:
    """Width of object `obj_id`'s box drawn over the frame on screen (0: none)."""
    return driver.execute_script("""
        const tag = [...document.querySelectorAll('#draw .tags rect.bbox')]
            .find((r) => r.getAttribute('stroke') === arguments[0]);
        return tag ? Number(tag.getAttribute('width')) : 0;""", "rgb(255, 77, 77)" if obj_id == 1 else "")


def test_correct_an_object_by_clicking_what_it_missed(page: Any, stack: Stack) -> None:
    """Object 1 is added without the right quarter of its mask. Select it and click its right edge on the
    frozen frame: the service answers with a corrected mask holding the pixel clicked, the page shows that
    mask at once (the box drawn is its box), and after Done the page is live again and object 1 is still
    tracked."""
    from edge_vos.client import correction_mask

    with CommandClient(stack.control, timeout_s=WAIT_S) as ctl:
        seq = ctl.stats()["recent_frames"][1]
        most = stack.labels[_index(seq)] == 1
        most[:, int(np.percentile(np.nonzero(most)[1], 75)):] = False
        ctl.add_mask(1, most, frame=seq)
    _wait(lambda: any(o["id"] == 1 and o["area"] for o in stack.state()["objects"]), "object 1 tracked")
    _wait(lambda: page.find_elements("css selector", '#objects li[data-id="1"]'), "object 1 listed")
    page.execute_script("""window.__replies = [];  // what the service answers, as the page receives it
        const original = window.fetch;
        window.fetch = async (...args) => {
            const response = await original(...args);
            response.clone().json().then((body) => window.__replies.push(body), () => {});
            return response;
        };""")
    page.find_element("css selector", '#objects li[data-id="1"] button.correct').click()
    assert page.find_element("id", "correct-bar").is_displayed()
    assert not page.find_element("id", "prompt-tools").is_displayed()
    _wait(lambda: not page.find_element("id", "frozen-badge").get_attribute("hidden"), "the picture frozen")
    frozen = int(page.find_element("id", "m-frame").text)
    truth = stack.labels[_index(frozen)] == 1
    ys, xs = np.nonzero(truth)
    right = np.argsort(xs)[-max(1, len(xs) // 8):]  # a pixel in the object's right eighth: the missed part
    pick = right[len(right) // 2]
    _click(page, xs[pick] + 0.5, ys[pick] + 0.5)
    toast = _wait(lambda: page.execute_script(
        "const t = [...document.querySelectorAll('.toast')].pop(); return t ? t.textContent : ''"), "the reply")
    assert f"object 1 corrected on frame {frozen}" in toast, toast
    assert len(page.find_elements("css selector", "#draw .correction .pt-pos")) == 1
    reply = _wait(lambda: next((r for r in page.execute_script("return window.__replies") if r.get("corrected")),
                               None), "the recorded reply")  # the page may show it before the recorder reads it
    fixed = correction_mask(reply)
    # The page's job: the click reached the service at the pixel clicked, and the answer lies on the object.
    # How well the network fixes a mask is measured in tests/test_service_corrections.py, on fixed inputs; here
    # the frozen frame (and the tracked mask the correction starts from) differ from run to run.
    # (Not asserted here: its IoU with the ground truth. The correction starts from the mask tracked live on
    # the frozen frame, which under a full suite's load drifts with the frames skipped before the freeze; it
    # scored 0.21 and 0.24 in two CI runs and 0.99 offline from the added mask.)
    assert fixed[ys[pick], xs[pick]], "the missed part clicked is not in the corrected mask"
    ys, xs = np.nonzero(fixed)
    drawn = page.execute_script("""const r = [...document.querySelectorAll('#draw .tags rect.bbox')]
        .find((e) => e.getAttribute('stroke') === 'rgb(255, 77, 77)');
        return ['x', 'y', 'width', 'height'].map((k) => Number(r.getAttribute(k)));""")
    assert drawn == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], "the mask is not shown"
    page.find_element("id", "correct-done").click()
    assert not page.find_element("id", "correct-bar").is_displayed()
    assert page.find_element("id", "freeze").get_attribute("aria-pressed") == "false"  # live again
    # The track goes on (how well the real tracker follows from the fixed mask is the model's matter; that the
    # service tracks on from exactly that mask is tested with the fake tracker in test_service_corrections.py).
    assert 1 in _published_ids(stack, lambda ids: 1 in ids)
    _wait(lambda: not page.find_elements("css selector", "#objects li.selected"), "the selection cleared")
    assert _severe(page) == []


def _index(capture_seq: int) -> int:
    """The scene frame the source sent as `capture_seq` (it loops forwards then backwards)."""
    r = capture_seq % (2 * FRAMES - 2)
    return r if r < FRAMES else 2 * FRAMES - 2 - r


def test_phone_sized_screen(page: Any, stack: Stack) -> None:
    with CommandClient(stack.control) as ctl:  # something to show: object 1 by a box on a recent frame
        seq = ctl.stats()["recent_frames"][1]
        ctl.request({"cmd": "add", "id": 1, "box": list(stack.box_of(seq, 1)), "frame": seq})
    page.set_window_size(390, 844)
    _wait(lambda: page.execute_script("return window.innerWidth") <= 400, "the phone-sized window")
    width = page.execute_script("return document.documentElement.scrollWidth")
    assert width <= page.execute_script("return window.innerWidth"), "the page scrolls sideways on a phone"
    frame = _rect(page, "#frame")
    assert frame["width"] >= 300 and frame["x"] >= 0 and frame["x"] + frame["width"] <= 400
    for control in ("confirm", "freeze", "obj-id", "reset"):
        rect = _rect(page, f"#{control}")
        assert rect["x"] >= 0 and rect["x"] + rect["width"] <= 400, control
        assert rect["height"] >= 30, f"{control} is too small to touch"
    _wait(lambda: page.find_elements("css selector", '#objects li[data-id="1"]'), "the object listed")
    rect = _rect(page, '#objects li[data-id="1"] button.remove')
    assert rect["x"] + rect["width"] <= 400, "the remove button is off screen"
    assert _severe(page) == []


def test_wrong_token_is_refused(stack: Stack, driver: Any, tmp_path: Path) -> None:
    """`edge-vos view` (the remote command) with a token, in front of the same service."""
    port = _free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "edge_vos.cli", "view", "--masks", stack.masks,
                             "--control", stack.control, "--listen", f"127.0.0.1:{port}",
                             "--token-file", str(token_file)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait(lambda: _get_json(url + "api/state", TOKEN)[1].get("state") == "streaming", "edge-vos view up")
        assert _get_json(url + "api/state", "not-the-token")[0] == 401
        assert _get_json(url + "api/state")[0] == 401
        driver.set_window_size(1280, 800)
        driver.get(url + "?token=not-the-token")
        _wait(lambda: driver.find_element("id", "state").text == "token refused", "'token refused' shown")
        assert driver.find_element("id", "token-dialog").is_displayed()
        assert driver.execute_script("return location.search") == ""  # the token left the address bar
        assert driver.find_element("id", "placeholder").is_displayed()  # nothing was streamed
        driver.find_element("id", "token-input").send_keys(TOKEN)
        driver.find_element("id", "token-ok").click()
        _wait(lambda: driver.find_element("id", "state").text == "streaming", "streaming with the right token")
        _wait(lambda: driver.execute_script("return document.getElementById('placeholder').hidden"), "a frame")
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
        driver.execute_script("sessionStorage.clear()")
    assert proc.returncode == 0, output
