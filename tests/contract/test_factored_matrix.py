"""``interp.FactoredMatrix`` against TransformerLens 3.9's ``FactoredMatrix``: the same values, shapes and result
types (factored or plain tensor) for every member, on fresh random factors (odd and power-of-two sizes, batched
leading dims, mdim below and above ldim/rdim); the intent of TransformerLens's own unit tests
(``tests/unit/factored_matrix/``); and the errors, which name the argument and the expected shape."""

import gc
import warnings
import weakref

import pytest
import torch
from torch.overrides import TorchFunctionMode

import interp
from interp.factored_matrix import FactoredMatrix

tl = pytest.importorskip("transformer_lens")
TLFactoredMatrix = tl.FactoredMatrix

# (ldim, mdim, rdim): odd and power-of-two sizes; mdim below, between and above ldim/rdim
SIZES = [(5, 3, 7), (8, 4, 8), (4, 8, 4), (3, 7, 5), (16, 5, 9), (7, 7, 7), (6, 9, 3), (1, 2, 1)]
# (leading dims of A, leading dims of B): none, one side, both, broadcast against size-1 dims
LEADS = [((), ()), ((3,), ()), ((), (2, 3)), ((2, 1), (4,)), ((1,), (1,))]
DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=2e-5, atol=2e-5)}


def factors(lead_a, lead_b, ld, md, rd, dtype=torch.float64):
    return torch.randn(*lead_a, ld, md, dtype=dtype), torch.randn(*lead_b, md, rd, dtype=dtype)


def close(x, y, dtype=torch.float64):
    assert x.shape == y.shape, (x.shape, y.shape)
    torch.testing.assert_close(x, y, **TOL[dtype])


def same(ours, theirs, dtype=torch.float64):
    """Ours is what theirs is: a FactoredMatrix with the same factor shapes and values, or a tensor that is close."""
    if isinstance(theirs, TLFactoredMatrix):
        assert type(ours) is FactoredMatrix, type(ours)
        assert ours.shape == theirs.shape and ours.mdim == theirs.mdim
        close(ours.A, theirs.A, dtype)
        close(ours.B, theirs.B, dtype)
        close(ours.AB, theirs.AB, dtype)
    else:
        assert isinstance(theirs, torch.Tensor) and type(ours) is torch.Tensor, (type(ours), type(theirs))
        close(ours, theirs, dtype)


def both(lead_a=(), lead_b=(), ld=5, md=3, rd=7, dtype=torch.float64):
    A, B = factors(lead_a, lead_b, ld, md, rd, dtype)
    return FactoredMatrix(A, B), TLFactoredMatrix(A, B)


def columns_up_to_sign(x, y, dtype):
    """Columns of ``x`` equal those of ``y`` times +-1 (singular vectors of distinct singular values)."""
    signs = torch.sign((x * y).sum(-2, keepdim=True))
    close(x * signs, y, dtype)


cases = pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
sizes = pytest.mark.parametrize("ld,md,rd", SIZES, ids=lambda s: str(s))
leads = pytest.mark.parametrize("lead_a,lead_b", LEADS, ids=lambda s: "x".join(map(str, s)) or "-")


# ----------------------------------------------------------------------------------------- against TransformerLens
@cases
@sizes
@leads
def test_construction_and_shape_members(lead_a, lead_b, ld, md, rd, dtype):
    ours, theirs = both(lead_a, lead_b, ld, md, rd, dtype)
    assert ours.shape == theirs.shape and isinstance(ours.shape, torch.Size)
    assert (ours.ldim, ours.mdim, ours.rdim) == (theirs.ldim, theirs.mdim, theirs.rdim) == (ld, md, rd)
    assert ours.ndim == theirs.ndim and ours.has_leading_dims == theirs.has_leading_dims
    assert repr(ours) == repr(theirs)
    for x, y in zip(ours.pair, theirs.pair):
        assert torch.equal(x, y)
    same(ours, theirs, dtype)
    close(ours.T.AB, theirs.T.AB, dtype)
    same(ours.T, theirs.T, dtype)


