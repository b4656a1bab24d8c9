"""Bad inputs to Mamba knockout, implicit attention and conversion (floats and bools are never positions)."""

import numpy as np
import torch

import interp
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
    ("implicit-no-tokens-no-cache", lambda e: mamba.implicit_attention(e.mamba, None, 0), TypeError,
     r"implicit_attention: tokens is None; pass token ids \[batch, pos\], or cache= \(an ActivationCache"),
    ("implicit-cache-not-mapping", lambda e: mamba.implicit_attention(e.mamba, None, 0, cache=[_dbc(e)]), TypeError,
     r"cache must be an ActivationCache \(from model\.run_with_cache\) or a mapping from site name to tensor; "
     r"got list"),
    ("implicit-cache-tensor", lambda e: mamba.implicit_attention(e.mamba, None, 0, cache=e.tokens), TypeError,
     r"cache must be an ActivationCache .* got Tensor"),
    ("implicit-cache-missing-site", lambda e: mamba.implicit_attention(
        e.mamba, None, 0, cache=_dbc(e, drop="blocks.0.mixer.hook_C")), KeyError,
     r"implicit_attention: cache lacks 1 of the 3 sites it needs: 'blocks\.0\.mixer\.hook_C'; record them with "
     r"model\.run_with_cache\(tokens, names_filter=lambda n: n\.endswith\(\('mixer\.hook_dt', 'mixer\.hook_B', "
     r"'mixer\.hook_C'\)\)\)"),
    ("patterns-cache-missing-layer", lambda e: mamba.attention_patterns(e.mamba2, None, cache=_dbc(e, "mamba2", 0)),
     KeyError, r"cache lacks 3 of the 6 sites it needs: 'blocks\.1\.mixer\.hook_dt', 'blocks\.1\.mixer\.hook_B', "
     r"'blocks\.1\.mixer\.hook_C'"),
    ("implicit-cache-short-names", lambda e: mamba.implicit_attention(
        e.mamba, None, 0, cache={n.rsplit(".", 1)[1]: t for n, t in _dbc(e).items()}), KeyError,
     r"cache lacks 3 of the 3 sites it needs: 'blocks\.0\.mixer\.hook_dt'"),
    ("implicit-cache-other-widths", lambda e: mamba.implicit_attention(e.mamba, None, 0, cache=_dbc(e, "mamba2")),
     ValueError, r"cache\['blocks\.0\.mixer\.hook_dt'\] has shape \(2, 6, 8\); this model expects \[batch, pos, "
     r"d_inner\] = \(2, 6, 128\) .* is the cache from another model"),
    ("implicit-cache-d-state", lambda e: mamba.implicit_attention(e.mamba, None, 0, cache=_dbc(
        e, cut="blocks.0.mixer.hook_B")), ValueError,
     r"cache\['blocks\.0\.mixer\.hook_B'\] has shape \(2, 6, 7\); this model expects \[batch, pos, d_state\] = "
     r"\(2, 6, 8\)"),
    ("patterns-cache-groups", lambda e: mamba.attention_patterns(e.mamba2, None, cache=_dbc(
        e, "mamba2", cut="blocks.1.mixer.hook_C")), ValueError,
     r"cache\['blocks\.1\.mixer\.hook_C'\] has shape \(2, 6, 2, 15\); this model expects \[batch, pos, n_groups, "
     r"d_state\] = \(2, 6, 2, 16\)"),
    ("implicit-cache-two-runs", lambda e: mamba.attention_patterns(e.mamba, None, cache={
        **_dbc(e, layer=0), **_dbc(e, layer=1, tokens=e.tokens[:, :4])}), ValueError,
     r"cache\['blocks\.1\.mixer\.hook_dt'\] has shape \(2, 4, 128\); this model expects .* = \(2, 6, 128\) "
     r"\(batch and pos of 'blocks\.0\.mixer\.hook_dt'\)"),
    ("implicit-cache-int-tensor", lambda e: mamba.implicit_attention(e.mamba, None, 0, cache={
        **_dbc(e), "blocks.0.mixer.hook_dt": e.tokens}), TypeError,
     r"cache\['blocks\.0\.mixer\.hook_dt'\] must be a floating-point tensor; got a torch\.int64 tensor"),
    ("implicit-cache-not-tensor", lambda e: mamba.implicit_attention(e.mamba, None, 0, cache={
        **_dbc(e), "blocks.0.mixer.hook_B": np.zeros((2, 6, 8))}), TypeError,
     r"cache\['blocks\.0\.mixer\.hook_B'\] must be a floating-point tensor; got ndarray"),
    ("implicit-cache-tokens-shape", lambda e: mamba.implicit_attention(e.mamba, e.tokens[:1], 0, cache=_dbc(e)),
     ValueError, r"implicit_attention: tokens has shape \(1, 6\) but the cache was recorded on \[batch, pos\] = "
     r"\(2, 6\) \(from 'blocks\.0\.mixer\.hook_dt'\)"),
    ("patterns-cache-tokens-shape", lambda e: e.mamba2.attention_patterns(e.tokens[:, :5], cache=_dbc(e, "mamba2")),
     ValueError, r"attention_patterns: tokens has shape \(2, 5\) but the cache was recorded on \[batch, pos\] = "
     r"\(2, 6\)"),
    ("implicit-cache-with-mask", lambda e: mamba.implicit_attention(
        e.mamba, None, 0, cache=_dbc(e), attention_mask=torch.ones(2, 6)), ValueError,
     r"attention_mask cannot be combined with cache=: the cache already holds its run's activations \(masked if "
     r"that run had an attention_mask\)"),
    ("patterns-cache-with-mask", lambda e: e.mamba.attention_patterns(
        e.tokens, cache=_dbc(e), attention_mask=torch.ones(2, 6, dtype=torch.long)), ValueError,
     r"attention_patterns: attention_mask cannot be combined with cache="),
    ("implicit-cache-max-len", lambda e: mamba.implicit_attention(e.mamba, None, 0, cache=_dbc(e), max_len=3),
     ValueError, r"tokens has 6 positions but max_len=3"),
    ("implicit-cache-of-transformer", lambda e: mamba.implicit_attention(
        e.mamba, None, 0, cache=dict(e.llama.run_with_cache(e.tokens)[1])), KeyError,
     r"cache lacks 3 of the 3 sites it needs: 'blocks\.0\.mixer\.hook_dt'"),
    ("implicit-cache-other-model", lambda e: mamba.implicit_attention(
        e.mamba2, None, 0, cache=e.mamba.run_with_cache(e.tokens)[1]), ValueError,
     r"implicit_attention: cache was recorded by another model object \(HookedMamba\(arch='mamba'.*\), not "
     r"by this one \(HookedMamba\(arch='mamba2'"),
    ("patterns-cache-same-shapes", lambda e: mamba.attention_patterns(
        interp.load_model(e.dir("mamba")), None, cache=e.mamba.run_with_cache(e.tokens)[1]), ValueError,
     r"attention_patterns: cache was recorded by another model object"),
    ("from-hf-llama", lambda e: mamba.from_hf(e.llama.hf_model), TypeError,
     r"hf_model must be a transformers MambaForCausalLM or Mamba2ForCausalLM; got LlamaForCausalLM"),
]


def _scan(e):
    from interp.mamba.implicit_attention import scan_sites, ssm_params

    s = scan_sites(0)
    _, cache = e.mamba2.run_with_cache(e.tokens, names_filter=[s["dt"], s["B"], s["C"]])
    return cache[s["dt"]], cache[s["B"]], cache[s["C"]], ssm_params(e.mamba2, 0)[0]


def _dbc(e, model="mamba", layer=None, *, drop=None, cut=None, tokens=None):
    """A cache of Δ, B, C (all layers, or ``layer``) as a dict, with one site dropped or its last axis cut by one."""
    keep = ("hook_dt", "hook_B", "hook_C")
    if layer is not None:
        keep = tuple(f"blocks.{layer}.mixer.{k}" for k in keep)
    _, cache = e.model(model).run_with_cache(e.tokens if tokens is None else tokens,
                                             names_filter=lambda n: n.endswith(keep))
    out = dict(cache)
    if drop:
        out.pop(drop)
    if cut:
        out[cut] = out[cut][..., :-1]
    return out
