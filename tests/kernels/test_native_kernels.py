"""The fused C kernels (``interp.kernels.native``) against plain references: the encoder fused with the top-k
selection (exactly, on integer-valued inputs whose products are exact, so ties are real ties), the latent-major
backward products, before_step's projection, the dispatch, and a failed build."""

import platform

import pytest
import torch

from interp._native_build import compiler
from interp.kernels import (
    ENV_VAR,
    BatchTopKSelect,
    TopKSelect,
    backend_name,
    native,
    reference,
    sparse_decode_autograd,
    sparse_encode,
)
from interp.kernels.selectors import topk_lowest_index

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler: the native kernels cannot be built here")

SIZES = [(5, 7, 13, 3), (16, 8, 64, 4), (33, 24, 97, 5), (64, 32, 128, 8), (70, 9, 300, 17)]  # B, D, L, K


def test_builds_where_a_compiler_exists():
    """With a compiler present the build must work (a silent fallback to the torch ops would hide a bug), and this
    torch links a BLAS the encoder can call."""
    assert native.available() and native.encoder_available()


def _int_inputs(B, D, L, gen, lo=-2, hi=3):
    """Small integers: every product and sum is exact in float32, whatever order the BLAS adds in, and equal
    pre-activations are frequent."""
    x = torch.randint(lo, hi, (B, D), generator=gen).float()
    W = torch.randint(lo, hi, (D, L), generator=gen).float()
    b = torch.randint(lo, hi, (L,), generator=gen).float()
    return x, W, b