@cases
@sizes
@leads
def test_linear_algebra(lead_a, lead_b, ld, md, rd, dtype):
    ours, theirs = both(lead_a, lead_b, ld, md, rd, dtype)
    U, S, V = ours.svd()
    tU, tS, tV = theirs.svd()
    k = min(ld, md, rd)
    lead = ours.shape[:-2]
    # TL's orientation: U [..., ldim, k], S [..., k], V [..., rdim, k] (V, not Vh, despite the name of .Vh)
    assert (U.shape, S.shape, V.shape) == (tU.shape, tS.shape, tV.shape) == ((*lead, ld, k), (*lead, k), (*lead, rd, k))
    close(S, tS, dtype)
    close(U @ torch.diag_embed(S) @ V.mT, tU @ torch.diag_embed(tS) @ tV.mT, dtype)
    close(U @ torch.diag_embed(S) @ V.mT, ours.AB, dtype)
    columns_up_to_sign(U, tU, dtype)
    columns_up_to_sign(V, tV, dtype)
    assert ours.U is U and ours.S is S and ours.V is V
    with pytest.warns(DeprecationWarning, match="returns V"):
        assert ours.Vh is V
    close(ours.norm(), theirs.norm(), dtype)
    close(ours.norm(), torch.linalg.matrix_norm(ours.AB), dtype)
    close(ours.collapse_l(), torch.diag_embed(tS) @ tV.mT * torch.sign((U * tU).sum(-2))[..., :, None], dtype)
    close(ours.U @ ours.collapse_l(), theirs.U @ theirs.collapse_l(), dtype)
    close(ours.collapse_r() @ ours.V.mT, theirs.collapse_r() @ theirs.V.mT, dtype)
    assert ours.collapse_l().shape == theirs.collapse_l().shape and ours.collapse_r().shape == theirs.collapse_r().shape
    even, teven = ours.make_even(), theirs.make_even()
    assert even.A.shape == teven.A.shape and even.B.shape == teven.B.shape
    close(even.AB, teven.AB, dtype)
    close(even.A.mT @ even.A, even.B @ even.B.mT, dtype)  # both halves carry sqrt(S): A^T A == B B^T == diag(S)
    for n in (1, 3, 20):
        close(ours.get_corner(n), theirs.get_corner(n), dtype)
    close(ours.get_corner(), theirs.get_corner(), dtype)
    if ld == rd:
        close(ours.BA, theirs.BA, dtype)
        close(ours.eigenvalues, theirs.eigenvalues, dtype)
    else:
        with pytest.raises(AssertionError):
            _ = theirs.BA
        with pytest.raises(ValueError, match="ldim == rdim"):
            _ = ours.BA
        with pytest.raises(ValueError, match="ldim == rdim"):
            _ = ours.eigenvalues


@cases
@sizes
@leads
def test_products_with_tensors(lead_a, lead_b, ld, md, rd, dtype):
    ours, theirs = both(lead_a, lead_b, ld, md, rd, dtype)
    lead = ours.shape[:-2]
    for n in (1, 2, 6, 11):
        for extra in ((), lead[-1:], (1, *lead)):  # a plain matrix, one that shares leading dims, one that adds one
            right = torch.randn(*extra, rd, n, dtype=dtype)
            left = torch.randn(*extra, n, ld, dtype=dtype)
            same(ours @ right, theirs @ right, dtype)
            same(left @ ours, left @ theirs, dtype)
            same(ours.__rmatmul__(left), theirs.__rmatmul__(left), dtype)
    v = torch.randn(rd, dtype=dtype)
    same(ours @ v, theirs @ v, dtype)
    w = torch.randn(ld, dtype=dtype)
    same(w @ ours, w @ theirs, dtype)
    assert (ours @ v).shape == (*lead, ld) and (w @ ours).shape == (*lead, rd)


