"""Bad inputs to Mamba knockout, implicit attention and conversion (floats and bools are never positions)."""

import numpy as np
import torch

from interp import mamba
from interp.mamba.implicit_attention import mamba2_alpha

T = torch.tensor


def _ko(e, sources=(1,), targets=(-1,), layers=None, mode="ssm", model="mamba"):
    return mamba.run_with_knockout(e.model(model), e.tokens, sources, targets, layers, mode=mode)


ROWS = [
    ("knockout-float-source", lambda e: _ko(e, sources=[1.7]), TypeError,
     r"sources: 1\.7 \(float\) is not a position \(expected an int\)"),
    ("knockout-float-scalar", lambda e: _ko(e, sources=2.0), TypeError,
     r"sources must be an int position or a sequence of them; got 2\.0 \(float\)"),
    ("knockout-bool-source", lambda e: _ko(e, sources=[True]), TypeError,
     r"sources: True \(bool\) is not a position"),
    ("knockout-bool-scalar", lambda e: _ko(e, sources=True), TypeError, r"sources must be an int position"),
    ("knockout-float-target", lambda e: _ko(e, targets=[5.0], model="mamba2"), TypeError,
     r"targets: 5\.0 \(float\) is not a position"),
    ("knockout-float-tensor", lambda e: _ko(e, sources=T([1.0, 2.0])), TypeError,
     r"sources must hold integer positions; got a tensor of dtype torch\.float32"),
    ("knockout-2d-int-tensor", lambda e: _ko(e, sources=T([[1, 2]])), ValueError,
     r"sources: integer positions must be a 1-d tensor"),
    ("knockout-empty", lambda e: _ko(e, sources=[]), ValueError, r"sources is empty; expected at least one position"),
    ("knockout-string", lambda e: _ko(e, targets="last"), TypeError, r"targets must be an int position"),
    ("knockout-out-of-range", lambda e: _ko(e, sources=[9]), IndexError,
     r"sources: positions \[9\] are out of range for a sequence of 6 tokens"),
    ("knockout-mask-shape", lambda e: _ko(e, sources=torch.ones(5, dtype=torch.bool)), ValueError,
     r"sources: a bool mask must have shape \[6\] or \[2, 6\]; got \(5,\)"),
    ("knockout-numpy-float", lambda e: _ko(e, sources=np.array([1.5])), TypeError,
     r"sources must hold integer positions; got a tensor of dtype float64"),
    ("knockout-mode", lambda e: _ko(e, mode="conv"), ValueError,
     r"mode must be 'ssm' \(the scan only\) or 'mixer' \(conv and scan\); got 'conv'"),
    ("knockout-layers", lambda e: _ko(e, layers=[5]), IndexError, r"layers: layer 5 is out of range"),
    ("knockout-layers-bool", lambda e: _ko(e, layers=True, mode="mixer"), TypeError,
     r"layers must be a layer index or a sequence of them; got bool"),
    ("knockout-on-transformer", lambda e: _ko(e, model="llama"), TypeError,
     r"model must be a HookedMamba \(arch 'mamba' or 'mamba2'\); got arch 'llama'"),
    ("implicit-layer-list", lambda e: mamba.implicit_attention(e.mamba, e.tokens, layer=[0, 1]), TypeError,
     r"layer must be one layer index \(an int\)"),
    ("implicit-layer-range", lambda e: mamba.implicit_attention(e.mamba, e.tokens, layer=4), IndexError,
     r"layer: layer 4 is out of range"),
    ("implicit-channels-float", lambda e: mamba.implicit_attention(e.mamba, e.tokens, 0, channels=[1.5]), TypeError,
     r"channels: 1\.5 \(float\) is not an index"),
    ("implicit-channels-bool", lambda e: mamba.implicit_attention(e.mamba, e.tokens, 0, channels=True), TypeError,
     r"channels must be an int index or a sequence of them; got True \(bool\)"),
    ("implicit-channels-range", lambda e: mamba.implicit_attention(e.mamba, e.tokens, 0, channels=[999]), IndexError,
     r"channels must be a non-empty list of indices in 0\.\.127; got bad \[999\]"),
    ("implicit-channels-empty", lambda e: mamba.implicit_attention(e.mamba2, e.tokens, 0, channels=[]), ValueError,
     r"channels is empty"),
    ("implicit-max-len", lambda e: mamba.implicit_attention(e.mamba, e.tokens, 0, max_len=3), ValueError,
     r"tokens has 6 positions but max_len=3"),
    ("implicit-max-elements", lambda e: mamba.implicit_attention(e.mamba, e.tokens, 0, max_elements=10), ValueError,
     r"> max_elements=10; pass fewer channels"),
    ("implicit-on-transformer", lambda e: mamba.implicit_attention(e.llama, e.tokens, 0), TypeError,
     r"model must be a HookedMamba"),
    ("patterns-layers-empty", lambda e: mamba.attention_patterns(e.mamba2, e.tokens, layers=[]), ValueError,
     r"layers is empty"),
    ("alpha-rows-float", lambda e: mamba2_alpha(*_scan(e), rows=[0.5]), TypeError,
     r"rows: 0\.5 \(float\) is not a position \(expected an int\)"),
    ("alpha-rows-range", lambda e: mamba2_alpha(*_scan(e), rows=[7]), IndexError,
     r"rows must be query positions in 0\.\.5; got \[7\]"),
    ("from-hf-llama", lambda e: mamba.from_hf(e.llama.hf_model), TypeError,
     r"hf_model must be a transformers MambaForCausalLM or Mamba2ForCausalLM; got LlamaForCausalLM"),
]


def _scan(e):
    from interp.mamba.implicit_attention import scan_sites, ssm_params

    s = scan_sites(0)
    _, cache = e.mamba2.run_with_cache(e.tokens, names_filter=[s["dt"], s["B"], s["C"]])
    return cache[s["dt"]], cache[s["B"]], cache[s["C"]], ssm_params(e.mamba2, 0)[0]
