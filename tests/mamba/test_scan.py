"""The chunked scans against the sequential references, on fresh random inputs (float64, tight tolerance)."""

import pytest
import torch

from interp.mamba.scan import (
    _segsum,
    auto_chunk,
    changed_steps,
    continue_from_patches,
    fire_states,
    rescan_patched,
    selective_scan_chunked,
    selective_scan_ref,
    ssd_scan_chunked,
    ssd_scan_ref,
    ssd_states_chunked,
    states_chunk,
)

F64 = torch.float64
LENGTHS = (1, 7, 16, 37, 100)


def mamba1_inputs(b, T, d=6, N=4, dtype=F64, dt_scale=2.0, a_scale=5.0):
    return dict(
        x=torch.randn(b, T, d, dtype=dtype), dt=torch.rand(b, T, d, dtype=dtype) * dt_scale,
        A=-torch.rand(d, N, dtype=dtype) * a_scale, B=torch.randn(b, T, N, dtype=dtype),
        C=torch.randn(b, T, N, dtype=dtype), D=torch.randn(d, dtype=dtype),
    )


def mamba2_inputs(b, T, H=4, P=3, G=2, N=5, dtype=F64, dt_scale=1.0, a_scale=3.0):
    return dict(
        x=torch.randn(b, T, H, P, dtype=dtype), dt=torch.rand(b, T, H, dtype=dtype) * dt_scale,
        A=-torch.rand(H, dtype=dtype) * a_scale, B=torch.randn(b, T, G, N, dtype=dtype),
        C=torch.randn(b, T, G, N, dtype=dtype), D=torch.randn(H, dtype=dtype),
    )


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("chunk", [None, 1, 5, 16])
@pytest.mark.parametrize("with_h0", [False, True])
def test_mamba1_chunked_matches_reference(T, chunk, with_h0):
    inp = mamba1_inputs(2, T)
    h0 = torch.randn(2, 6, 4, dtype=F64) if with_h0 else None
    y_ref, s_ref = selective_scan_ref(**inp, h0=h0)
    y, states, final = selective_scan_chunked(**inp, h0=h0, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, s_ref[:, -1], rtol=1e-12, atol=1e-12)
    y2, none, _ = selective_scan_chunked(**inp, h0=h0, chunk_size=chunk, return_states=False)
    assert none is None
    torch.testing.assert_close(y2, y_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
@pytest.mark.parametrize("with_h0", [False, True])
def test_mamba2_chunked_matches_reference(T, chunk, with_h0):
    inp = mamba2_inputs(3, T)
    h0 = torch.randn(3, 4, 3, 5, dtype=F64) if with_h0 else None
    y_ref, s_ref = ssd_scan_ref(**inp, h0=h0)
    y, final = ssd_scan_chunked(**inp, h0=h0, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, s_ref[:, -1], rtol=1e-12, atol=1e-12)
    y2, states, final2 = ssd_states_chunked(**inp, h0=h0, chunk_size=chunk)
    torch.testing.assert_close(y2, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final2, s_ref[:, -1], rtol=1e-12, atol=1e-12)


def test_float32_inputs_close_to_float64_reference():
    inp = mamba1_inputs(2, 53, d=16, N=8, dtype=torch.float32)
    y_ref, _ = selective_scan_ref(**{k: v.double() for k, v in inp.items()})
    y, _, _ = selective_scan_chunked(**inp, return_states=False)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    inp = mamba2_inputs(2, 53, dtype=torch.float32)
    y_ref, _ = ssd_scan_ref(**{k: v.double() for k, v in inp.items()})
    torch.testing.assert_close(ssd_scan_chunked(**inp, chunk_size=16)[0].double(), y_ref, rtol=1e-4, atol=1e-4)


def test_strong_decay_underflows_cleanly():
    """Δ A down to -1e4 per step: decays underflow to exactly 0 and nothing becomes inf or nan."""
    inp = mamba1_inputs(1, 40, dt_scale=10.0, a_scale=1e3, dtype=torch.float32)
    y_ref, _ = selective_scan_ref(**inp)
    y, states, _ = selective_scan_chunked(**inp, chunk_size=8)
    assert torch.isfinite(y).all() and torch.isfinite(states).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    inp = mamba2_inputs(1, 40, dt_scale=10.0, a_scale=1e3, dtype=torch.float32)
    y_ref, _ = ssd_scan_ref(**inp)
    y, final = ssd_scan_chunked(**inp, chunk_size=16)
    assert torch.isfinite(y).all() and torch.isfinite(final).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_segsum_is_the_masked_window_sum():
    a = torch.randn(3, 9, dtype=F64)
    out = _segsum(a)
    for i in range(9):
        for j in range(9):
            want = a[:, j + 1:i + 1].sum(-1) if j <= i else torch.full((3,), -torch.inf, dtype=F64)
            torch.testing.assert_close(out[:, i, j], want)


@pytest.mark.parametrize("T", [1, 7, 64, 97, 256, 1024, 1000])
def test_auto_chunk(T):
    L = auto_chunk(T)
    assert 4 <= L <= 64
    if T in (64, 256, 1024, 1000):
        assert T % L == 0  # a divisor near sqrt(T) exists, so no padding


def _manual_patched(inp, patches):
    """The per-step loop where ``patches[(row, t)] = state`` replaces h_t and the loop continues from it."""
    b, T = inp["x"].shape[:2]
    rows = []
    for r in range(b):
        h = torch.zeros(inp["x"].shape[2], inp["A"].shape[1], dtype=F64)
        hs = []
        for t in range(T):
            decay = torch.exp(inp["dt"][r, t, :, None] * inp["A"])
            h = decay * h + (inp["dt"][r, t] * inp["x"][r, t])[:, None] * inp["B"][r, t]
            if (r, t) in patches:
                h = patches[(r, t)]
            hs.append(h)
        rows.append(torch.stack(hs))
    return torch.stack(rows)


def test_rescan_patched_matches_manual_loop():
    inp = mamba1_inputs(3, 29)
    _, states, _ = selective_scan_chunked(**inp)
    patches = {(0, 4): torch.randn(6, 4, dtype=F64), (0, 5): torch.randn(6, 4, dtype=F64),
               (1, 5): torch.randn(6, 4, dtype=F64), (2, 20): torch.zeros(6, 4, dtype=F64),
               (1, 28): torch.randn(6, 4, dtype=F64)}
    after = states.clone()
    changed = torch.zeros(3, 29, dtype=torch.bool)
    for (r, t), h in patches.items():
        after[r, t] = h
        changed[r, t] = True

    def rerun(p, q, h):
        sl = {k: (v[:, p:q] if k in ("x", "dt", "B", "C") else v) for k, v in inp.items()}
        return selective_scan_chunked(**sl, h0=h, chunk_size=4)[1]

    out = rescan_patched(after, changed, rerun)
    torch.testing.assert_close(out, _manual_patched(inp, patches), rtol=1e-12, atol=1e-12)
    assert torch.equal(out[2, :20], states[2, :20])  # before a row's first patch: exactly the original states
    y = continue_from_patches(torch.zeros(3, 29, 6, dtype=F64), after, changed, rerun, lambda s: s.sum(-1))
    assert torch.equal(y[2, :20], torch.zeros(20, 6, dtype=F64))
    torch.testing.assert_close(y[2, 20:], out[2, 20:].sum(-1))
    assert rescan_patched(states, torch.zeros(3, 29, dtype=torch.bool), rerun) is states


def test_changed_steps_is_exact():
    states = torch.randn(2, 11, 5, 7)
    after = states.clone()
    assert not changed_steps(states, after, block=40).any()
    after[1, 6, 3, 2] = torch.nextafter(after[1, 6, 3, 2], torch.tensor(float("inf")))
    assert changed_steps(states, after, block=40).nonzero().tolist() == [[1, 6]]


@pytest.mark.parametrize("how", ["read", "same_values", "new", "in_place", "inference"])
def test_fire_states_finds_what_the_hook_changed(how):
    states = torch.randn(2, 9, 3, 4)
    original = states.clone()
    recomputed = []

    def recompute():
        recomputed.append(True)
        return original.clone()

    def hook(act):
        if how in ("in_place", "inference"):
            act[0, 3] += 1.0
            return act
        if how == "new":
            out = act.clone()
            out[1, 5] = 0.0
            return out
        return act.clone() if how == "same_values" else act

    if how == "inference":
        with torch.inference_mode():
            states = original.clone()
            _, changed = fire_states(hook, states, recompute)
    else:
        _, changed = fire_states(hook, states, recompute)
    want = {"read": [], "same_values": [], "new": [[1, 5]], "in_place": [[0, 3]], "inference": [[0, 3]]}[how]
    assert changed.nonzero().tolist() == want
    assert bool(recomputed) == (how in ("in_place", "inference"))


def test_gradients_match_reference():
    inp = {k: v.requires_grad_() for k, v in mamba1_inputs(2, 13).items()}
    y_ref, s_ref = selective_scan_ref(**inp)
    g_ref = torch.autograd.grad((y_ref.sin().sum() + s_ref.cos().sum()), list(inp.values()))
    y, s, _ = selective_scan_chunked(**inp, chunk_size=4)
    g = torch.autograd.grad((y.sin().sum() + s.cos().sum()), list(inp.values()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    inp = {k: v.requires_grad_() for k, v in mamba2_inputs(2, 13).items()}
    y_ref, s_ref = ssd_scan_ref(**inp)
    g_ref = torch.autograd.grad((y_ref.sin().sum() + s_ref.cos().sum()), list(inp.values()))
    y, s, _ = ssd_states_chunked(**inp, chunk_size=4)
    g = torch.autograd.grad((y.sin().sum() + s.cos().sum()), list(inp.values()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T", [1, 20, 63, 64, 96, 97, 256, 1000, 1024])
def test_states_chunk(T):
    L = states_chunk(T)
    assert 1 <= L <= 64
    if T <= 64:
        assert L == T
    elif any(T % c == 0 for c in range(32, 65)):
        assert T % L == 0 and L >= 32


@pytest.mark.parametrize("T", [97, 128])
@pytest.mark.parametrize("with_h0", [False, True])
def test_default_chunk_states_match_reference_and_own_their_memory(T, with_h0):
    """Default chunk lengths (the model's): every state written straight into one tensor that is not a view
    when no padding is needed (so a cache keeps it without a copy), and equal to the per-step loop."""
    inp = mamba1_inputs(2, T, d=5, N=3)
    h0 = torch.randn(2, 5, 3, dtype=F64) if with_h0 else None
    y_ref, s_ref = selective_scan_ref(**inp, h0=h0)
    y, states, final = selective_scan_chunked(**inp, h0=h0)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, s_ref[:, -1], rtol=1e-12, atol=1e-12)
    inp = mamba2_inputs(2, T)
    h0 = torch.randn(2, 4, 3, 5, dtype=F64) if with_h0 else None
    y_ref, s_ref = ssd_scan_ref(**inp, h0=h0)
    y, states, final = ssd_states_chunked(**inp, h0=h0)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states, s_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, s_ref[:, -1], rtol=1e-12, atol=1e-12)
    if T % states_chunk(T) == 0:
        assert states._base is None and states.is_contiguous()
