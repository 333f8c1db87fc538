"""The sparse (top-k) readouts against the dense exact reference, and the sparse products on their own."""

from __future__ import annotations

import pytest
import torch

import edge_vos.readout.sparse as sparse_module
from edge_vos.readout.sparse import SparseRows, gather_sum, slot_topk
from edge_vos.readout.state import TmrnState
from edge_vos.readout.stcn import stcn_readout
from tests.readout_reference import reference_tmrn
from tests.test_readout import F64, VALID, clustered_inputs, make_inputs, ref_tmrn, rel_err, smooth_inputs

NO_CUDA = None if torch.cuda.is_available() else "needs CUDA (torch.cuda.is_available() is False on this machine)"


def random_rows(N=3, R=7, cols=9, k=4, p=5, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(R, N, cols, generator=gen, dtype=dtype)
    val, idx = slot_topk(logits, k)
    s = SparseRows(idx.transpose(0, 1).contiguous(), val.transpose(0, 1).contiguous(), cols)
    return s, gen


@pytest.mark.parametrize("csr", [True, False])
def test_sparse_products_equal_dense_products(csr, monkeypatch):
    """CSR kernels (CPU, no grad) and gathers (autograd, CUDA) both give the dense products."""
    monkeypatch.setattr(sparse_module, "CSR_DEVICES", ("cpu",) if csr else ())
    s, gen = random_rows()
    dense = s.to_dense()
    assert (dense != 0).sum(-1).eq(4).all()  # k entries per row
    assert torch.equal(s.index, s.index.sort(dim=-1).values)  # sorted columns
    z = torch.randn(3, 9, 5, generator=gen, dtype=F64)
    u = torch.randn(3, 7, 5, generator=gen, dtype=F64)
    torch.testing.assert_close(s.mm(z), dense @ z)
    torch.testing.assert_close(s.tmm(u), dense.mT @ u)
    sampled = s.sample(u, z)
    torch.testing.assert_close(sampled, (u @ z.mT).gather(-1, s.index))
    torch.testing.assert_close(s.column_sums(), dense.sum(dim=1))
    sub = s.select(torch.tensor([2, 0]))
    torch.testing.assert_close(sub.mm(z[[2, 0]]), dense[[2, 0]] @ z[[2, 0]])
    index = s.flat_index.view(3, 7, 4).transpose(0, 1).reshape(7, 12)
    weight = torch.rand(7, 12, generator=gen, dtype=F64)
    table = torch.randn(27, 6, generator=gen, dtype=F64)
    torch.testing.assert_close(gather_sum(index, weight, table), (weight[..., None] * table[index]).sum(1))


@pytest.mark.parametrize("mode,renormalize", [("st", True), ("tmrn", True), ("tmrn", False)])
def test_sparse_with_every_entry_kept_is_the_dense_reference(mode, renormalize):
    """top_k = hw keeps all of S: the sparse path must reproduce the dense exact reference."""
    qk, mk, mv = make_inputs()
    ref = ref_tmrn(qk, mk, mv, VALID, agents=8, mode=mode, renormalize=renormalize)
    dense = reference_tmrn(qk, mk, mv, VALID, agents=8, mode=mode, renormalize=renormalize)
    out = reference_tmrn(qk, mk, mv, VALID, agents=8, mode=mode, renormalize=renormalize, slot_top_k=20)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out, dense, rtol=1e-9, atol=1e-10)


def test_sparse_per_object_masks_and_garbage_slots():
    """Per-object validity: each object equals its own run on its valid slots; garbage is never read."""
    qk, mk, mv = make_inputs(B=1, O=2, T=3)
    valid = torch.tensor([[[True, True, False], [True, False, True]]])
    poisoned = mv.clone()
    poisoned[0, 0, 2] = float("nan")
    poisoned[0, 1, 1] = float("inf")
    both = reference_tmrn(qk, mk, poisoned, valid, agents=6, slot_top_k=5)
    for o in range(2):
        alone = reference_tmrn(qk, mk, mv[:, o : o + 1], valid[:, o], agents=6, slot_top_k=5)
        torch.testing.assert_close(both[:, o : o + 1], alone)
    stcn = stcn_readout(qk, mk, poisoned, valid, top_k=5)
    assert torch.isfinite(both).all() and torch.isfinite(stcn).all()


