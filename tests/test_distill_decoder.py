"""The narrow decoder (stcn-effl0-ld) and its distillation from recorded tracking."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from edge_vos.data.synthetic import generate_sequence
from edge_vos.model import random_network
from edge_vos.model.checkpoint import load_network, save_network
from edge_vos.tracker import Tracker
from edge_vos.train.decoder_capture import (
    CAPTURE,
    MONITOR,
    RecordingEngines,
    capture_tracker_config,
    track_and_store,
)
from edge_vos.train.distill_decoder import (
    DistillConfig,
    distill,
    distill_loss,
    export_checkpoint,
    load_entry,
    mask_agreement,
    narrow_decoder,
    student_from_teacher,
)


@pytest.fixture(scope="module")
def teacher():
    return random_network("stcn-effl0").eval()


def _decoder_inputs(objects: int, cells: tuple[int, int] = (6, 7)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(objects)
    h, w = cells
    return (torch.randn(objects, 128, h, w, generator=g), torch.randn(1, 128, h, w, generator=g),
            torch.randn(1, 40, 2 * h, 2 * w, generator=g), torch.randn(1, 24, 4 * h, 4 * w, generator=g))


def test_narrowing_to_the_teachers_widths_is_the_teacher(teacher) -> None:
    same = narrow_decoder(teacher.decoder, teacher.spec.decoder_dims).eval()
    inputs = _decoder_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(same(*inputs), teacher.decoder(*inputs))


def test_narrow_decoder_keeps_the_weightiest_channels(teacher) -> None:
    student = narrow_decoder(teacher.decoder, (64, 32, 16))
    consumers = teacher.decoder.up_8_4.out_conv
    score = consumers.conv1.weight.pow(2).sum(dim=(0, 2, 3)) + consumers.downsample.weight.pow(2).sum(dim=(0, 2, 3))
    kept = torch.sort(torch.topk(score, 32).indices).values
    torch.testing.assert_close(student.up_8_4.skip_conv.weight, teacher.decoder.up_8_4.skip_conv.weight[kept])
    assert student.pred.weight.shape == (1, 16, 3, 3)


def test_student_per_object_work_is_under_a_third_of_the_teachers(teacher) -> None:
    """GMAC at 640x368 counted as tools/bench_objects.py does: per object = (8 objects - 1 object) / 7."""
    from edge_vos.backends.parts import example_inputs, make_part

    student = student_from_teacher(teacher).eval()
    per_object = {}
    for name, net in (("teacher", teacher), ("student", student)):
        gmac = {}
        for n in (1, 8):
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                make_part(net, "decoder")(*example_inputs(net, "decoder", (368, 640), n))
            gmac[n] = counter.get_total_flops() / 2e9
        per_object[name] = (gmac[8] - gmac[1]) / 7
    assert per_object["student"] <= per_object["teacher"] / 3


def test_student_keeps_the_teacher_outside_the_decoder(teacher, tmp_path: Path) -> None:
    student = student_from_teacher(teacher)
    s_state = student.state_dict()
    for name, value in teacher.state_dict().items():
        if not name.startswith("decoder."):
            assert torch.equal(value, s_state[name]), name
    path = tmp_path / "student.safetensors"
    save_network(student, path)
    loaded = load_network(path)
    assert loaded.arch == "stcn-effl0-ld" and loaded.spec.decoder_dims == (64, 32, 16)


def test_student_rejects_a_teacher_of_another_arch_or_a_student() -> None:
    with pytest.raises(ValueError, match="beyond the decoder's widths"):
        student_from_teacher(random_network("stcn-r18-lite"))
    with pytest.raises(ValueError, match="not wider"):
        student_from_teacher(random_network("stcn-effl0-ld"))


def _capture_synthetic(teacher, folder: Path, name: str, seed: int) -> int:
    config = capture_tracker_config("configs/cpu.yaml")
    engines = RecordingEngines(config, teacher)
    tracker = Tracker(config, engines=engines)
    frames, labels = generate_sequence(seed=seed, num_frames=5, size=(96, 160), num_objects=2, num_distractors=0)
    folder.mkdir(parents=True, exist_ok=True)
    return track_and_store(engines, tracker, list(frames), labels[0].astype(np.uint8), folder, name, 2)


def test_capture_stores_the_teachers_decoder_calls(teacher, tmp_path: Path) -> None:
    stored = _capture_synthetic(teacher, tmp_path, "scene", seed=1)
    paths = sorted(tmp_path.glob("*.pt"))
    assert stored == len(paths) == 2  # frames 2 and 4: frame 0 is the prompt, nothing decoded
    entry = load_entry(paths[0])
    assert entry["readout"].shape[:2] == (2, 128) and entry["logits"].shape[:2] == (2, 1)
    with torch.no_grad():
        again = teacher.decoder(entry["readout"], entry["query_value"], entry["f8"], entry["f4"])
    torch.testing.assert_close(again, entry["logits"], rtol=0, atol=0.05)  # the stored fp16 inputs and logits
    assert 0.0 <= mask_agreement(teacher.decoder, paths) <= 1.0
    one = load_entry(paths[0], objects=1, rng=np.random.default_rng(0))
    assert one["readout"].shape[0] == one["logits"].shape[0] == 1


def test_distillation_runs_resumes_and_writes_a_loadable_network(teacher, tmp_path: Path) -> None:
    teacher_path = tmp_path / "teacher.safetensors"
    save_network(teacher, teacher_path)
    run = tmp_path / "run"
    _capture_synthetic(teacher, run / CAPTURE, "a", seed=2)
    _capture_synthetic(teacher, run / MONITOR, "b", seed=3)
    cfg = DistillConfig(teacher=str(teacher_path), out=str(run), steps=2, eval_every=1, checkpoint_every=1)
    distill(cfg)
    distill(DistillConfig(**{**cfg.__dict__, "steps": 3}))  # resumes at step 2
    with (run / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert all(0.0 <= float(r["monitor_mask_iou"]) <= 1.0 for r in rows)
    net = load_network(run / "final.safetensors")
    assert net.arch == "stcn-effl0-ld"
    exported = load_network(export_checkpoint(cfg))  # the checkpoint of step 3: the final network's decoder
    for name, value in net.decoder.state_dict().items():
        assert torch.equal(value, exported.decoder.state_dict()[name]), name


def test_distillation_without_a_capture_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the capture first"):
        distill(DistillConfig(out=str(tmp_path)))


def test_boundary_weight_counts_the_teachers_unsure_pixels_more(teacher) -> None:
    """With W = 0 the loss is the plain soft-target cross-entropy; with W > 0 an error where the teacher is sure
    weighs less against one where it is unsure."""
    decoder = student_from_teacher(teacher).decoder.eval()
    readout, query_value, f8, f4 = _decoder_inputs(1, (2, 2))
    with torch.no_grad():
        student = decoder(readout, query_value, f8, f4)
    sure, unsure = torch.full_like(student, 8.0), torch.zeros_like(student)
    target = torch.where(torch.arange(student.shape[-1]) < 16, sure, unsure)
    entry = {"readout": readout, "query_value": query_value, "f8": f8, "f4": f4, "logits": target}
    with torch.no_grad():
        plain = distill_loss(decoder, entry)
        expected = F.binary_cross_entropy_with_logits(student, torch.sigmoid(target))
        torch.testing.assert_close(plain, expected)
        per_pixel = F.binary_cross_entropy_with_logits(student, torch.sigmoid(target), reduction="none")
        weight = 1.0 + 3.0 * 4.0 * torch.sigmoid(target) * (1.0 - torch.sigmoid(target))
        torch.testing.assert_close(distill_loss(decoder, entry, 3.0), (weight * per_pixel).sum() / weight.sum())
        assert bool((weight[..., 20] > 3.9).all()) and bool((weight[..., 0] < 1.01).all())