@cases
@sizes
@pytest.mark.parametrize("lead_a,lead_b", [((), ()), ((2,), ()), ((), (3, 1)), ((3, 2), (2,))])
def test_products_with_factored_matrices(lead_a, lead_b, ld, md, rd, dtype):
    ours, theirs = both(lead_a, (), ld, md, rd, dtype)
    for m2, r2 in ((2, 3), (9, 4), (rd, rd), (1, 8)):
        A2, B2 = factors(lead_b, lead_b, rd, m2, r2, dtype)
        same(ours @ FactoredMatrix(A2, B2), theirs @ TLFactoredMatrix(A2, B2), dtype)
        same(FactoredMatrix(A2, B2).T @ ours.T, TLFactoredMatrix(A2, B2).T @ theirs.T, dtype)
        # TL's __rmatmul__ branch for a factored left operand (Python itself never takes it)
        A3, B3 = factors(lead_b, lead_b, r2, m2, ld, dtype)
        same(ours.__rmatmul__(FactoredMatrix(A3, B3)), theirs.__rmatmul__(TLFactoredMatrix(A3, B3)), dtype)


@cases
@pytest.mark.parametrize("scalar", [3, -0.5, "tensor1", "tensor0"])
@pytest.mark.parametrize("lead", [(), (4,)])
def test_scalar_products(scalar, lead, dtype):
    ours, theirs = both(lead, lead, 6, 3, 5, dtype)
    if isinstance(scalar, str):
        scalar = torch.randn(1 if scalar == "tensor1" else (), dtype=dtype)
    for x, y in ((ours * scalar, theirs * scalar), (scalar * ours, scalar * theirs)):
        same(x, y, dtype)
        close(x.A, ours.A * scalar, dtype)  # the scale goes onto A, as in TL
        assert torch.equal(x.B, ours.B)


def test_a_2d_tensor_scalar_keeps_tl_broadcasting():
    ours, theirs = both((), (), 4, 2, 3)
    s = torch.tensor([[[2.0]]], dtype=torch.float64)  # one element, three dims: A * s gains a leading dim in TL
    same(ours * s, theirs * s)


INDICES = [0, -1, (0, 1), (slice(None), 1), (1, slice(0, 2)), (0, 1, 2), (0, 1, -1), (0, -1, slice(1, 3)),
           (0, 1, 2, 3), (0, 1, -1, -1), (1, 2, 0, -2), (slice(None), slice(None), [0, 2], [1]),
           (slice(None), slice(None), [0, 2], 0), (slice(None), slice(None), torch.tensor([0, 1]), torch.tensor([0])),
           (None,), (0, None, 1), (slice(None), None, 0, 2), (slice(1, None), slice(None, None, 2), slice(1, 4)),
           ()]


@cases
@pytest.mark.parametrize("ld,md,rd", [(5, 3, 7), (4, 8, 6)])
@pytest.mark.parametrize("idx", INDICES, ids=repr)
def test_getitem(idx, ld, md, rd, dtype):
    ours, theirs = both((2, 3), (3,), ld, md, rd, dtype)
    same(ours[idx], theirs[idx], dtype)


@pytest.mark.parametrize("idx,dense", [
    ((Ellipsis, 1, 2), (Ellipsis, slice(1, 2), slice(2, 3))),
    ((0, Ellipsis), (0,)),
    ((0, Ellipsis, -1), (0, slice(None), slice(None), slice(-1, None))),
    ((Ellipsis, slice(1, 3), slice(None)), (Ellipsis, slice(1, 3), slice(None))),
    ((1, 2, Ellipsis, 4, 0), (1, 2, slice(4, 5), slice(0, 1))),
])
def test_getitem_with_an_ellipsis_indexes_like_the_product(idx, dense):
    # TL counts `...` as one index (so fm[..., 1, 2] indexes mdim): a deliberate difference; AB's indexing is the rule
    ours = FactoredMatrix(*factors((2, 3), (), 5, 3, 7))
    close(ours[idx].AB, ours.AB[dense])


