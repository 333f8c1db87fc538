"""Readouts against float64 references written straight from the equations (loops, no batching tricks)."""

from __future__ import annotations

import math

import pytest
import torch

from edge_vos.readout.state import TmrnState
from edge_vos.readout.stcn import stcn_readout
from tests.readout_reference import reference_tmrn

F64 = torch.float64


def make_inputs(
    B: int = 2, O: int = 2, T: int = 3, Ck: int = 8, Cv: int = 6, H: int = 4, W: int = 5,
    dtype: torch.dtype = F64, seed: int = 0, key_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    qk = torch.randn(B, Ck, H, W, generator=gen, dtype=F64) * key_scale
    mk = torch.randn(B, T, Ck, H, W, generator=gen, dtype=F64) * key_scale
    mv = torch.randn(B, O, T, Cv, H, W, generator=gen, dtype=F64)
    return qk.to(dtype), mk.to(dtype), mv.to(dtype)


def smooth_inputs(
    B: int = 1, O: int = 1, T: int = 3, Ck: int = 16, Cv: int = 8, H: int = 8, W: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spatially smooth keys (upsampled noise) like real feature maps: a decaying affinity spectrum."""
    gen = torch.Generator().manual_seed(seed)

    def smooth(*lead: int, c: int) -> torch.Tensor:
        x = torch.randn(math.prod(lead), c, H // 2, W // 2, generator=gen, dtype=F64)
        x = torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        return (x * 2 + 0.3 * torch.randn(x.shape, generator=gen, dtype=F64)).view(*lead, c, H, W)

    return smooth(B, c=Ck), smooth(B, T, c=Ck), smooth(B, O, T, c=Cv)


def sim(q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """q [n, Ck], m [p, Ck] -> (2 q.m - |m|^2) / sqrt(Ck) [n, p]."""
    return (2 * q @ m.T - (m * m).sum(1)[None, :]) / math.sqrt(q.shape[1])


def ref_stcn(qk, mk, mv, valid, top_k=None):
    """valid [B,T] only: one softmax over the pixels of all valid slots."""
    B, Ck, H, W = qk.shape
    O, Cv = mv.shape[1], mv.shape[3]
    out = torch.zeros(B, O, Cv, H * W, dtype=F64)
    for b in range(B):
        q = qk[b].reshape(Ck, -1).T.double()
        slots = [t for t in range(mk.shape[1]) if valid[b, t]]
        m = torch.cat([mk[b, t].reshape(Ck, -1).T.double() for t in slots])
        logits = sim(q, m)
        if top_k is not None and top_k < logits.shape[1]:
            kth = logits.topk(top_k, dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        p = torch.softmax(logits, dim=1)
        for o in range(O):
            v = torch.cat([mv[b, o, t].reshape(Cv, -1).T.double() for t in slots])
            out[b, o] = (p @ v).T
    return out.view(B, O, Cv, H, W)


def ref_tmrn(qk, mk, mv, valid, agents=128, mode="tmrn", renormalize=True):
    """valid [B,T] only; exact float64 SVD; the equations of the issue one slot at a time."""
    B, Ck, H, W = qk.shape
    O, Cv = mv.shape[1], mv.shape[3]
    hw = H * W
    out = torch.zeros(B, O, Cv, hw, dtype=F64)
    for b in range(B):
        q = qk[b].reshape(Ck, -1).T.double()
        logits, aligned_values = [], []
        for t in range(mk.shape[1]):
            if not valid[b, t]:
                continue
            m = mk[b, t].reshape(Ck, -1).T.double()
            s = torch.softmax(sim(q, m), dim=1)
            if mode == "st":
                w = s
            else:
                k = min(agents, hw)
                u, _, vh = torch.linalg.svd(s)
                u, v = u[:, :k], vh[:k].T
                for j in range(k):
                    if u[:, j].sum() < 0:
                        u[:, j], v[:, j] = -u[:, j], -v[:, j]
                a = torch.cat([u.T @ q, v.T @ m])
                p_q = torch.softmax(q @ a.T / math.sqrt(Ck), dim=1)
                p_m = torch.softmax(m @ a.T / math.sqrt(Ck), dim=1)
                w = (p_q @ p_m.T) * s
                if renormalize:
                    w = w / w.sum(1, keepdim=True)
            key = w @ m
            logits.append(torch.stack([sim(q[i : i + 1], key[i : i + 1])[0, 0] for i in range(hw)]))
            aligned_values.append([w @ mv[b, o, t].reshape(Cv, -1).T.double() for o in range(O)])
        a = torch.softmax(torch.stack(logits), dim=0)  # [slots, hw]
        for o in range(O):
            out[b, o] = sum(a[n][:, None] * vals[o] for n, vals in enumerate(aligned_values)).T
    return out.view(B, O, Cv, H, W)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


VALID = torch.tensor([[True, False, True], [True, True, True]])


@pytest.mark.parametrize("top_k", [None, 1, 7])
def test_stcn_matches_reference(top_k):
    qk, mk, mv = make_inputs()
    out = stcn_readout(qk, mk, mv, VALID, top_k=top_k)
    assert out.shape == (2, 2, 6, 4, 5) and out.dtype == F64
    torch.testing.assert_close(out, ref_stcn(qk, mk, mv, VALID, top_k), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode,renormalize", [("st", True), ("tmrn", True), ("tmrn", False)])
def test_tmrn_matches_reference(mode, renormalize):
    qk, mk, mv = make_inputs(seed=1)
    out = reference_tmrn(qk, mk, mv, VALID, agents=6, mode=mode, renormalize=renormalize)
    ref = ref_tmrn(qk, mk, mv, VALID, agents=6, mode=mode, renormalize=renormalize)
    assert out.dtype == F64
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_tmrn_agents_cover_all_pixels():
    """K = min(agents, hw): more agents than pixels is allowed and equals agents = hw."""
    qk, mk, mv = make_inputs(B=1, H=2, W=3, seed=2)
    valid = torch.ones(1, 3, dtype=torch.bool)
    out = reference_tmrn(qk, mk, mv, valid, agents=128)
    torch.testing.assert_close(out, ref_tmrn(qk, mk, mv, valid, agents=6), rtol=1e-9, atol=1e-9)


def test_st_with_one_slot_equals_stcn():
    qk, mk, mv = make_inputs(seed=3)
    valid = torch.tensor([[False, True, False], [False, False, True]])
    torch.testing.assert_close(
        reference_tmrn(qk, mk, mv, valid, mode="st"), stcn_readout(qk, mk, mv, valid), rtol=1e-12, atol=1e-12
    )


def _poison(mk, mv, valid):
    """Garbage (NaN, inf, huge) in every invalid slot."""
    mk, mv = mk.clone(), mv.clone()
    for b, t in (~valid).nonzero().tolist():
        mk[b, t] = float("nan")
        mk[b, t, 0, 0, 0] = float("inf")
        mv[b, :, t] = 1e30
    return mk, mv


@pytest.mark.parametrize(
    "fn", [
        lambda *a: stcn_readout(*a),
        lambda *a: stcn_readout(*a, top_k=3),
        lambda *a: reference_tmrn(*a, agents=5),
        lambda *a: reference_tmrn(*a, agents=5, svd="lowrank"),
        lambda *a: reference_tmrn(*a, agents=5, svd="fast"),
    ],
    ids=["stcn", "stcn-top3", "tmrn-exact", "tmrn-lowrank", "tmrn-fast"],
)
def test_invalid_slots_change_nothing(fn):
    qk, mk, mv = make_inputs(T=4, seed=4)
    valid = torch.tensor([[True, False, True, False], [False, True, True, True]])
    clean = fn(qk, mk, mv, valid)
    mk2, mv2 = _poison(mk, mv, valid)
    torch.testing.assert_close(fn(qk, mk2, mv2, valid), clean, rtol=0, atol=0)
    # dropping the invalid slots altogether gives the same answer too (batch element 1: slots 1..3)
    keep = [1, 2, 3]
    alone = fn(qk[1:], mk[1:, keep], mv[1:, :, keep], valid[1:, keep])
    torch.testing.assert_close(alone, clean[1:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["st", "tmrn"])
def test_slot_order_changes_nothing(mode):
    qk, mk, mv = make_inputs(T=4, seed=5)
    valid = torch.tensor([[True, False, True, True], [True, True, True, True]])
    perm = [2, 0, 3, 1]
    out = reference_tmrn(qk, mk, mv, valid, agents=5, mode=mode)
    permuted = reference_tmrn(qk, mk[:, perm], mv[:, :, perm], valid[:, perm], agents=5, mode=mode)
    torch.testing.assert_close(permuted, out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        stcn_readout(qk, mk[:, perm], mv[:, :, perm], valid[:, perm]), stcn_readout(qk, mk, mv, valid)
    )


@pytest.mark.parametrize(
    "fn", [
        lambda *a: stcn_readout(*a),
        lambda *a: stcn_readout(*a, top_k=4),
        lambda *a: reference_tmrn(*a, agents=5, mode="st"),
        lambda *a: reference_tmrn(*a, agents=5),
        lambda *a: reference_tmrn(*a, agents=5, renormalize=False),
    ],
    ids=["stcn", "stcn-top4", "st", "tmrn", "tmrn-eq13"],
)
def test_per_object_valid_equals_per_object_runs(fn):
    qk, mk, mv = make_inputs(O=3, T=4, seed=6)
    valid = torch.tensor(
        [
            [[True, True, True, True], [False, False, True, True], [False, True, False, True]],
            [[True, False, True, False], [True, False, True, False], [True, True, True, True]],
        ]
    )
    mv = mv.clone()
    mv[~valid[:, :, :, None, None, None].expand_as(mv)] = float("nan")  # objects' values before they joined
    out = fn(qk, mk, mv, valid)
    for o in range(3):
        alone = fn(qk, mk, torch.nan_to_num(mv[:, o : o + 1]), valid[:, o])
        torch.testing.assert_close(out[:, o : o + 1], alone, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 0.01), (torch.bfloat16, 0.05)])
@pytest.mark.parametrize(
    "fn", [
        lambda *a: stcn_readout(*a),
        lambda *a: stcn_readout(*a, top_k=5),
        lambda *a: reference_tmrn(*a, agents=8),
        lambda *a: reference_tmrn(*a, agents=8, svd="fast"),
    ],
    ids=["stcn", "stcn-top5", "tmrn", "tmrn-fast"],
)
def test_half_precision_close_to_float32(fn, dtype, tol):
    qk, mk, mv = smooth_inputs(B=1, O=2, T=3, H=6, W=8, seed=7)
    qk, mk = qk * 0.5, mk * 0.5
    valid = torch.ones(1, 3, dtype=torch.bool)
    ref = fn(qk.float(), mk.float(), mv.float(), valid)
    out = fn(qk.to(dtype), mk.to(dtype), mv.to(dtype), valid)
    assert out.dtype == dtype
    assert rel_err(out, ref) < tol


def test_top_k_keeps_k_entries():
    """With one-hot values per memory pixel the output is the weight matrix itself."""
    B, T, Ck, H, W = 1, 2, 8, 3, 4
    hw = H * W
    qk, mk, _ = make_inputs(B=B, O=1, T=T, Ck=Ck, H=H, W=W, seed=8)
    mv = torch.eye(T * hw, dtype=F64).view(T * hw, T, H, W)[None, None]  # Cv = T*hw, [1,1,T,Cv,H,W]
    mv = mv.permute(0, 1, 3, 2, 4, 5).contiguous()
    valid = torch.ones(B, T, dtype=torch.bool)
    weights = stcn_readout(qk, mk, mv, valid, top_k=5)[0, 0].reshape(T * hw, hw)
    assert ((weights > 0).sum(0) == 5).all()
    torch.testing.assert_close(weights.sum(0), torch.ones(hw, dtype=F64))
    dense = stcn_readout(qk, mk, mv, valid)[0, 0].reshape(T * hw, hw)
    torch.testing.assert_close(weights.argmax(0), dense.argmax(0))
    torch.testing.assert_close(stcn_readout(qk, mk, mv, valid, top_k=10_000), stcn_readout(qk, mk, mv, valid))
    with pytest.raises(ValueError, match="top_k"):
        stcn_readout(qk, mk, mv, valid, top_k=0)


def test_lowrank_reproducible_without_global_rng():
    qk, mk, mv = smooth_inputs(T=2, seed=9)
    valid = torch.ones(1, 2, dtype=torch.bool)
    rng = torch.get_rng_state()
    a = reference_tmrn(qk, mk, mv, valid, agents=16, svd="lowrank")
    b = reference_tmrn(qk, mk, mv, valid, agents=16, svd="lowrank")
    assert torch.equal(torch.get_rng_state(), rng)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    exact = reference_tmrn(qk, mk, mv, valid, agents=16)
    assert rel_err(a, exact) < 0.02


def test_fast_close_to_exact_with_and_without_state():
    qk, mk, mv = smooth_inputs(T=3, H=8, W=10, seed=10)
    valid = torch.ones(1, 3, dtype=torch.bool)
    exact = reference_tmrn(qk, mk, mv, valid, agents=16)
    assert rel_err(reference_tmrn(qk, mk, mv, valid, agents=16, svd="fast"), exact) < 0.02
    state = TmrnState()
    first = reference_tmrn(qk, mk, mv, valid, agents=16, svd="fast", state=state)
    assert len(state) == 3 and state.misses == 3
    # next frame: a slightly moved query, warm start from the state
    qk2 = qk + 0.05 * torch.randn(qk.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    warm = reference_tmrn(qk2, mk, mv, valid, agents=16, svd="fast", state=state)
    assert state.hits == 3
    assert rel_err(first, exact) < 0.02
    assert rel_err(warm, reference_tmrn(qk2, mk, mv, valid, agents=16)) < 0.02
    # an overwritten slot is detected by its keys' fingerprint even without a version change
    mk2 = mk.clone()
    mk2[:, 1] = mk[:, 0]
    reference_tmrn(qk2, mk2, mv, valid, agents=16, svd="fast", state=state)
    assert state.misses == 4
    state.sync_versions([5, 6, 7])
    assert len(state) == 0
    state.put(0, 0, torch.zeros(2, dtype=F64), torch.zeros(80, 24))
    state.sync_versions([5, 6, 7])
    assert len(state) == 1
    state.sync_versions([8, 6, 7])
    assert len(state) == 0


def test_no_valid_slot_is_an_error():
    qk, mk, mv = make_inputs()
    valid = torch.tensor([[True, False, True], [False, False, False]])
    with pytest.raises(ValueError, match="no valid memory slot for batch element 1"):
        reference_tmrn(qk, mk, mv, valid)
    per_object = torch.ones(2, 2, 3, dtype=torch.bool)
    per_object[0, 1] = False
    with pytest.raises(ValueError, match="batch element 0, object 1"):
        stcn_readout(qk, mk, mv, per_object)


def test_bad_arguments():
    qk, mk, mv = make_inputs()
    valid = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="svd"):
        reference_tmrn(qk, mk, mv, valid, svd="nope")
    with pytest.raises(ValueError, match="mode"):
        reference_tmrn(qk, mk, mv, valid, mode="nope")
    with pytest.raises(ValueError, match="valid"):
        stcn_readout(qk, mk, mv, valid.float())
    with pytest.raises(ValueError, match="valid"):
        stcn_readout(qk, mk, mv, valid[:, :2])
    with pytest.raises(ValueError, match="dtype"):
        stcn_readout(qk.float(), mk, mv, valid)


@pytest.mark.parametrize(
    "fn", [
        lambda *a: stcn_readout(*a),
        lambda *a: stcn_readout(*a, top_k=3),
        lambda *a: reference_tmrn(*a, agents=4),
        lambda *a: reference_tmrn(*a, agents=4, svd="fast", state=TmrnState()),
    ],
    ids=["stcn", "stcn-top3", "tmrn", "tmrn-fast"],
)
def test_gradient_flows(fn):
    qk, mk, mv = (x.float().requires_grad_() for x in make_inputs(seed=11))
    valid = torch.tensor([[[True, True, False], [True, False, True]], [[True, True, True], [False, True, True]]])
    out = fn(qk, mk, mv, valid)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    for x in (qk, mk, mv):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_inplace_softmax_matches_torch(dtype):
    from edge_vos.readout.common import softmax_last

    x = (torch.randn(3, 17, 29, dtype=F64) * 4).to(dtype)
    torch.testing.assert_close(softmax_last(x.clone(), inplace=True), torch.softmax(x, dim=-1))


def test_fast_follows_a_moving_query():
    """The warm start must track the query, not freeze the first frame's subspace."""
    qk, mk, mv = smooth_inputs(T=2, H=8, W=12, seed=12)
    other, _, _ = smooth_inputs(T=2, H=8, W=12, seed=14)
    valid = torch.ones(1, 2, dtype=torch.bool)
    state = TmrnState()
    errors = []
    for i in range(7):  # the query jumps in thirds to an unrelated frame, then stays
        q = qk + (other - qk) * min(1.0, i / 3)
        exact = reference_tmrn(q, mk, mv, valid, agents=4)
        errors.append(rel_err(reference_tmrn(q, mk, mv, valid, agents=4, svd="fast", state=state), exact))
    assert state.hits == 12
    # a big jump costs accuracy for a frame or two (4 agents only: each matters), then it recovers
    assert errors[0] < 0.02 and errors[-1] < 0.02 and max(errors) < 0.5, errors


@pytest.mark.parametrize("top_k,role", [(None, None), (12, "logits")])
def test_grad_and_no_grad_paths_agree_and_buffers_are_reused(top_k, role):
    """The dense reference keeps no buffers (role None); the sparse readout keeps its logits' buffer."""
    qk, mk, mv = (x.float() for x in smooth_inputs(B=2, O=2, T=3, seed=13))
    valid = torch.tensor([[[True, True, False], [True, False, True]], [[True, True, True], [True, True, True]]])
    state, grad_state = TmrnState(), TmrnState()
    with torch.no_grad():
        a = [reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", state=state, slot_top_k=top_k)]
        ptr = state.workspace.get(role, (1,), torch.float32, qk.device).data_ptr() if role else None
        a.append(reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", state=state, slot_top_k=top_k))  # warm
        if role:
            assert state.workspace.get(role, (1,), torch.float32, qk.device).data_ptr() == ptr
        c = stcn_readout(qk, mk, mv, valid, top_k=top_k)
    qk.requires_grad_()
    for i in range(2):
        b = reference_tmrn(qk, mk, mv, valid, agents=8, svd="fast", state=grad_state, slot_top_k=top_k)
        torch.testing.assert_close(b.detach(), a[i], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stcn_readout(qk, mk, mv, valid, top_k=top_k).detach(), c, rtol=1e-5, atol=1e-6)
    state.clear()
    assert len(state.workspace) == 0 and len(state) == 0


def clustered_inputs(
    T: int = 3, Ck: int = 16, Cv: int = 8, H: int = 12, W: int = 16, regions: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys with the structure of real feature maps: a few regions (objects, background), each with its
    own prototype key plus smooth within-region variation; memory frames and the query are the same
    scene shifted by a pixel per frame (motion). Values: smooth. Float32 (the dtype the fast variant's
    bf16 GEMMs apply to)."""
    gen = torch.Generator().manual_seed(seed)

    def smooth(c: int, h: int, w: int) -> torch.Tensor:
        x = torch.randn(1, c, h // 4, w // 4, generator=gen, dtype=F64)
        return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[0]

    labels = smooth(regions, H, W + T + 1).argmax(0)  # [H, W + T + 1] region map
    protos = torch.randn(regions, Ck, generator=gen, dtype=F64) * 1.5
    field = protos[labels].permute(2, 0, 1) + 0.4 * smooth(Ck, H, W + T + 1)  # [Ck, H, W + T + 1]
    frames = [field[:, :, i : i + W] for i in range(T + 1)]  # frame i: shifted by i pixels
    mk = torch.stack(frames[:T])[None]
    qk = frames[T][None]
    mv = torch.stack([smooth(Cv, H, W) for _ in range(T)])[None, None]
    return qk.float(), mk.float(), mv.float()


@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("svd", ["exact", "lowrank", "fast"])
def test_peaky_affinities_stay_finite(svd, top_k):
    """Trained keys have large norms: S is one-hot per row (perplexity 1) and C * S underflows to zero
    rows, whose renormalisation was 0/0. Such rows take S's row, the limit of the renormalised C * S
    for a one-hot S, so the readout equals the ST readout (W = S)."""
    qk, mk, mv = (x.float() for x in make_inputs(B=1, O=2, T=3, Ck=16, H=6, W=7, seed=15, key_scale=60.0))
    valid = torch.ones(1, 3, dtype=torch.bool)
    out = reference_tmrn(qk, mk, mv, valid, agents=8, svd=svd, state=TmrnState(), slot_top_k=top_k)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference_tmrn(qk, mk, mv, valid, mode="st"), rtol=1e-4, atol=1e-4)


def test_eigh_failure_falls_back_instead_of_raising(monkeypatch) -> None:
    """A stream must survive LAPACK's rare non-convergence on degenerate Gram matrices."""
    from edge_vos.readout import svd as svd_module

    real = torch.linalg.eigh
    calls = {"n": 0}

    def flaky(a, *args, **kwargs):
        calls["n"] += 1
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("simulated non-convergence")
        return real(a, *args, **kwargs)

    gram = torch.randn(2, 6, 6)
    gram = gram @ gram.mT
    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    evals, evecs = svd_module._eigh_robust(gram)
    assert calls["n"] == 2 and evals.dtype == torch.float32
    expected = real(gram.double())[0]
    assert torch.allclose(evals.double(), expected, atol=1e-4)