def test_objects_with_the_same_valid_slots_share_one_gather_and_each_equals_its_own_run():
    """Objects 0 and 2 have the same valid slots (one CSR of their value gather, built once), object 1 others:
    each object's readout equals the readout of it alone."""
    qk, mk, mv = make_inputs(B=1, O=3, T=3)
    valid = torch.tensor([[[True, False, True], [True, True, True], [True, False, True]]])
    together = reference_tmrn(qk, mk, mv, valid, agents=6, slot_top_k=5)
    for o in range(3):
        alone = reference_tmrn(qk, mk, mv[:, o : o + 1], valid[:, o], agents=6, slot_top_k=5)
        torch.testing.assert_close(together[:, o : o + 1], alone)


@pytest.mark.parametrize("svd", ["exact", "fast"])
def test_sparse_close_to_dense_exact_on_peaky_affinities(svd):
    """Trained-like keys (regions, motion; sharpened to an affinity perplexity of ~6, trained keys: ~1):
    the sparse path with top-16 per slot stays close to the dense exact reference, warm frames included."""
    qk, mk, mv = clustered_inputs(T=3)
    qk, mk = qk * 6, mk * 6
    valid = torch.ones(1, 3, dtype=torch.bool)
    state = TmrnState()
    errors = []
    for q in (qk, torch.roll(qk, shifts=1, dims=-1), qk):
        exact = reference_tmrn(q, mk, mv, valid, agents=16)
        out = reference_tmrn(q, mk, mv, valid, agents=16, svd=svd, slot_top_k=16, state=state)
        errors.append(rel_err(out, exact))
    assert max(errors) < 0.02, errors
    assert errors[0] > 0  # truncation does change something
    if svd == "fast":
        assert state.hits == 6 and state.misses == 3