def _lowest_index_topk(pre, k):
    """The k largest per row, ties to the lower index: a stable descending sort (NaN first, as torch.topk)."""
    key = torch.where(pre.isnan(), torch.inf, pre)
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices[:, :k]
    return pre.gather(1, order), order


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiles of 16 rows and blocks of 32 latents, so the small sizes below cross several of each (and end in
    partial ones)."""
    monkeypatch.setattr(native, "ROW_TILE", 16)
    monkeypatch.setattr(native, "COL_BLOCK", 32)


@pytest.mark.parametrize("B,D,L,K", SIZES)
@pytest.mark.parametrize("blas_mode", ["packed", "sgemm"])
@pytest.mark.parametrize("layout", ["row-major", "latent-major"])
def test_topk_encode_exact_with_ties(small_blocks, B, D, L, K, blas_mode, layout):
    gen = torch.Generator().manual_seed(B + L + K)
    x, W, b = _int_inputs(B, D, L, gen)
    if layout == "latent-major":
        W = W.t().contiguous().t()
    dead = (torch.rand(L, generator=gen) < 0.4).nonzero()[:, 0]
    k_aux = min(6, dead.numel())
    vals, idx, aux_vals, aux_idx = native.topk_encode(x, W, b, K, dead, k_aux, blas_mode=blas_mode)
    pre = torch.addmm(b, x, W)
    want_vals, want_idx = _lowest_index_topk(pre, K)
    assert torch.equal(vals, want_vals) and torch.equal(idx, want_idx)
    assert (pre == pre.gather(1, idx[:, -1:])).sum() > B  # the inputs do produce ties at the boundary
    if k_aux:
        v, pos = _lowest_index_topk(pre[:, dead], k_aux)
        assert torch.equal(aux_vals, v) and torch.equal(aux_idx, dead[pos])


@pytest.mark.parametrize("B,D,L,K", SIZES)
@pytest.mark.parametrize("blas_mode", ["packed", "sgemm"])
def test_batch_topk_encode_exact_with_ties(small_blocks, B, D, L, K, blas_mode):
    """BatchTopK's selection over the whole batch: the K * B largest entries, ties to the lower flat index, returned
    in increasing flat index; the same with one and two threads (the per-thread pools are merged)."""
    gen = torch.Generator().manual_seed(B * 7 + L)
    x, W, b = _int_inputs(B, D, L, gen)
    flat = torch.addmm(b, x, W).flatten()
    want = torch.sort(flat, descending=True, stable=True).indices[:K * B].sort().values
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            vals, idx, _, _ = native.batch_topk_encode(x, W, b, K * B, blas_mode=blas_mode)
            assert torch.equal(idx, want) and torch.equal(vals, flat[want])
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="n must be"):
        native.batch_topk_encode(x, W, b, B * L + 1)


def test_topk_encode_random_floats(small_blocks):
    """Random float32 data at odd and power-of-two sizes: the selected values are the pre-activations (to the
    float32 rounding of a BLAS block) and no unselected entry is larger than a selected one (float64 check)."""
    for B, D, L, K in SIZES + [(256, 64, 1024, 32)]:
        gen = torch.Generator().manual_seed(D * L)
        x, W, b = torch.randn(B, D, generator=gen), torch.randn(D, L, generator=gen), torch.randn(L, generator=gen)
        vals, idx, _, _ = native.topk_encode(x, W, b, K)
        exact = torch.addmm(b.double(), x.double(), W.double())
        torch.testing.assert_close(vals.double(), exact.gather(1, idx), rtol=1e-5, atol=1e-5)
        assert torch.all(vals[:, :-1] >= vals[:, 1:])  # best first
        rest = exact.scatter(1, idx, -torch.inf).max(1).values
        assert torch.all(exact.gather(1, idx).min(1).values >= rest - 1e-4)


def test_topk_encode_nan_and_threads(small_blocks):
    gen = torch.Generator().manual_seed(3)
    x, W, b = _int_inputs(40, 6, 77, gen)
    b[[5, 60]] = torch.nan
    vals, idx, _, _ = native.topk_encode(x, W, b, 4)
    assert torch.equal(idx[:, :2], torch.tensor([5, 60]).expand(40, 2))  # NaN ranks first, lower index first
    assert torch.equal(idx[:, 2:], _lowest_index_topk(torch.addmm(b, x, W), 4)[1][:, 2:])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        again = native.topk_encode(x, W, b, 4)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(again[1], idx) and torch.equal(again[0].nan_to_num(), vals.nan_to_num())


def test_topk_encode_bad_input():
    x, W, b = torch.randn(4, 3), torch.randn(3, 10), torch.randn(10)
    with pytest.raises(ValueError, match="k must be"):
        native.topk_encode(x, W, b, 11)
    with pytest.raises(ValueError, match="float32"):
        native.topk_encode(x.double(), W, b, 2)
    with pytest.raises(ValueError, match="shapes"):
        native.topk_encode(x, W.t(), b, 2)
    with pytest.raises(ValueError, match="k_aux"):
        native.topk_encode(x, W, b, 2, torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="dead must hold sorted"):
        native.topk_encode(x, W, b, 2, torch.tensor([4, 2]), 1)
    with pytest.raises(ValueError, match="dead must hold sorted"):
        native.topk_encode(x, W, b, 2, torch.tensor([2, 10]), 1)


def _entries(B, L, K, gen, dup):
    idx = torch.stack([torch.randperm(L, generator=gen)[:K] for _ in range(B)])
    if dup:  # a latent twice in a row (main and aux parts can overlap) must add up
        idx[:, -1] = idx[:, 0]
    return torch.randn(B, K, generator=gen), idx


@pytest.mark.parametrize("B,D,L,K", SIZES)
@pytest.mark.parametrize("dup", [False, True])
def test_backward_products_match_reference(B, D, L, K, dup):
    gen = torch.Generator().manual_seed(B * 31 + L + dup)
    vals, idx = _entries(B, L, K, gen, dup)
    dy, W = torch.randn(B, D, generator=gen), torch.randn(L, D, generator=gen)
    tol = {"rtol": 1e-5, "atol": 1e-5}
    v64, dy64, W64 = vals.double(), dy.double(), W.double()
    want_outer = reference.scatter_outer(v64, idx, dy64, L)
    want_dot = reference.gather_dot(dy64, idx, W64)
    torch.testing.assert_close(native.scatter_outer(vals, idx, dy, L).double(), want_outer, **tol)
    torch.testing.assert_close(native.gather_dot(dy, idx, W).double(), want_dot, **tol)
    dvals, dW = native.decode_backward(vals, idx, dy, W)
    torch.testing.assert_close(dvals.double(), want_dot, **tol)
    torch.testing.assert_close(dW.double(), want_outer, **tol)
    want_db = torch.zeros(L, dtype=torch.float64).index_add_(0, idx.flatten(), v64.flatten())
    for W_enc in (torch.randn(D, L), torch.randn(L, D).t()):  # row-major and latent-major encoders
        dW_enc, db = native.encode_backward(vals, idx, dy, W_enc)
        assert dW_enc.stride() == W_enc.stride()
        torch.testing.assert_close(dW_enc.double(), want_outer.t(), **tol)
        torch.testing.assert_close(db.double(), want_db, **tol)


def test_backward_bad_index():
    vals, idx, dy = torch.randn(3, 2), torch.tensor([[0, 1], [2, 9], [1, 1]]), torch.randn(3, 4)
    with pytest.raises(IndexError, match="outside"):
        native.scatter_outer(vals, idx, dy, 9)
    with pytest.raises(IndexError, match="outside"):
        native.gather_dot(dy, idx, torch.randn(9, 4))


def test_project_out_parallel():
    gen = torch.Generator().manual_seed(0)
    g, w = torch.randn(37, 19, generator=gen), torch.randn(37, 19, generator=gen)
    w[3] = 0  # a zero row: nothing to project out (tiny clamp, no NaN)
    want = g.double() - ((g.double() * w.double()).sum(-1) / w.double().norm(dim=-1).square().clamp_min(1e-300)
                         )[:, None] * w.double()
    assert native.project_out_parallel_(g, w)
    torch.testing.assert_close(g.double(), want, rtol=1e-5, atol=1e-5)
    assert not native.project_out_parallel_(g.double(), w.double())  # not float32: the caller's torch path


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dead", [None, 0.5])
@pytest.mark.parametrize("selector", [TopKSelect, BatchTopKSelect])
def test_sparse_step_native_equals_torch_backend(monkeypatch, small_blocks, dead, selector, ties):
    """The fused encoder + native backward against the torch backend (dense addmm + topk, torch ops) on integer
    inputs: either all pre-activations distinct, or small integers with many ties at the cut, which both paths
    resolve towards the lower latent (flat) index; the same latents, values, loss and every gradient."""
    B, D, L, K = 37, 8, 200, 5
    gen = torch.Generator().manual_seed(11 + ties)
    if ties:
        x, W_enc, b_enc = _int_inputs(B, D, L, gen)
        b_dec = torch.zeros(D)
    else:
        # pre[b, l] = (integer, |.| <= 84) + b / 64 + 256 * perm(l): exact in float32 (< 2^22 in 1/64 steps) and
        # all distinct, so the selection is unique in both paths
        x = torch.randint(-3, 4, (B, D), generator=gen).float()
        x[:, 0] = torch.arange(B) / 64
        W_enc = torch.randint(-3, 4, (D, L), generator=gen).float()
        W_enc[0] = 1
        b_enc = torch.randperm(L, generator=gen).float() * 256
        b_dec = torch.randint(-1, 2, (D,), generator=gen).float()
        b_dec[0] = 0
    W_dec = torch.randn(L, D, generator=gen)
    mask = None if dead is None else torch.rand(L, generator=gen) < dead
    if ties:
        pre = torch.addmm(b_enc, x, W_enc)
        kth = pre.topk(K).values[:, -1:]
        assert ((pre == kth).sum(1) > 1).any()  # equal values straddle the cut in some rows
    runs = {}
    for backend in ("native", "torch"):
        monkeypatch.setenv(ENV_VAR, backend)
        leaves = [t.clone().requires_grad_(True) for t in (x, W_enc, b_enc, b_dec, W_dec)]
        xl, we, be, bd, wd = leaves
        select = selector(K, mask, 0 if mask is None else 7)
        vals, idx = sparse_encode(xl, we, be, bd, select)
        out = sparse_decode_autograd(vals, idx, wd) + bd
        loss = (out - 1.0).pow(2).sum()
        by_value = vals.detach().argsort(dim=1, stable=True)  # rows ordered by (latent, value): a canonical order
        order = by_value.gather(1, idx.gather(1, by_value).argsort(dim=1, stable=True))
        runs[backend] = (vals.gather(1, order), idx.gather(1, order), loss, torch.autograd.grad(loss, leaves))
    (v1, i1, l1, g1), (v2, i2, l2, g2) = runs["native"], runs["torch"]
    assert torch.equal(i1, i2) and torch.equal(v1, v2)
    torch.testing.assert_close(l1, l2)
    for name, a, b in zip(["x", "W_enc", "b_enc", "b_dec", "W_dec"], g1, g2, strict=True):
        assert a.stride() == b.stride() or name == "W_enc"
        tol = {"rtol": 1e-4, "atol": 1e-3} if ties else {"rtol": 1e-5, "atol": 1e-4}  # larger sums with ties
        torch.testing.assert_close(a, b, **tol, msg=lambda m, n=name: f"grad {n}: {m}")


def test_topk_lowest_index_ties_and_nan():
    """The dense selection's tie rule (the torch backend's; the fused kernels follow the same): among equal values
    the lower index, NaN above everything, rows and flat vectors, against a stable sort."""
    gen = torch.Generator().manual_seed(5)
    for trial in range(60):
        B, L = (int(v) for v in torch.randint(1, 120, (2,), generator=gen))
        k = int(torch.randint(1, L + 1, (1,), generator=gen))
        pre = torch.randint(-2, 3, (B, L), generator=gen).float()
        if trial % 3 == 0:
            pre[torch.rand(B, L, generator=gen) < 0.05] = torch.nan
        for t in (pre, pre.flatten()):
            vals, idx = topk_lowest_index(t, k)
            want = _lowest_index_topk(t.reshape(-1, t.shape[-1]), k)[1].reshape(*t.shape[:-1], k)
            assert torch.equal(idx.sort(-1).values, want.sort(-1).values)
            assert torch.equal(vals.nan_to_num(), t.gather(-1, idx).nan_to_num())


def test_training_step_gradient_layout():
    """A TopK SAE's W_enc is row-major and its gradient comes out row-major, so autograd keeps it without a copy
    and fused Adam takes it directly."""
    from interp.saes import TopKSAE

    sae = TopKSAE(d_in=12, d_sae=80, k=4)
    assert sae.W_enc.is_contiguous()
    sae.training_forward(torch.randn(30, 12)).loss.backward()
    assert sae.W_enc.grad.is_contiguous() and sae.W_dec.grad.is_contiguous()


def test_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert backend_name(torch.zeros(1)) == "native"
    assert backend_name(torch.zeros(1, dtype=torch.float64)) == "torch"
    monkeypatch.setenv(ENV_VAR, "torch")
    assert backend_name(torch.zeros(1)) == "torch"
    sel = TopKSelect(2)
    assert not sel.fuses(torch.zeros(3, 4), torch.zeros(4, 5), torch.zeros(5))
    monkeypatch.setenv(ENV_VAR, "native")
    assert sel.fuses(torch.zeros(3, 4), torch.zeros(4, 5), torch.zeros(5))
    assert not sel.fuses(torch.zeros(3, 4).double(), torch.zeros(4, 5).double(), torch.zeros(5).double())


def test_failed_build_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(native._native, "lib", None)
    monkeypatch.setattr(native._native, "failed", None)
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(UserWarning, match="native SAE kernels unavailable"):
        assert backend_name(torch.zeros(1)) == "torch"
    assert backend_name(torch.zeros(1)) == "torch"  # no second warning (pytest would fail on an unexpected one)
    from interp.saes import TopKSAE

    TopKSAE(d_in=6, d_sae=20, k=3).training_forward(torch.randn(4, 6)).loss.backward()  # the torch ops serve
    monkeypatch.setenv(ENV_VAR, "native")
    with pytest.raises(RuntimeError, match="native SAE kernels are not available"):
        backend_name(torch.zeros(1))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 code paths")
@pytest.mark.parametrize("target", [("-march=x86-64-v3",), ("-march=x86-64", "-mno-avx")])
def test_other_instruction_sets_match_reference(target, tmp_path, monkeypatch, small_blocks):
    """The AVX2 and the plain-C scans of the selection (this machine may run AVX-512 by default)."""
    try:
        lib = native._build(target, tmp_path)
    except RuntimeError as err:
        pytest.skip(f"compiler refused {target}: {err}")
    monkeypatch.setattr(native._native, "lib", lib)
    for B, D, L, K in SIZES:
        x, W, b = _int_inputs(B, D, L, torch.Generator().manual_seed(L))
        vals, idx, _, _ = native.topk_encode(x, W, b, K)
        want_vals, want_idx = _lowest_index_topk(torch.addmm(b, x, W), K)
        assert torch.equal(vals, want_vals) and torch.equal(idx, want_idx)
