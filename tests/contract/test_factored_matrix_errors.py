"""Errors of ``interp.FactoredMatrix``: each names the argument, what was expected and what was given (where
TransformerLens 3.9 raises a bare ``AssertionError`` or torch's ``RuntimeError``). The cases include those of
TransformerLens's own dimension-mismatch tests (``tests/unit/factored_matrix/``)."""

import re

import pytest
import torch

from interp.factored_matrix import FactoredMatrix


def factors(lead_a, lead_b, ld, md, rd, dtype=torch.float64):
    return torch.randn(*lead_a, ld, md, dtype=dtype), torch.randn(*lead_b, md, rd, dtype=dtype)


def test_construction_errors():
    with pytest.raises(TypeError, match=r"A must be a torch.Tensor .* \[\.\.\., ldim, mdim\]; got list"):
        FactoredMatrix([[1.0]], torch.randn(1, 2))
    with pytest.raises(TypeError, match=r"B must be a torch.Tensor .* \[\.\.\., mdim, rdim\]; got ndarray"):
        FactoredMatrix(torch.randn(2, 1), torch.randn(1, 2).numpy())
    with pytest.raises(ValueError, match=r"A must have shape \[\.\.\., ldim, mdim\] \(at least 2 dims\); got shape "
                                         r"\(5,\)"):
        FactoredMatrix(torch.randn(5), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"inner dimension mdim: A has shape \(2, 3, 4\) \(mdim 4\), B has shape "
                                         r"\(2, 3, 5\) \(mdim 3\)"):
        FactoredMatrix(torch.ones(2, 3, 4), torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match=r"mismatch: the leading dims of A and B do not broadcast: \(9,\) vs "
                                         r"\(2, 4\)"):
        FactoredMatrix(torch.ones(9, 5, 3), torch.ones(2, 4, 3, 7))


@pytest.mark.parametrize("left,right,message", [
    ((3, 4, 6, (2,)), (6, 7, 2, (4,)), r"leading dims of the FactoredMatrix and other do not broadcast: \(2,\) vs "
                                       r"\(4,\)"),
    ((3, 4, 6, (2, 9)), (6, 7, 2, (2,)), r"do not broadcast: \(2, 9\) vs \(2,\)"),
    ((3, 4, 6, ()), (5, 6, 7, ()), r"other must have shape \[\.\.\., rdim, n\] with rdim = 6 .* shape \(3, 6\); "
                                   r"got shape \(5, 7\)"),
    ((3, 4, 6, ()), (5, 6, 7, (2,)), r"rdim = 6 .* got shape \(2, 5, 7\)"),
])
def test_factored_product_errors(left, right, message):
    ld, md, rd, lead = left
    a = FactoredMatrix(*factors(lead, lead, ld, md, rd))
    ld, md, rd, lead = right
    b = FactoredMatrix(*factors(lead, lead, ld, md, rd))
    with pytest.raises(ValueError, match=message):
        a @ b


@pytest.mark.parametrize("fm_shape,x_shape,message", [
    ((2, 3, 4, 6), (4, 6, 3), r"leading dims of the FactoredMatrix and other do not broadcast: \(2,\) vs \(4,\)"),
    ((2, 9, 3, 4, 6), (2, 6, 3), r"do not broadcast: \(2, 9\) vs \(2,\)"),
    ((3, 4, 6), (5, 6), r"other must have shape \[\.\.\., rdim, n\] with rdim = 6 .* got shape \(5, 6\)"),
    ((3, 4, 6), (2, 5, 6), r"with rdim = 6 .* got shape \(2, 5, 6\)"),
    ((3, 4, 6), (5,), r"other must have shape \[rdim\] with rdim = 6 .* got shape \(5,\)"),
    ((3, 4, 6), (), r"other must have shape \[\.\.\., rdim, n\] or \[rdim\]; got a 0-d tensor \(use \* to scale"),
])
def test_matrix_product_errors(fm_shape, x_shape, message):
    *lead, ld, md, rd = fm_shape
    fm = FactoredMatrix(*factors(tuple(lead), tuple(lead), ld, md, rd))
    with pytest.raises(ValueError, match=message):
        fm @ torch.randn(x_shape, dtype=torch.float64)