@cases
@pytest.mark.parametrize("k", [0, 1, -3, -4])
def test_unsqueeze(k, dtype):
    ours, theirs = both((2,), (), 5, 3, 7, dtype)
    same(ours.unsqueeze(k), theirs.unsqueeze(k), dtype)
    assert ours.unsqueeze(k).shape == theirs.AB.unsqueeze(k).shape


def test_norm_gradients_match():
    A, B = factors((2,), (), 6, 3, 5)
    ours_A, theirs_A = A.clone().requires_grad_(), A.clone().requires_grad_()
    FactoredMatrix(ours_A, B).norm().sum().backward()
    TLFactoredMatrix(theirs_A, B).norm().sum().backward()
    close(ours_A.grad, theirs_A.grad)


# --------------------------------------------------------------------------- the intent of TL's own unit tests
def test_constructor_keeps_factors():
    A, B = torch.randn(5, 3), torch.randn(3, 7)
    fm = FactoredMatrix(A, B)
    assert torch.equal(fm.A, A) and torch.equal(fm.B, B)
    assert (fm.ldim, fm.mdim, fm.rdim) == (5, 3, 7) and not fm.has_leading_dims and fm.shape == (5, 7)


@pytest.mark.parametrize("lead_a,lead_b", [((), (2, 4)), ((4,), (2, 4))])
def test_constructor_broadcasts_leading_dims(lead_a, lead_b):
    A, B = torch.randn(*lead_a, 5, 3), torch.randn(*lead_b, 3, 7)
    fm = FactoredMatrix(A, B)
    assert fm.A.shape == (2, 4, 5, 3) and torch.equal(fm.B, B)
    assert torch.equal(fm.A[1, 2], A if A.ndim == 2 else A[2])
    assert (fm.ldim, fm.mdim, fm.rdim) == (5, 3, 7) and fm.has_leading_dims and fm.shape == (2, 4, 5, 7)


# (a factors, b factors): the cases of TL's test_multiply_by_factored_matrix.py
FM_PAIRS = [((3, 3, 3), (3, 3, 3)), ((1, 1, 1), (1, 1, 1)), ((1, 2, 1), (1, 6, 1)), ((1, 1, 1), (1, 2, 5)),
            ((5, 2, 1), (1, 1, 1)), ((1, 2, 3), (3, 2, 4)), ((3, 2, 1), (1, 3, 2)), ((1, 2, 5), (5, 3, 1)),
            ((3, 4, 5), (5, 6, 7)), ((8, 6, 5), (5, 7, 3)), ((3, 4, 4), (4, 5, 5)), ((7, 6, 3), (3, 7, 8))]


@pytest.mark.parametrize("a,b", FM_PAIRS, ids=str)
@pytest.mark.parametrize("lead_a,lead_b", [((), ()), ((2,), ()), ((), (2,)), ((2, 9), (9,))])
def test_factored_product_is_the_product_with_the_smallest_inner_dim(a, b, lead_a, lead_b):
    fa = FactoredMatrix(*factors(lead_a, lead_a, *a))
    fb = FactoredMatrix(*factors(lead_b, lead_b, *b))
    product = fa @ fb
    close(product.AB, fa.AB @ fb.AB)
    assert (product.ldim, product.mdim, product.rdim) == (fa.ldim, min(fa.mdim, fa.rdim, fb.ldim, fb.mdim), fb.rdim)
    lead = torch.broadcast_shapes(lead_a, lead_b)
    assert product.A.shape[:-2] == product.B.shape[:-2] == lead


@pytest.mark.parametrize("a,matrix", [((2, 3, 4), (4, 5)), ((2, 6, 4), (4, 5)), ((2, 4, 4), (4, 5))],
                         ids=["rdim>mdim", "rdim<mdim", "rdim==mdim"])