def test_sparse_gradient_flows():
    qk, mk, mv = (x.float().requires_grad_() for x in smooth_inputs(T=2, seed=3))
    valid = torch.ones(1, 2, dtype=torch.bool)
    out = reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", slot_top_k=6)
    out.square().sum().backward()
    for x in (qk, mk, mv):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(out, reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", slot_top_k=6))


@pytest.mark.parametrize("top_k", [None, 8])
def test_pixel_agents(top_k):
    """agent_source="pixels": agents are the keys of real pixels (no SVD); with every entry kept the
    sparse path equals the dense one, and on sharpened keys it stays near the SVD agents' output."""
    qk, mk, mv = clustered_inputs(T=3)
    valid = torch.ones(1, 3, dtype=torch.bool)
    full = reference_tmrn(qk, mk, mv, valid, agents=16, agent_source="pixels", slot_top_k=qk.shape[-1] * qk.shape[-2])
    torch.testing.assert_close(full, reference_tmrn(qk, mk, mv, valid, agents=16, agent_source="pixels"))
    out = reference_tmrn(qk * 3, mk * 3, mv, valid, agents=16, agent_source="pixels", slot_top_k=top_k)
    svd = reference_tmrn(qk * 3, mk * 3, mv, valid, agents=16, slot_top_k=top_k)
    assert torch.isfinite(out).all() and 0 < rel_err(out, svd) < 0.1
    with pytest.raises(ValueError, match="agent_source"):
        reference_tmrn(qk, mk, mv, valid, agent_source="random")


def test_bad_top_k():
    qk, mk, mv = make_inputs()
    with pytest.raises(ValueError, match="top_k"):
        reference_tmrn(qk, mk, mv, VALID, slot_top_k=0)


def test_half_input_sparse_path_on_cpu():
    """Half input takes the gather path (as on CUDA) with float32 logits: as close to the float64 dense
    reference as float32 input is."""
    qk, mk, mv = clustered_inputs(T=3)
    qk, mk = qk * 6, mk * 6
    valid = torch.ones(1, 3, dtype=torch.bool)
    exact = reference_tmrn(qk.double(), mk.double(), mv.double(), valid, agents=16)
    single = reference_tmrn(qk, mk, mv, valid, agents=16, svd="fast", slot_top_k=16)
    half = reference_tmrn(qk.half(), mk.half(), mv.half(), valid, agents=16, svd="fast", slot_top_k=16)
    assert half.dtype == torch.float16
    assert rel_err(half, exact) < rel_err(single, exact) + 0.005


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
@pytest.mark.parametrize("top_k,scale,svd", [(None, 1.0, "exact"), (16, 6.0, "fast")])
def test_cuda_half_readouts_close_to_float64(top_k, scale, svd):
    """On CUDA the readouts run in half (affinities, agents, alignment, value sums) with the subspace
    step in float32; the sparse path as gathers. Against the dense exact float64 reference on the CPU
    (the same settings as the CPU tests above, plus the rounding of half). The same code runs in half on
    the CPU in test_half_input_sparse_path_on_cpu; this one checks the CUDA kernels."""
    qk, mk, mv = clustered_inputs(T=3)
    qk, mk = qk * scale, mk * scale
    valid = torch.ones(1, 3, dtype=torch.bool)
    cuda = torch.device("cuda")
    half = [x.to(cuda, torch.float16) for x in (qk, mk, mv)]
    exact = reference_tmrn(qk.double(), mk.double(), mv.double(), valid, agents=16)
    state = TmrnState()
    for _ in range(2):  # cold, then warm
        out = reference_tmrn(*half, valid.to(cuda), agents=16, svd=svd, slot_top_k=top_k, state=state)
        assert out.dtype == torch.float16 and out.device.type == "cuda"
        assert rel_err(out.cpu(), exact) < 0.03
    # STCN: dense, and top-20 on the peaky keys (on near-uniform ones the half inputs alone move the top-20
    # boundary); the logits are float32 for half input (common.logits_dtype)
    for k, tol in ((None, 0.01), (20, 0.03)) if scale > 1 else ((None, 0.01),):
        stcn = stcn_readout(*half, valid.to(cuda), top_k=k)
        assert rel_err(stcn.cpu(), stcn_readout(qk.double(), mk.double(), mv.double(), valid, top_k=k)) < tol


def test_tracker_default_is_the_sparse_path():
    """TrackerConfig's default and the shipped CPU config build the sparse TMRN readout; the reference
    options are not config options."""
    from pathlib import Path

    from edge_vos.config import ConfigError, from_dict
    from edge_vos.readout import TmrnReadout, build_readout
    from edge_vos.tracker.config import ReadoutConfig, TrackerConfig

    shipped = Path(__file__).resolve().parents[1] / "configs" / "cpu.yaml"
    for config in (TrackerConfig(), TrackerConfig.from_yaml(shipped)):
        assert isinstance(build_readout(config.readout), TmrnReadout)
    for option in ("svd", "agent_source", "renormalize"):
        with pytest.raises(ConfigError, match=option):
            from_dict(ReadoutConfig, {"tmrn": {option: "x"}})


def channels_last(mv: torch.Tensor) -> torch.Tensor:
    """mv [B,O,T,Cv,H,W] with the storage of tracker.memory: Cv innermost."""
    return mv.permute(0, 1, 2, 4, 5, 3).contiguous().permute(0, 1, 2, 5, 3, 4)


@pytest.mark.parametrize("top_k", [None, 5])
def test_readouts_take_channels_last_values(top_k):
    """The memory stores values channels-last (value rows gathered as views); every readout gives the
    same answer whatever the layout, per-object masks with garbage in invalid slots included."""
    qk, mk, mv = make_inputs(B=1, O=2, T=3)
    valid = torch.tensor([[[True, True, False], [True, False, True]]])
    poisoned = mv.clone()
    poisoned[0, 0, 2] = float("nan")
    for values, values_valid in ((mv, VALID[:1]), (poisoned, valid)):
        cl = channels_last(values)
        assert not cl.is_contiguous()
        torch.testing.assert_close(
            reference_tmrn(qk, mk, cl, values_valid, agents=6, slot_top_k=top_k),
            reference_tmrn(qk, mk, values, values_valid, agents=6, slot_top_k=top_k))
        torch.testing.assert_close(
            stcn_readout(qk, mk, cl, values_valid, top_k=top_k),
            stcn_readout(qk, mk, values, values_valid, top_k=top_k))


def test_ring_memory_stores_values_channels_last():
    from edge_vos.tracker.memory import RingMemory

    memory = RingMemory(3, 2, 4, 5, (2, 3), max_pinned=1)
    values = torch.randn(2, 5, 2, 3)
    memory.write(torch.randn(1, 4, 2, 3), values, [0, 1], pin=True, frame_index=0)
    view = memory.view([0, 1])
    assert view.values.shape == (1, 2, 1, 5, 2, 3) and view.values.stride()[3] == 1
    torch.testing.assert_close(view.values[0, :, 0], values)
    # the readouts' value rows (one memory pixel's channels) are a view, not a copy
    rows = view.values[0].permute(0, 1, 3, 4, 2).reshape(2, 6, 5)
    assert rows.data_ptr() == view.values.data_ptr()


def test_few_entries_per_slot_on_peaky_keys():
    """Affinities as peaky as trained ones (the first two logits of a row tens apart): keeping 4 entries per
    row and slot (the default) gives what keeping 16 gives, and the default config keeps 4."""
    from edge_vos.tracker.config import ReadoutConfig

    qk, mk, mv = clustered_inputs(T=3)
    qk, mk = qk * 24, mk * 24
    valid = torch.ones(1, 3, dtype=torch.bool)
    four = reference_tmrn(qk, mk, mv, valid, agents=16, slot_top_k=4)
    sixteen = reference_tmrn(qk, mk, mv, valid, agents=16, slot_top_k=16)
    assert rel_err(four, sixteen) < 1e-3
    assert ReadoutConfig().tmrn is not None and ReadoutConfig().tmrn.slot_top_k == 4


def test_staggered_agent_refresh(monkeypatch):
    """agents_every=3: after a first frame that computes every slot's agents, each frame recomputes only
    the slots whose turn it is (about N / 3), an overwritten slot at once; 1 is the every-frame default."""
    import edge_vos.readout.stages as stages

    calls: list[list[int]] = []
    real = stages.top_singular

    def spy(s, k, *, keys, state, batch, slots, prints=None):
        calls.append(list(slots))
        return real(s, k, keys=keys, state=state, batch=batch, slots=slots, prints=prints)

    monkeypatch.setattr(stages, "top_singular", spy)
    qk, mk, mv = clustered_inputs(T=3)
    valid = torch.ones(1, 3, dtype=torch.bool)
    state = TmrnState()
    state.sync_versions([1, 2, 3])
    for _ in range(4):
        out = reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", slot_top_k=4, state=state, agents_every=3)
        assert torch.isfinite(out).all()
    assert calls == [[0, 1, 2], [2], [1], [0]]  # frame f: the slots t with (f + t) % 3 == 0
    calls.clear()
    state.sync_versions([1, 5, 3])  # slot 1 overwritten: its old agents are dropped
    reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", slot_top_k=4, state=state, agents_every=3)
    assert calls == [[1, 2]]  # frame 4: slot 2's turn, and slot 1 at once
    calls.clear()
    every_frame = TmrnState()
    a = reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", slot_top_k=4, state=every_frame, agents_every=1)
    b = reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", slot_top_k=4, state=TmrnState())
    torch.testing.assert_close(a, b)
    assert calls == [[0, 1, 2], [0, 1, 2]]


def test_tmrn_options_are_checked():
    from edge_vos.config import ConfigError
    from edge_vos.readout import TmrnOptions

    for option in ("agents", "slot_top_k", "agents_every"):
        with pytest.raises(ConfigError, match=option):
            TmrnOptions(**{option: 0})


def test_staggered_agents_follow_a_new_agent_count():
    """Agents kept from a frame with another agent count (or size) are computed anew, not stacked."""
    qk, mk, mv = clustered_inputs(T=3)
    valid = torch.ones(1, 3, dtype=torch.bool)
    state = TmrnState()
    reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", slot_top_k=4, state=state, agents_every=2)
    out = reference_tmrn(qk, mk, mv, valid, agents=6, svd="fast", slot_top_k=4, state=state, agents_every=2)
    assert torch.isfinite(out).all()
