"""Implicit attention α of Mamba's scan as chunked matrix products, and the per-step references it is tested against.

Ali et al. 2024 ("The Hidden Attention of Mamba Models"): unrolling ``h_t = Ā_t h_{t-1} + B̄_t x_t``,
``y_t = C_t h_t + D x_t`` (Gu & Dao 2023; ``Ā_k = exp(Δ_k A)``, ``B̄_j = Δ_j B_j``) gives ``y_i = Σ_{j<=i} α_ij x_j
+ D x_i`` with ``α_ij = C_i (Π_{k=j+1..i} Ā_k) B̄_j``. Mamba-1 has one α per channel d (``A[d]`` diagonal over
the state n); Mamba-2 (Dao & Gu 2024) one per head, with a scalar ``A_h``.

Algorithm (the block decomposition of Dao & Gu 2024, SSD section 6, applied per channel). With the float64 running
sums ``P_t = Σ_{k<=t} Δ_k`` the decay from key j to query i is ``exp(A (P_i - P_j))``. Positions are cut into
chunks of ``Q``; query chunk ``I = [s, e]`` takes the reference ``ρ = P_{s-1}`` (0 for s = 0), and

    exp(A (P_i - P_j)) = exp(A (P_i - ρ)) · exp(A (ρ - P_j)),

so ``α[I, 0:e+1] = L_I R_Iᵀ``, one matrix product over the state per channel and query chunk, with
``L_I[i, n] = C_i[n] exp(A_n (P_i - ρ))`` and ``R_I[j, n] = Δ_j B_j[n] exp(A_n (ρ - P_j))``. For keys before the
chunk (j < s) both exponents are <= 0. For keys inside it, R's exponent is >= 0, bounded by the chunk's span
``|A_n| (P_e - ρ)``; where that span exceeds the flush limit (below, with a margin) the (channel, state) pair's
in-chunk keys are left out of the product and its in-chunk terms come from the same decomposition one level down:
sub-chunks of about a quarter of the chunk, whose earlier keys factorise through the sub-chunk's reference, and so
on, down to sub-chunks of at most ``EXACT_LEN`` positions that take the exact segment sums
``exp(A_n (P_i - P_j))`` (Mamba-2's "stable segsum"). So nothing overflows. Above the diagonal the product is set
to zero. Mamba-2 needs no product over the state per head: ``α = (C_i · B_j) Δ_j exp(A_h (P_i - P_j))`` is
``C Bᵀ`` (one matrix product per B/C group, shared by its heads) scaled by the same two factors, with exact segment
sums inside the chunk.

Numerics: ``P`` and every difference of ``P`` are float64 (so a decay is as accurate as its own exponent, however
long the sequence); exponentials and products are in ``dtype`` (float32 for float32 models), computed as ``exp2``
of log2-scaled exponents (``Δ_j`` enters R's exponent as ``log2 Δ_j``). Factors below ``2**FLUSH_LOG2[dtype]``
(2^-40 in float32, 2^-400 in float64) are flushed to exact zeros: a term changes by at most that much times
``|C_i[n] B_j[n]| max(1, Δ_j)``, far below float32 rounding of any term that matters, and no product of two kept
factors is denormal (denormals make CPU matrix products, and ``exp`` of very negative arguments, many times
slower). The same limit bounds the in-chunk span. Under autograd (inputs that require grad) the same steps run out
of place, so α is differentiable; otherwise they work in place, into preallocated outputs.
"""

from interp.mamba.alpha._common import BLOCK_ELEMENTS, EXACT_LEN, FLUSH_LOG2, alpha_chunk
from interp.mamba.alpha.reference import mamba1_alpha_ref, mamba2_alpha_ref
from interp.mamba.alpha.selective import mamba1_alpha, mamba1_group_maps
from interp.mamba.alpha.ssd import mamba2_alpha

__all__ = [
    "mamba1_alpha", "mamba1_group_maps", "mamba2_alpha", "mamba1_alpha_ref", "mamba2_alpha_ref", "alpha_chunk",
    "FLUSH_LOG2", "EXACT_LEN", "BLOCK_ELEMENTS",
]