@pytest.mark.parametrize("lead_fm,lead_x", [((), ()), ((2,), ()), ((), (2, 12)), ((2,), (2,))])
def test_matrix_on_the_right(a, matrix, lead_fm, lead_x):
    fm = FactoredMatrix(*factors(lead_fm, lead_fm, *a))
    x = torch.randn(*lead_x, *matrix, dtype=torch.float64)
    product = fm @ x
    close(product.AB, fm.AB @ x)
    assert (product.ldim, product.mdim, product.rdim) == (fm.ldim, min(fm.mdim, matrix[0]), matrix[1])
    assert product.A.shape[:-2] == product.B.shape[:-2] == torch.broadcast_shapes(lead_fm, lead_x)


@pytest.mark.parametrize("a,matrix", [((6, 3, 4), (6, 6)), ((2, 6, 4), (2, 2)), ((2, 2, 4), (3, 2))],
                         ids=["ldim>mdim", "ldim<mdim", "ldim==mdim"])
@pytest.mark.parametrize("lead_fm,lead_x", [((), ()), ((2,), ()), ((), (2, 12)), ((2,), (2,))])
def test_matrix_on_the_left(a, matrix, lead_fm, lead_x):
    fm = FactoredMatrix(*factors(lead_fm, lead_fm, *a))
    x = torch.randn(*lead_x, *matrix, dtype=torch.float64)
    product = x @ fm
    close(product.AB, x @ fm.AB)
    assert (product.ldim, product.mdim, product.rdim) == (matrix[0], min(fm.mdim, matrix[1]), fm.rdim)
    assert product.A.shape[:-2] == product.B.shape[:-2] == torch.broadcast_shapes(lead_fm, lead_x)


