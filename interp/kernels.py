"""Sparse kernels for TopK-style SAE training (installs as ``interp.kernels``).

Three ops over a k-sparse batch ``(vals [B, K], idx [B, K])``, each with a plain reference
(:mod:`interp.kernels.reference`), a torch implementation (:mod:`interp.kernels.cpu_ops`) and a Triton one
(:mod:`interp.kernels.triton_ops`, optional): ``sparse_decode``, ``gather_dot``, ``scatter_outer``. The autograd
functions ``sparse_encode`` / ``sparse_decode_autograd`` build a training step from them.
Backend: Triton for CUDA tensors when triton imports, the fused C kernels (:mod:`interp.kernels.native`) for float32
CPU tensors where they build, torch otherwise; ``INTERP_SAE_KERNEL=native|torch|triton|reference``. With a
:class:`TopKSelect` or :class:`BatchTopKSelect`, ``sparse_encode`` on the native backend never stores the dense
pre-activations.
"""

# The modules live in the top-level kernels/ folder (a wheel: interp/kernels/); see interp/_layout.py.
from interp._layout import package_path

__path__ = package_path(__file__, "kernels")

from interp.kernels.backend import BACKENDS, ENV_VAR, backend_name, ops_for, triton_available
from interp.kernels.selectors import BatchTopKSelect, FusedSelector, TopKSelect
from interp.kernels.sparse_autograd import Selector, sparse_encode
from interp.kernels.sparse_autograd import sparse_decode as sparse_decode_autograd

__all__ = ["BACKENDS", "ENV_VAR", "BatchTopKSelect", "FusedSelector", "Selector", "TopKSelect", "backend_name",
           "ops_for", "sparse_decode_autograd", "sparse_encode", "triton_available"]
