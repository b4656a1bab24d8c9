"""A matrix kept as the product of two factors, ``M = A @ B``, never formed unless asked for.

The idea is Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits": a head's OV circuit
``W_V W_O`` and QK circuit ``W_Q W_Kᵀ`` are ``d_model x d_model`` matrices of rank at most ``d_head``, so they are
held as their two thin factors and analysed through them (products with other weights, SVD, eigenvalues, norms).
The API and its semantics follow TransformerLens's ``FactoredMatrix`` (``transformer_lens/FactoredMatrix.py``,
3.9): code written against it runs on this class and gets the same values, shapes and result types.

Shapes (``...`` is any number of leading dims, broadcast between the factors at construction):

    A        [..., ldim, mdim]      left factor
    B        [..., mdim, rdim]      right factor
    AB       [..., ldim, rdim]      the product, formed on request
    BA       [..., mdim, mdim]      the reverse product (only when ldim == rdim)
    U        [..., ldim, k]         k = min(ldim, mdim, rdim)
    S        [..., k]               singular values, descending
    V (Vh)   [..., rdim, k]         M = U @ diag(S) @ V.mH (V.T for real factors); Vh is TL's alias of V
    norm()   [...]                  Frobenius norm

Products (``@``) pick the cheaper association, as TransformerLens does: ``M @ X`` is ``A @ (B @ X)`` (kept factored
as ``(A, B @ X)``) when ``rdim > mdim`` and ``(AB, X)`` otherwise; ``X @ M`` is ``(X @ A, B)`` when
``ldim > mdim`` and ``(X, AB)`` otherwise; a product with a vector returns a plain tensor.

The SVD is computed from the factors: with ``A = Ua Sa Vaᴴ`` and ``B = Ub Sb Vbᴴ``, ``AB = Ua (Sa Vaᴴ Ub Sb) Vbᴴ``,
so the SVD ``Um Sm Vmᴴ`` of the small middle matrix gives ``U = Ua Um``, ``S = Sm``, ``V = Vb Vm``.

Deliberate differences from TransformerLens 3.9 (each where TL raises an unhelpful error or returns garbage):
bad shapes raise ``ValueError``/``TypeError`` naming the argument, not ``AssertionError``/``RuntimeError``;
indexing expands ``...``, bounds-checks integer row/column indices (TL returns an empty matrix past the end) and
refuses ``None`` among the matrix dims; ``unsqueeze`` refuses positions inside the matrix dims; ``svd()`` of
16-bit factors runs in float32 (torch has no 16-bit SVD on CPU) and returns the factors' dtype.
"""

from __future__ import annotations

import numbers
import operator
import warnings
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Complex, Float
from torch import Tensor

__all__ = ["FactoredMatrix", "TensorLike"]

_HALF = (torch.float16, torch.bfloat16)


@runtime_checkable
class TensorLike(Protocol):
    """What a factor or operand must provide when it is not a ``torch.Tensor`` (a duck-typed array wrapper).

    Such objects work with construction and the products (``@``, ``AB``, ``BA``); the linear algebra (``svd``,
    ``norm``, ``eigenvalues``, ...) needs real tensors, as in TransformerLens.
    """

    @property
    def ndim(self) -> int: ...

    @property
    def shape(self) -> Any: ...

    def unsqueeze(self, dim: int) -> Any: ...

    def squeeze(self, dim: int) -> Any: ...

    def broadcast_to(self, shape: Any) -> Any: ...

    def __matmul__(self, other: Any) -> Any: ...


def _check_operand(x: Any, name: str, expected: str) -> None:
    if not isinstance(x, Tensor | TensorLike):
        raise TypeError(f"{name} must be a torch.Tensor (or tensor-like object) of shape {expected}; "
                        f"got {type(x).__name__}")


