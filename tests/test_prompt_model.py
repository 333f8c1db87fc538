"""The learned prompt path: API errors, crop geometry, weights round trip, the service's dispatcher, a
training smoke run, and (when bundled) the trained network on a synthetic scene.

Fast: a small randomly initialised network stands in where the trained one is not needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_vos.prompt import PromptError, make_prompt
from edge_vos.prompt.crops import box_window, crop_image, paste_back, to_crop
from edge_vos.prompt.methods import PromptMasks
from edge_vos.prompt.model import PromptNet, PromptNetConfig, load_weights, save_weights
from edge_vos.prompt.segmenter import BUNDLED_WEIGHTS, PromptSegmenter

HW = (90, 140)


@pytest.fixture(scope="module")
def segmenter() -> PromptSegmenter:
    torch.manual_seed(0)
    return PromptSegmenter(PromptNet(PromptNetConfig(crop_size=64)))


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (*HW, 3), dtype=np.uint8)
    image[30:60, 40:100] = (230, 40, 40)
    return image


@pytest.mark.parametrize(
    ("image", "kwargs", "field", "message"),
    [
        (None, {}, "", "give a box, points"),
        (None, {"box": (20, 20, 20, 60)}, "box", "empty"),
        (None, {"box": (500, 500, 600, 600)}, "box", "inside the 140x90 frame"),
        (None, {"points": [(10, 10), (140, 10)], "labels": [1, 1]}, "points[1]", "outside the 140x90 frame"),
        (None, {"points": [(10, 10), (20, 10)], "labels": [1]}, "labels", "1 labels for 2 points"),
        (None, {"points": [(10, 10)]}, "labels", "required with points"),
        (None, {"points": [(10, 10)], "labels": [0]}, "labels", "at least one point must be labelled 1"),
        (None, {"box": (0, 0, 50, 50), "mask": np.ones((10, 10))}, "mask", "10x10 but the frame is 140x90"),
        (np.zeros((*HW, 3), np.float32), {"box": (0, 0, 50, 50)}, "image", "uint8"),
        (np.zeros(HW, np.uint8), {"box": (0, 0, 50, 50)}, "image", "RGB [H, W, 3]"),
        ([[1, 2, 3]], {"box": (0, 0, 50, 50)}, "image", "numpy array"),
    ],
)
def test_segment_refuses_bad_input_naming_it(segmenter: PromptSegmenter, image: object, kwargs: dict, field: str,
                                             message: str) -> None:
    with pytest.raises(PromptError) as info:
        segmenter.segment(_image() if image is None else image, **kwargs)
    assert info.value.field == field and message in str(info.value)


def test_every_prompt_combination_gives_a_frame_sized_mask(segmenter: PromptSegmenter) -> None:
    image = _image()
    coarse = np.zeros(HW, bool)
    coarse[25:65, 35:95] = True
    for kwargs in ({"box": (35, 25, 105, 65)}, {"points": [(70, 45)], "labels": [1]},
                   {"points": [(70, 45), (5, 5)], "labels": [1, 0]}, {"mask": coarse},
                   {"box": (35, 25, 105, 65), "points": [(50, 40)], "labels": [0], "mask": coarse}):
        mask = segmenter.segment(image, **kwargs)
        assert mask.shape == HW and mask.dtype == bool
    # A box prompt looks only at its window: nothing far outside it can be labelled.
    prob = segmenter.probabilities(image, make_prompt(HW, box=(60, 40, 80, 50)))
    x0, y0, x1, y1 = box_window((60, 40, 80, 50))
    assert prob[:, : int(x0) - 1].max() == 0 and prob[: int(y0) - 1].max() == 0


def test_crop_and_paste_back_are_inverse() -> None:
    rng = np.random.default_rng(1)
    values = cv2_smooth(rng.random(HW).astype(np.float32))
    window = (20.5, 10.0, 120.0, 80.0)
    crop = crop_image(values, window, 256)  # upsampled: paste_back(crop) ~ values inside the window
    back = paste_back(crop, window, HW)
    inside = np.s_[12:78, 23:118]
    assert np.abs(back[inside] - values[inside]).max() < 0.02
    assert back[:, :20].max() == 0
    np.testing.assert_allclose(to_crop(np.array([[20.5, 10.0], [120.0, 80.0]]), window, 256), [[0, 0], [256, 256]])


def cv2_smooth(x: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (0, 0), 4)


def test_weights_round_trip(tmp_path: Path, segmenter: PromptSegmenter) -> None:
    path = tmp_path / "p.safetensors"
    save_weights(segmenter.model, path, {"steps": "7"})
    model, header = load_weights(path)
    assert header["steps"] == "7" and model.config == segmenter.model.config
    image = _image()
    prompt = make_prompt(HW, box=(35, 25, 105, 65))
    np.testing.assert_array_equal(PromptSegmenter(model)(image, prompt), segmenter(image, prompt))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception):  # noqa: B017 - safetensors raises its own error type
        load_weights(tmp_path / "bad.safetensors")


def test_trunk_choice_is_in_the_header_and_old_files_load_as_lite0(tmp_path: Path) -> None:
    import json

    from safetensors.torch import save_file

    torch.manual_seed(0)
    lite2 = PromptNet(PromptNetConfig(crop_size=64, trunk="lite2"))
    save_weights(lite2, tmp_path / "l2.safetensors")
    model, header = load_weights(tmp_path / "l2.safetensors")
    assert header["arch"] == "prompt-effl2" and model.config.trunk == "lite2"
    assert model.trunk.channels == (16, 24, 48, 120)
    # A file from before the choice: arch prompt-effl0 and no `trunk` in its config.
    lite0 = PromptNet(PromptNetConfig(crop_size=64))
    config = json.loads(lite0.header()["config"])
    del config["trunk"]
    state = {k: v.contiguous() for k, v in lite0.state_dict().items()}
    save_file(state, str(tmp_path / "old.safetensors"), metadata={"arch": "prompt-effl0", "config": json.dumps(config)})
    old, _ = load_weights(tmp_path / "old.safetensors")
    assert old.config == lite0.config and old.config.trunk == "lite0"
    save_file(state, str(tmp_path / "lie.safetensors"), metadata={"arch": "prompt-effl2", "config": json.dumps(config)})
    with pytest.raises(ValueError, match="does not match"):
        load_weights(tmp_path / "lie.safetensors")


def test_prompt_masks_dispatch_and_missing_weights(tmp_path: Path) -> None:
    image = _image()
    prompt = make_prompt(HW, box=(35, 25, 105, 65))
    missing = PromptMasks(tmp_path / "absent.safetensors")
    assert not missing.load()
    assert missing(image, prompt, "grabcut")[30:60, 40:100].mean() > 0.9  # GrabCut needs no model
    with pytest.raises(PromptError, match="absent.safetensors.*use method grabcut") as info:
        missing(image, prompt, "learned")
    assert info.value.field == "method"
    with pytest.raises(PromptError, match="one of"):
        missing(image, prompt, "magic")


def test_training_runs_and_resumes(tmp_path: Path) -> None:
    from edge_vos.train.prompt.train import main

    args = ["--data", "", "--synthetic", "1", "--size", "64", "--batch", "2", "--out", str(tmp_path),
            "--checkpoint-every", "1", "--snapshot-every", "2"]
    assert main([*args, "--steps", "2"]) == 0
    assert (tmp_path / "step_00002.safetensors").is_file()
    assert main([*args, "--steps", "3"]) == 0  # resumes at step 2
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3"]
    model, header = load_weights(tmp_path / "final.safetensors")
    assert header["steps"] == "3" and model.config.crop_size == 64


def test_longer_correction_chains_are_drawn_as_asked_and_bad_counts_refused(tmp_path: Path) -> None:
    from edge_vos.train.prompt.train import ITERATION_CHOICES, iteration_counts, main

    assert iteration_counts("")[0] == ITERATION_CHOICES
    assert iteration_counts("2,5") == ((2, 5), (0.5, 0.5))
    args = ["--data", "", "--synthetic", "1", "--size", "64", "--batch", "2", "--out", str(tmp_path),
            "--steps", "3", "--iterations", "4"]
    assert main(args) == 0
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[3] for r in rows] == ["4", "4", "4"]  # the log's iterations column
    for bad in ("x", "30", "-1"):
        with pytest.raises(SystemExit):
            main([*args[:-1], bad])


@pytest.mark.skipif(not BUNDLED_WEIGHTS.is_file(), reason=f"{BUNDLED_WEIGHTS} not bundled")
def test_bundled_network_segments_a_synthetic_object() -> None:
    from edge_vos.data.synthetic import generate_sequence
    from edge_vos.prompt import segment
    from edge_vos.prompt.evaluation import next_click

    frames, labels = generate_sequence(123, num_frames=1, size=(240, 432), num_objects=1, num_distractors=0)
    truth = labels[0] == 1
    ys, xs = np.nonzero(truth)
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    click, _ = next_click(truth, None)
    for kwargs in ({"box": box}, {"points": [click], "labels": [1]}):
        mask = segment(frames[0], **kwargs)
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou > 0.7, (kwargs, iou)


def test_refine_pass_takes_the_first_prediction_as_its_coarse_mask() -> None:
    torch.manual_seed(0)
    model = PromptNet(PromptNetConfig(crop_size=64))
    with torch.no_grad():
        model.head.bias.fill_(3.0)  # an untrained network that says "object" over most of its window
    seen: list[torch.Tensor] = []
    model.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[1].clone()))
    # eager torch: the hook sees each pass's inputs (ONNX Runtime, the CPU default, runs outside the module)
    refining = PromptSegmenter(model, refine=1, refine_size=96, flip=False, runtime="torch")
    image = _image()
    first = PromptSegmenter(model, flip=False, runtime="torch").probabilities(
        image, make_prompt(HW, box=(35, 25, 105, 65)))
    seen.clear()
    mask = refining.segment(image, box=(35, 25, 105, 65))
    assert len(seen) == 2 and mask.shape == HW
    assert seen[0].shape[-1] == 64 and seen[1].shape[-1] == 96  # the second look at its own size
    assert not seen[0][0, 3].any() and seen[1][0, 3].any()  # a plain box: no coarse mask the first time
    window = box_window((35, 25, 105, 65))
    assert torch.equal(seen[1][0, 3].bool(), torch.from_numpy(crop_image((first > 0.5).astype(np.float32),
                                                                          window, 96) > 0.5))


def test_training_options_run_on_real_layout_data(tmp_path: Path) -> None:
    """EMA, trunk learning-rate share, box refinement and the geometric composites on a DAVIS-layout folder
    (synthetic sequences written as DAVIS `train`), and an extra folder of annotated stills."""
    from edge_vos.data.davis import write_mask
    from edge_vos.data.synthetic import write_synthetic_davis
    from edge_vos.train.prompt.data import PromptData
    from edge_vos.train.prompt.train import main

    write_synthetic_davis(tmp_path / "davis", 3, num_frames=3, size=(96, 160), split="train", res="240p",
                          year="2016")
    stills = tmp_path / "stills"
    (stills / "images" / "clip").mkdir(parents=True)
    cv2_write = __import__("cv2").imwrite
    cv2_write(str(stills / "images" / "clip" / "00000.jpg"), np.full((96, 160, 3), 90, np.uint8))
    labels = np.zeros((96, 159), np.uint8)  # one pixel narrower than its frame, as Cutie's judo mask is
    labels[20:60, 30:90] = 1
    write_mask(stills / "masks" / "clip" / "00000.png", labels)
    data = PromptData(tmp_path / "davis", synthetic_sequences=0, size=64, paste_prob=1.0, geometric=True,
                      extra_roots=(stills,))
    assert len(data.extra) == 1 and data.extra[0][1].shape == (96, 160)
    for i in range(40):
        sample = data.sample(np.random.default_rng([0, i]))
        assert sample.rgb.shape == (64, 64, 3) and sample.truth.shape == (64, 64)
    out = tmp_path / "run"
    args = ["--data", str(tmp_path / "davis"), "--synthetic", "0", "--size", "64", "--batch", "2", "--out", str(out),
            "--checkpoint-every", "1", "--snapshot-every", "2", "--ema", "0.9", "--trunk-lr", "0.3",
            "--weight-decay", "0.01", "--box-refine", "0.5", "--paste", "0.8", "--geometric", "--extra", str(stills)]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "3"]) == 0
    ema_net, _ = load_weights(out / "final.safetensors")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    live = PromptNet(ema_net.config)
    live.load_state_dict(state["model"])
    # The snapshot is the moving average, not the last weights.
    assert any(not torch.equal(a, b) for a, b in zip(ema_net.state_dict().values(), live.state_dict().values(),
                                                    strict=True))


def test_first_looks_draw_click_samples_in_the_segmenters_first_look_windows(tmp_path: Path) -> None:
    """With `first_looks`, click samples are cropped from the whole frame, the frame with a margin (a window
    past the frame's edges) and squares around a click on the object; without it, from the frame alone."""
    from edge_vos.data.synthetic import write_synthetic_davis
    from edge_vos.train.prompt.data import PromptData

    write_synthetic_davis(tmp_path / "davis", 2, num_frames=2, size=(96, 160), split="train", res="240p",
                          year="2016")
    _, mask = PromptData(tmp_path / "davis", synthetic_sequences=0, size=64)._source(np.random.default_rng(0))
    plain = PromptData(tmp_path / "davis", synthetic_sequences=0, size=64)
    looks = PromptData(tmp_path / "davis", synthetic_sequences=0, size=64, first_looks=True)
    frame = (0.0, 0.0, 160.0, 96.0)
    assert {plain._click_look(mask, np.random.default_rng(i)) for i in range(20)} == {frame}
    windows = [looks._click_look(mask, np.random.default_rng(i)) for i in range(60)]
    margin = [w for w in windows if w != frame and w[0] < 0 and w[2] > 160 and w[1] < 0 and w[3] > 96]
    squares = [w for w in windows if abs((w[2] - w[0]) - (w[3] - w[1])) < 1e-6 and w not in margin]
    assert frame in windows and margin and squares
    for x0, y0, x1, y1 in squares:  # centred on a pixel of the object
        assert mask[int((y0 + y1) / 2), int((x0 + x1) / 2)]


class _ScriptedSegmenter(PromptSegmenter):
    """Records each pass's window; the whole-frame look paints a blob away from the click."""

    def __init__(self, lost_click_window: float) -> None:
        super().__init__(PromptNet(PromptNetConfig(crop_size=32)), refine=0, flip=False,
                         lost_click_window=lost_click_window, first_look=(), frame_margin=0.0)
        self.windows: list[tuple[float, ...]] = []

    def _pass(self, image, window, prompt, coarse, final=True, size=None, passes=None, partner=None):  # type: ignore[no-untyped-def]
        self.windows.append(tuple(window))
        out = np.zeros(prompt.frame_hw, np.float32)
        out[5:15, 5:25] = 1.0 if len(self.windows) == 1 else 0.0  # found: another thing, top left
        out[60:80, 100:130] = 0.0 if len(self.windows) == 1 else 1.0
        return out


def test_clicks_the_whole_frame_look_missed_get_a_closer_look_around_them() -> None:
    from edge_vos.prompt.crops import click_window

    prompt = make_prompt(HW, points=[(115.5, 70.5)], labels=[1])
    closer = _ScriptedSegmenter(lost_click_window=0.5)
    closer(_image(), prompt)
    assert closer.windows[1] == click_window(prompt.positives, HW, 0.5)
    x0, y0, x1, y1 = closer.windows[1]
    assert x1 - x0 == y1 - y0 == 70 and x0 < 115.5 < x1 and y0 < 70.5 < y1  # half of the long side, on the click
    before = _ScriptedSegmenter(lost_click_window=0.0)  # 0: the window around what the first look found
    before(_image(), prompt)
    assert before.windows[1][0] < 5 and before.windows[1][2] > 115.5


class _ScaleScriptedSegmenter(PromptSegmenter):
    """Records each pass's window; each first look paints the clicked object with its own confidence."""

    def __init__(self, confidences: dict[int, float]) -> None:
        super().__init__(PromptNet(PromptNetConfig(crop_size=32)), refine=0, flip=False)
        self.confidences = confidences  # first look number -> the probability it paints
        self.windows: list[tuple[float, ...]] = []
        self.coarse: list[np.ndarray | None] = []

    def _pass(self, image, window, prompt, coarse, final=True, size=None, passes=None, partner=None):  # type: ignore[no-untyped-def]
        self.windows.append(tuple(window))
        self.coarse.append(coarse)
        out = np.zeros(prompt.frame_hw, np.float32)
        look = len(self.windows) - 1
        out[60:60 + 4 * (look + 1), 100:130] = self.confidences.get(look, 0.9)
        out[5:15, 5:25] = 1.0  # a sure thing away from the click: never the answer
        return out


def test_clicks_alone_are_first_looked_at_through_several_windows_and_the_surest_wins() -> None:
    from edge_vos.prompt.crops import click_window, frame_window
    from edge_vos.prompt.segmenter import FIRST_LOOK_SHARES, FRAME_MARGIN

    prompt = make_prompt(HW, points=[(115.5, 61.5)], labels=[1])
    seg = _ScaleScriptedSegmenter({0: 0.6, 1: 0.95, 2: 0.7})
    seg(_image(), prompt)
    looks = len(FIRST_LOOK_SHARES) + 1
    assert seg.windows[:looks - 1] == [click_window(prompt.positives, HW, s) for s in FIRST_LOOK_SHARES]
    assert seg.windows[looks - 1] == box_window(frame_window(HW), context=FRAME_MARGIN)  # the frame, with margin
    assert all(c is None for c in seg.coarse[:looks])
    chosen = seg.coarse[looks]  # the zoomed pass gets the surest look's clicked part as its coarse mask
    assert chosen is not None and chosen[60:68, 100:130].all() and not chosen[68:].any() and not chosen[5:15].any()


def test_a_negative_click_the_network_ignored_takes_off_the_part_nearer_to_it() -> None:
    from edge_vos.prompt.segmenter import _ignored_negatives_share

    mask = np.zeros(HW, bool)
    mask[30:60, 20:120] = True  # painted too far: the object is the left part
    mask[70:80, 10:20] = True  # another piece, no click on it
    prompt = make_prompt(HW, points=[(30.5, 45.5), (110.5, 45.5)], labels=[1, 0])
    cut = _ignored_negatives_share(mask, prompt)
    assert cut[30:60, 71:120].all() and not cut[30:60, 20:70].any()  # beyond the midpoint between the clicks
    assert not cut[70:80].any()  # pieces without an ignored negative click stay
    followed = make_prompt(HW, points=[(30.5, 45.5), (130.5, 45.5)], labels=[1, 0])  # off the mask already
    assert not _ignored_negatives_share(mask, followed).any()
    box_only = make_prompt(HW, box=(10, 20, 130, 70), points=[(110.5, 45.5)], labels=[0])
    assert not _ignored_negatives_share(mask, box_only).any()  # no positive click to weigh it against


class _PaintingSegmenter(PromptSegmenter):
    """Every pass paints the same rectangle, whatever the clicks."""

    def __init__(self, carve: bool) -> None:
        super().__init__(PromptNet(PromptNetConfig(crop_size=32)), refine=1, flip=False, carve=carve)

    def _pass(self, image, window, prompt, coarse, final=True, size=None, passes=None, partner=None):  # type: ignore[no-untyped-def]
        out = np.zeros(prompt.frame_hw, np.float32)
        out[30:60, 20:120] = 0.9
        return out


def test_the_segmenter_carves_ignored_negative_clicks_only_when_asked() -> None:
    prompt = make_prompt(HW, points=[(30.5, 45.5), (110.5, 45.5)], labels=[1, 0])
    carved = _PaintingSegmenter(carve=True)(_image(), prompt)
    assert carved[45, 30] and not carved[45, 110]
    assert _PaintingSegmenter(carve=False)(_image(), prompt)[45, 110]