@pytest.mark.parametrize("lead", [(), (6,)])
def test_vectors_give_tensors(lead):
    fm = FactoredMatrix(*factors(lead, lead, 2, 3, 4))
    v, w = torch.randn(4, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    close(fm @ v, fm.AB @ v)
    close(w @ fm, w @ fm.AB)


class Wrapped:
    """A tensor-like object that is not a torch.Tensor (a duck-typed array wrapper)."""

    def __init__(self, tensor):
        self.t = tensor

    ndim = property(lambda self: self.t.ndim)
    shape = property(lambda self: self.t.shape)

    def size(self, dim=None):
        return self.t.size() if dim is None else self.t.size(dim)

    def unsqueeze(self, dim):
        return Wrapped(self.t.unsqueeze(dim))

    def squeeze(self, dim):
        return Wrapped(self.t.squeeze(dim))

    def broadcast_to(self, shape):
        return Wrapped(self.t.broadcast_to(shape))

    def __matmul__(self, other):
        if isinstance(other, FactoredMatrix):
            return NotImplemented
        return Wrapped(self.t @ (other.t if isinstance(other, Wrapped) else other))

    def __rmatmul__(self, other):
        return Wrapped(other @ self.t)


def test_tensor_like_operands():
    a, b = torch.randn(2, 3), torch.randn(3, 4)
    fm = FactoredMatrix(a, b)
    right, left, vector = torch.randn(4, 5), torch.randn(5, 2), torch.randn(4)
    product = fm @ Wrapped(right)
    assert isinstance(product, FactoredMatrix) and isinstance(product.AB, Wrapped)
    close(product.AB.t, a @ b @ right, torch.float32)
    product = Wrapped(left) @ fm
    assert isinstance(product, FactoredMatrix) and isinstance(product.AB, Wrapped)
    close(product.AB.t, left @ a @ b, torch.float32)
    out = fm @ Wrapped(vector)
    assert isinstance(out, Wrapped)
    close(out.t, a @ b @ vector, torch.float32)
    wrapped = FactoredMatrix(Wrapped(a), b)
    assert wrapped.shape == (2, 4) and isinstance(wrapped.AB, Wrapped)


@pytest.mark.parametrize("ld,md,rd", [(3, 2, 3), (4, 5, 4), (6, 7, 6), (6, 7, 3), (8, 9, 8)])
@pytest.mark.parametrize("lead", [(), (1,), (3,)])
def test_svd_is_orthonormal_and_reconstructs(ld, md, rd, lead):
    fm = FactoredMatrix(*factors(lead, lead, ld, md, rd))
    U, S, V = fm.svd()
    close(U @ torch.diag_embed(S) @ V.mT, fm.AB)
    eye = torch.eye(U.shape[-1], dtype=torch.float64).expand(*lead, -1, -1)
    close(U.mT @ U, eye)
    close(V.mT @ V, eye)
    assert (S[..., :-1] >= S[..., 1:]).all() and (S >= 0).all()
    close(fm.U @ fm.collapse_l(), fm.AB)
    close(fm.collapse_r() @ fm.V.mT, fm.AB)


def test_svd_is_cached_per_instance_and_freed_with_it():
    fm = FactoredMatrix(torch.randn(4, 3), torch.randn(3, 4))
    assert all(x is y for x, y in zip(fm.svd(), fm.svd()))
    ref = weakref.ref(fm)
    del fm
    gc.collect()
    assert ref() is None


def test_vh_is_v_with_a_deprecation_warning():
    fm = FactoredMatrix(torch.randn(6, 7), torch.randn(7, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vh = fm.Vh
    assert [w.category for w in caught] == [DeprecationWarning]
    assert torch.equal(vh, fm.V) and vh.shape == (3, 3)


def test_svd_never_forms_the_product():
    """SVD, norm, make_even and the collapses work on the thin factors: no intermediate has ldim x rdim entries."""
    ld, md, rd = 64, 3, 48
    fm = FactoredMatrix(*factors((2,), (), ld, md, rd))
    largest = []

    class Sizes(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for x in out if isinstance(out, tuple) else (out,):
                if isinstance(x, torch.Tensor):
                    largest.append(x.numel())
            return out

    with Sizes():
        fm.norm(), fm.make_even(), fm.collapse_l(), fm.collapse_r(), fm.get_corner(3)
        fm @ torch.randn(rd, 5, dtype=torch.float64)
    assert largest and max(largest) <= 2 * max(ld, rd) * md < ld * rd
    with Sizes():
        _ = fm.AB
    assert max(largest) == 2 * ld * rd  # the probe sees a formed product


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_factors(dtype):
    for ld, md in ((3, 2), (10, 4)):
        A, B = torch.randn(ld, md).to(dtype), torch.randn(md, ld).to(dtype)
        ours, theirs = FactoredMatrix(A, B), TLFactoredMatrix(A, B)
        assert ours.eigenvalues.dtype == theirs.eigenvalues.dtype == torch.complex64
        torch.testing.assert_close(ours.eigenvalues, theirs.eigenvalues)
        # TL 3.9 has no 16-bit SVD (torch has none on CPU); ours runs it in float32 and returns the factors' dtype
        U, S, V = ours.svd()
        assert U.dtype == S.dtype == V.dtype == dtype
        torch.testing.assert_close((U * S[None, :]) @ V.T, ours.AB, rtol=0.05, atol=0.05)


def test_iteration_stops_at_the_end():
    # every integer row index is bounds-checked (TL returns an empty matrix past the end, so iterating never stops)
    fm = FactoredMatrix(torch.randn(3, 2), torch.randn(2, 4))
    assert [row.shape for row in fm] == [(1, 4)] * 3
    assert len(list(FactoredMatrix(torch.randn(5, 3, 2), torch.randn(2, 4)))) == 5


def test_exported_from_interp():
    assert interp.FactoredMatrix is FactoredMatrix
    assert "FactoredMatrix" in interp.__all__