@pytest.mark.parametrize("fm_shape,x_shape,message", [
    ((2, 6, 4, 3), (4, 3, 6), r"leading dims of the FactoredMatrix and other do not broadcast: \(2,\) vs \(4,\)"),
    ((2, 9, 6, 4, 3), (2, 3, 6), r"do not broadcast: \(2, 9\) vs \(2,\)"),
    ((6, 4, 3), (6, 5), r"other must have shape \[\.\.\., n, ldim\] with ldim = 6 .* shape \(6, 3\); got shape "
                        r"\(6, 5\)"),
    ((6, 4, 3), (2, 6, 5), r"with ldim = 6 .* got shape \(2, 6, 5\)"),
    ((6, 4, 3), (5,), r"other must have shape \[ldim\] with ldim = 6 .* got shape \(5,\)"),
])
def test_matrix_product_errors_on_the_left(fm_shape, x_shape, message):
    *lead, ld, md, rd = fm_shape
    fm = FactoredMatrix(*factors(tuple(lead), tuple(lead), ld, md, rd))
    with pytest.raises(ValueError, match=message):
        torch.randn(x_shape, dtype=torch.float64) @ fm


def test_non_tensor_operands():
    fm = FactoredMatrix(torch.randn(3, 4), torch.randn(4, 6))
    with pytest.raises(TypeError, match=r"other \(in FactoredMatrix @ other\) must be a torch.Tensor .*; got list"):
        fm @ [1.0]
    with pytest.raises(TypeError, match=r"other \(in other @ FactoredMatrix\) must be a torch.Tensor"):
        fm.__rmatmul__("x")


@pytest.mark.parametrize("scalar", [torch.rand(2, 2), torch.rand(2)], ids=["2d", "1d"])
@pytest.mark.parametrize("lead", [(), (6,)])
def test_non_scalar_tensor_products_are_refused(scalar, lead):
    fm = FactoredMatrix(*factors(lead, lead, 2, 3, 4, torch.float32))
    message = rf"scalar must be a number or a one-element tensor .* shape {re.escape(str(tuple(scalar.shape)))} \(use @"
    with pytest.raises(ValueError, match=message):
        fm * scalar
    with pytest.raises(ValueError, match=message):
        scalar * fm
    with pytest.raises(TypeError):
        fm * "2"
    with pytest.raises(TypeError):
        fm * fm


def test_index_errors():
    fm = FactoredMatrix(torch.rand(2, 2, 2, 2, 2), torch.rand(2, 2, 2, 2, 2))
    with pytest.raises(IndexError):
        fm[0, 1, 2]  # out of range in a leading dim (torch's own IndexError)
    with pytest.raises(ValueError, match=r"idx \(1, 1, 1, 1, 1, 1\) is too long .* shape \(2, 2, 2, 2, 2\): at most 5"):
        fm[1, 1, 1, 1, 1, 1]
    with pytest.raises(IndexError, match="row index 2 is out of range for a dim of size 2"):
        fm[0, 0, 0, 2]
    with pytest.raises(IndexError, match="column index -3 is out of range"):
        fm[0, 0, 0, 1, -3]
    with pytest.raises(IndexError, match="None .* can only index the leading dims"):
        fm[0, 0, 0, 1, None]
    with pytest.raises(IndexError, match="single ellipsis"):
        fm[..., 0, ...]


def test_shape_method_errors():
    square, wide = FactoredMatrix(torch.randn(2, 4, 3), torch.randn(3, 4)), FactoredMatrix(torch.randn(4, 3),
                                                                                          torch.randn(3, 5))
    for bad in (-1, -2, 2, 3, -5, 1.0, True):
        with pytest.raises(ValueError, match=r"k must be a leading-dim position .* shape \(2, 4, 4\): an int in "
                                             r"\[0, 1\] or \[-4, -3\]"):
            square.unsqueeze(bad)
    with pytest.raises(ValueError, match=r"BA needs a square FactoredMatrix \(ldim == rdim\); .* shape \(4, 5\)"):
        _ = wide.BA
    with pytest.raises(ValueError, match=r"k must be a non-negative int"):
        wide.get_corner(-1)