def _check_not_scalar(other: Any, expected: str) -> None:
    if other.ndim == 0:
        raise ValueError(f"other must have shape {expected}; got a 0-d tensor (use * to scale by a scalar)")


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _broadcast_leading(left: tuple, right: tuple, what: str) -> torch.Size:
    """``torch.broadcast_shapes(left, right)``, or a ValueError that says ``what`` was being combined."""
    try:
        return torch.broadcast_shapes(left, right)
    except RuntimeError:
        raise ValueError(f"shape mismatch: the leading dims of {what} do not broadcast: {left} vs {right} "
                         "(each pair of dims, aligned from the right, must be equal or 1)") from None


def _as_int(item: Any) -> int | None:
    """``item`` as a Python int when it is a single integer (int, NumPy integer, 0-d integer tensor), else None."""
    if isinstance(item, bool) or (isinstance(item, Tensor) and item.ndim != 0):
        return None
    try:
        return operator.index(item)
    except TypeError:
        return None


def _keep_dim(item: Any, size: int, what: str) -> Any:
    """An index for one matrix dim that keeps the dim: an integer ``i`` becomes ``slice(i, i + 1)``."""
    i = _as_int(item)
    if i is None:
        return item
    if not -size <= i < size:
        raise IndexError(f"{what} index {i} is out of range for a dim of size {size}")
    return slice(i, i + 1 if i != -1 else None)


class FactoredMatrix:
    """The matrix ``A @ B`` held as its factors ``A [..., ldim, mdim]`` and ``B [..., mdim, rdim]``.

    Leading dims of ``A`` and ``B`` broadcast against each other; after construction both factors carry the full
    leading shape (as broadcast views), so ``fm.A.shape == (*fm.shape[:-2], ldim, mdim)``.

    >>> fm = FactoredMatrix(torch.randn(12, 64, 8), torch.randn(12, 8, 64))   # 12 heads' OV circuits
    >>> fm.shape, fm.mdim
    (torch.Size([12, 64, 64]), 8)
    >>> fm.norm().shape     # one Frobenius norm per head, from the factors' SVD
    torch.Size([12])
    """

    def __init__(self, A: Float[Tensor, "... ldim mdim"] | TensorLike, B: Float[Tensor, "... mdim rdim"] | TensorLike):
        _check_operand(A, "A", "[..., ldim, mdim]")
        _check_operand(B, "B", "[..., mdim, rdim]")
        for name, x, expected in (("A", A, "[..., ldim, mdim]"), ("B", B, "[..., mdim, rdim]")):
            if x.ndim < 2:
                raise ValueError(f"{name} must have shape {expected} (at least 2 dims); got shape {_shape(x)}")
        a_shape, b_shape = _shape(A), _shape(B)
        if a_shape[-1] != b_shape[-2]:
            raise ValueError(f"A [..., ldim, mdim] and B [..., mdim, rdim] must match on the inner dimension mdim: "
                             f"A has shape {a_shape} (mdim {a_shape[-1]}), B has shape {b_shape} "
                             f"(mdim {b_shape[-2]})")
        lead = _broadcast_leading(a_shape[:-2], b_shape[:-2], "A and B")
        self.A: Tensor = A.broadcast_to((*lead, *a_shape[-2:]))
        """Left factor, ``[..., ldim, mdim]``."""
        self.B: Tensor = B.broadcast_to((*lead, *b_shape[-2:]))
        """Right factor, ``[..., mdim, rdim]``."""

    # ------------------------------------------------------------------------------------------------ shape
    @property
    def ldim(self) -> int:
        """Rows of the matrix (``A.shape[-2]``)."""
        return self.A.shape[-2]

    @property
    def mdim(self) -> int:
        """Inner (hidden) dim of the factorisation (``A.shape[-1] == B.shape[-2]``); the rank is at most this."""
        return self.B.shape[-2]

    @property
    def rdim(self) -> int:
        """Columns of the matrix (``B.shape[-1]``)."""
        return self.B.shape[-1]

    @property
    def shape(self) -> torch.Size:
        """``[..., ldim, rdim]``: the broadcast leading dims, then the matrix dims."""
        return torch.Size((*_shape(self.A)[:-2], self.ldim, self.rdim))

    @property
    def ndim(self) -> int:
        """``len(self.shape)``."""
        return len(self.shape)

    @property
    def has_leading_dims(self) -> bool:
        """Whether there are dims before the two matrix dims."""
        return self.ndim > 2

    @property
    def pair(self) -> tuple[Float[Tensor, "... ldim mdim"], Float[Tensor, "... mdim rdim"]]:
        """The factors ``(A, B)``."""
        return (self.A, self.B)

    def __repr__(self) -> str:
        return f"FactoredMatrix: Shape({self.shape}), Hidden Dim({self.mdim})"

    # --------------------------------------------------------------------------------------------- products
    def __matmul__(self, other):
        """``self @ other``: ``other`` a FactoredMatrix ``[..., rdim, n]`` or a tensor ``[..., rdim, n]`` (gives a
        FactoredMatrix ``[..., ldim, n]``) or a vector ``[rdim]`` (gives a tensor ``[..., ldim]``)."""
        if isinstance(other, FactoredMatrix):
            self._check_product(other.shape, "other", "[..., rdim, n]", "rdim", -2)
            return (self @ other.A) @ other.B
        _check_operand(other, "other (in FactoredMatrix @ other)", "[..., rdim, n] or [rdim]")
        _check_not_scalar(other, "[..., rdim, n] or [rdim]")
        if other.ndim == 1:
            self._check_product(_shape(other), "other", "[rdim]", "rdim", -1)
            return (self.A @ (self.B @ other.unsqueeze(-1))).squeeze(-1)
        self._check_product(_shape(other), "other", "[..., rdim, n]", "rdim", -2)
        if self.rdim > self.mdim:
            return FactoredMatrix(self.A, self.B @ other)
        return FactoredMatrix(self.AB, other)

    def __rmatmul__(self, other):
        """``other @ self``: ``other`` a tensor ``[..., n, ldim]`` (gives a FactoredMatrix ``[..., n, rdim]``) or a
        vector ``[ldim]`` (gives a tensor ``[..., rdim]``)."""
        if isinstance(other, FactoredMatrix):
            other._check_product(self.shape, "the right operand", "[..., rdim, n]", "rdim", -2)
            return other.A @ (other.B @ self)
        _check_operand(other, "other (in other @ FactoredMatrix)", "[..., n, ldim] or [ldim]")
        _check_not_scalar(other, "[..., n, ldim] or [ldim]")
        if other.ndim == 1:
            self._check_product(_shape(other), "other", "[ldim]", "ldim", -1)
            return ((other.unsqueeze(-2) @ self.A) @ self.B).squeeze(-2)
        self._check_product(_shape(other), "other", "[..., n, ldim]", "ldim", -1)
        if self.ldim > self.mdim:
            return FactoredMatrix(other @ self.A, self.B)
        return FactoredMatrix(other, self.AB)

    def _check_product(self, shape: tuple, name: str, expected: str, side: str, dim: int) -> None:
        """``shape[dim]`` must equal our ``side`` (``"ldim"`` or ``"rdim"``), and the leading dims of a matrix
        operand must broadcast with ours."""
        size = getattr(self, side)
        if shape[dim] != size:
            raise ValueError(f"{name} must have shape {expected} with {side} = {size} to multiply a FactoredMatrix "
                             f"of shape {tuple(self.shape)}; got shape {tuple(shape)}")
        if len(shape) > 1:
            _broadcast_leading(tuple(self.shape[:-2]), tuple(shape[:-2]), f"the FactoredMatrix and {name}")

    def __mul__(self, scalar: int | float | Tensor) -> FactoredMatrix:
        """``self * scalar`` (a number or a one-element tensor): scales ``A``, so the result stays factored."""
        if isinstance(scalar, Tensor):
            if scalar.numel() != 1:
                raise ValueError(f"scalar must be a number or a one-element tensor for FactoredMatrix * scalar; got a "
                                 f"tensor of shape {tuple(scalar.shape)} (use @ for matrix multiplication)")
        elif not isinstance(scalar, numbers.Number):
            return NotImplemented
        return FactoredMatrix(self.A * scalar, self.B)

    def __rmul__(self, scalar: int | float | Tensor) -> FactoredMatrix:
        """``scalar * self``: the same as ``self * scalar``."""
        return self.__mul__(scalar)

    @property
    def AB(self) -> Float[Tensor, "... ldim rdim"]:
        """The full matrix ``A @ B`` (``ldim x rdim`` numbers per leading index: can be large)."""
        return self.A @ self.B

    @property
    def BA(self) -> Float[Tensor, "... mdim mdim"]:
        """The reverse product ``B @ A``; defined only when ``ldim == rdim``."""
        if self.ldim != self.rdim:
            raise ValueError(f"BA needs a square FactoredMatrix (ldim == rdim); this one has shape "
                             f"{tuple(self.shape)} (ldim {self.ldim}, rdim {self.rdim})")
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        """The transpose ``[..., rdim, ldim]``, as the factors ``(Bᵀ, Aᵀ)``."""
        return FactoredMatrix(self.B.transpose(-2, -1), self.A.transpose(-2, -1))

    # --------------------------------------------------------------------------------------- linear algebra
    @cached_property
    def _svd(self) -> tuple[Tensor, Tensor, Tensor]:
        A, B = self.A, self.B
        dtype = A.dtype
        if dtype in _HALF:  # torch has no 16-bit SVD on CPU
            A, B = A.float(), B.float()
        Ua, Sa, Vha = torch.linalg.svd(A, full_matrices=False)
        Ub, Sb, Vhb = torch.linalg.svd(B, full_matrices=False)
        middle = (Sa[..., :, None] * Vha) @ Ub * Sb[..., None, :]
        Um, Sm, Vhm = torch.linalg.svd(middle, full_matrices=False)
        U, S, V = Ua @ Um, Sm, Vhb.mH @ Vhm.mH
        if dtype in _HALF:
            U, S, V = U.to(dtype), S.to(dtype), V.to(dtype)
        return U, S, V

    def svd(self) -> tuple[Float[Tensor, "... ldim k"], Float[Tensor, "... k"], Float[Tensor, "... rdim k"]]:
        """Thin SVD ``(U, S, V)`` with ``self.AB == U @ S.diag_embed() @ V.mH`` (``V.mT`` for real factors),
        ``k = min(ldim, mdim, rdim)``; computed from the factors (see the module docstring) and cached.

        Note the third element is ``V`` (columns are right singular vectors), not ``torch.linalg.svd``'s ``Vh``.
        """
        return self._svd

    @property
    def U(self) -> Float[Tensor, "... ldim k"]:
        """Left singular vectors (columns), ``svd()[0]``."""
        return self.svd()[0]

    @property
    def S(self) -> Float[Tensor, "... k"]:
        """Singular values in descending order, ``svd()[1]``."""
        return self.svd()[1]

    @property
    def V(self) -> Float[Tensor, "... rdim k"]:
        """Right singular vectors (columns), ``svd()[2]``: ``AB == U @ S.diag_embed() @ V.mH``."""
        return self.svd()[2]

    @property
    def Vh(self) -> Float[Tensor, "... rdim k"]:
        """Deprecated alias of :attr:`V`, kept from TransformerLens: it returns ``V`` itself, **not** its conjugate
        transpose (warns ``DeprecationWarning``, as TransformerLens 3.9 does)."""
        warnings.warn("FactoredMatrix.Vh returns V (right singular vectors as columns), not V's conjugate "
                      "transpose, as in TransformerLens; use .V (and .V.mH for Vh)", DeprecationWarning, stacklevel=2)
        return self.svd()[2]

    @property
    def eigenvalues(self) -> Complex[Tensor, "... mdim"]:
        """Eigenvalues of ``BA`` (complex, ``[..., mdim]``), which are those of ``AB`` apart from zeros: if
        ``BAv = λv`` then ``AB(Av) = λ(Av)``. Needs ``ldim == rdim``; 16-bit factors are computed in float32."""
        BA = self.BA
        if BA.dtype in _HALF:
            BA = BA.float()
        return torch.linalg.eig(BA).eigenvalues

    def norm(self) -> Float[Tensor, "*leading"]:
        """Frobenius norm ``[...]``, as ``sqrt(sum S²)`` of the singular values."""
        return self.S.pow(2).sum(-1).sqrt()

    def make_even(self) -> FactoredMatrix:
        """The same matrix factored as ``(U √S, √S Vᴴ)``: both halves carry the square roots of the singular values
        and have orthogonal columns/rows; ``mdim`` becomes ``k``."""
        root = self.S.sqrt()
        return FactoredMatrix(self.U * root[..., None, :], root[..., :, None] * self.V.mH)

    def collapse_l(self) -> Float[Tensor, "... k rdim"]:
        """``S Vᴴ`` ``[..., k, rdim]``: the matrix with its left orthogonal factor ``U`` removed
        (``U @ collapse_l() == AB``)."""
        return self.S[..., :, None] * self.V.mH

    def collapse_r(self) -> Float[Tensor, "... ldim k"]:
        """``U S`` ``[..., ldim, k]``: the matrix with its right orthogonal factor removed
        (``collapse_r() @ V.mH == AB``)."""
        return self.U * self.S[..., None, :]

    # ---------------------------------------------------------------------------------------- indexing etc.
    def get_corner(self, k: int = 3) -> Tensor:
        """The first ``k`` entries of every dim of ``AB`` (leading dims too), without forming all of ``AB``."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative int (corner size); got {k!r}")
        corner = self.A[..., :k, :] @ self.B[..., :, :k]
        return corner[(slice(k),) * corner.ndim]

    def unsqueeze(self, k: int) -> FactoredMatrix:
        """A new leading dim of size 1 at position ``k`` (``0 <= k <= ndim - 2``, or ``-(ndim + 1) <= k <= -3``
        counting from the end of the new shape)."""
        n = self.ndim
        if isinstance(k, bool) or not isinstance(k, int) or not (0 <= k <= n - 2 or -(n + 1) <= k <= -3):
            raise ValueError(f"k must be a leading-dim position of a FactoredMatrix of shape {tuple(self.shape)}: "
                             f"an int in [0, {n - 2}] or [{-(n + 1)}, -3] (the last two dims are the matrix); "
                             f"got {k!r}")
        return FactoredMatrix(self.A.unsqueeze(k), self.B.unsqueeze(k))

    def __getitem__(self, idx) -> FactoredMatrix:
        """Index like ``AB``, keeping the result factored: the first ``ndim - 2`` entries index the leading dims,
        the next one the rows (applied to ``A``), the last one the columns (applied to ``B``).

        An integer row or column index keeps its dim (size 1), so the result is always a FactoredMatrix
        (``fm[..., 2, :]`` has shape ``[..., 1, rdim]``). ``None`` adds a leading dim; ``...`` fills with ``:``.
        """
        items = idx if isinstance(idx, tuple) else (idx,)
        n_lead = self.ndim - 2
        if sum(item is Ellipsis for item in items) > 1:
            raise IndexError(f"an index can only have a single ellipsis ('...'); got {idx!r}")
        given = sum(item is not None and item is not Ellipsis for item in items)
        if given > self.ndim:
            raise ValueError(f"idx {idx!r} is too long for a FactoredMatrix of shape {tuple(self.shape)}: at most "
                             f"{self.ndim} entries ({n_lead} leading, then rows, then columns)")
        if any(item is Ellipsis for item in items):
            at = next(i for i, item in enumerate(items) if item is Ellipsis)
            items = items[:at] + (slice(None),) * (self.ndim - given) + items[at + 1:]
        lead: list = []
        rest: list = []
        for item in items:
            if rest or (item is not None and sum(i is not None for i in lead) == n_lead):
                rest.append(item)
            else:
                lead.append(item)
        if any(item is None for item in rest):
            raise IndexError(f"None (a new axis) can only index the leading dims of a FactoredMatrix; got {idx!r} "
                             f"for shape {tuple(self.shape)}")
        A, B = self.A[tuple(lead)], self.B[tuple(lead)]
        if len(rest) >= 1:
            A = A[..., _keep_dim(rest[0], self.ldim, "row"), :]
        if len(rest) == 2:
            B = B[..., _keep_dim(rest[1], self.rdim, "column")]
        return FactoredMatrix(A, B)
