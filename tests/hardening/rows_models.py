"""Bad inputs to a model's forward pass, tokens, layers, vocabulary and generation."""

import numpy as np
import torch

from interp import CapabilityError

T = torch.tensor


def _resid(e, d=64):
    return torch.zeros(2, 6, d)


ROWS = [
    # ---- token ids
    ("tokens-float", lambda e: e.llama(torch.rand(1, 4)), TypeError, r"tokens must hold integer token ids.*float32"),
    ("tokens-bool", lambda e: e.llama(T([[True, False]])), TypeError, r"tokens must hold integer token ids.*bool"),
    ("tokens-complex", lambda e: e.llama(torch.zeros(1, 2, dtype=torch.complex64)), TypeError,
     r"tokens must hold integer token ids"),
    ("tokens-3d", lambda e: e.llama(torch.zeros(1, 2, 3, dtype=torch.long)), ValueError,
     r"tokens must have shape \[batch, pos\]; got \(1, 2, 3\)"),
    ("tokens-no-rows", lambda e: e.llama(torch.zeros(0, 4, dtype=torch.long)), ValueError, r"tokens is empty"),
    ("tokens-no-positions", lambda e: e.llama(torch.zeros(2, 0, dtype=torch.long)), ValueError, r"tokens is empty"),
    ("tokens-id-too-big", lambda e: e.llama(T([[1, 2, 500]])), ValueError,
     r"tokens holds ids in \[1, 500\] but the vocabulary has ids 0\.\.127"),
    ("tokens-negative-id", lambda e: e.llama(T([[-1, 2]])), ValueError, r"tokens holds ids in \[-1, 2\]"),
    ("tokens-python-list", lambda e: e.llama([1, 2, 3]), TypeError, r"tokens must be a LongTensor\[batch, pos\]"),
    ("tokens-numpy", lambda e: e.llama(np.array([[1, 2]])), TypeError, r"tokens must be a LongTensor"),
    ("tokens-mamba-float", lambda e: e.mamba(torch.rand(1, 4)), TypeError, r"tokens must hold integer token ids"),
    ("tokens-gpt2-too-long", lambda e: e.gpt2(torch.ones(1, 300, dtype=torch.long)), ValueError,
     r"tokens has 300 positions but this gpt2 model has n_positions=256"),
    # ---- attention masks
    ("mask-wrong-shape", lambda e: e.llama(e.tokens, attention_mask=torch.ones(2, 5, dtype=torch.long)), ValueError,
     r"attention_mask has shape \(2, 5\); expected \(2, 6\)"),
    ("mask-float", lambda e: e.llama(e.tokens, attention_mask=torch.ones(2, 6)), TypeError,
     r"attention_mask must be integer or bool"),
    ("mask-not-binary", lambda e: e.llama(e.tokens, attention_mask=torch.full((2, 6), 2)), ValueError,
     r"attention_mask must hold only 0 and 1"),
    ("mask-empty-row", lambda e: e.llama(e.tokens, attention_mask=T([[1] * 6, [0] * 6])), ValueError,
     r"attention_mask: rows \[1\] have no real token"),
    ("mask-list", lambda e: e.llama(e.tokens, attention_mask=[[1] * 6] * 2), TypeError,
     r"attention_mask must be a tensor \[batch, pos\]"),
    ("mask-with-text", lambda e: e.llama(["ab", "c"], attention_mask=T([[1, 1, 1], [1, 1, 0]])), ValueError,
     r"attention_mask: pass it with token ids, not with text"),
    # ---- forward options
    ("return-type", lambda e: e.llama(e.tokens, return_type="logit"), ValueError,
     r"return_type must be one of \('logits', 'loss', 'both', None\); got 'logit'"),
    ("loss-one-position", lambda e: e.llama(T([[1]]), return_type="loss"), ValueError,
     r"a loss needs at least 2 positions"),
    ("stop-at-layer-range", lambda e: e.llama(e.tokens, stop_at_layer=9), IndexError,
     r"stop_at_layer=9 is out of range; expected -2\.\.2"),
    ("stop-at-layer-float", lambda e: e.llama(e.tokens, stop_at_layer=1.0), TypeError,
     r"stop_at_layer must be an int layer index; got float"),
    ("stop-at-layer-bool", lambda e: e.llama(e.tokens, stop_at_layer=True), TypeError,
     r"stop_at_layer must be an int layer index; got bool"),
    ("stop-at-layer-loss", lambda e: e.llama(e.tokens, stop_at_layer=1, return_type="loss"), ValueError,
     r"return_type='loss' needs logits; stop_at_layer returns the residual stream"),
    ("start-at-layer-tokens", lambda e: e.llama(e.tokens, start_at_layer=1), ValueError,
     r"with start_at_layer, input must be the residual stream \[batch, pos, d_model=64\]"),
    ("start-at-layer-width", lambda e: e.llama(_resid(e, 32), start_at_layer=1), ValueError,
     r"input must be the residual stream \[batch, pos, d_model=64\] \(float\); got shape \(2, 6, 32\)"),
    ("start-at-layer-range", lambda e: e.llama(_resid(e), start_at_layer=2), IndexError,
     r"start_at_layer=2 is out of range; expected -2\.\.1"),
    ("start-tokens-shape", lambda e: e.llama(_resid(e), start_at_layer=1, tokens=T([[1, 2]])), ValueError,
     r"tokens has shape \(1, 2\); expected \(2, 6\)"),
    ("tokens-without-start", lambda e: e.llama(e.tokens, tokens=e.tokens), ValueError,
     r"tokens= is only for start_at_layer runs"),
    ("stop-before-start", lambda e: e.llama(_resid(e), start_at_layer=1, stop_at_layer=1), ValueError,
     r"stop_at_layer=1 must come after start_at_layer=1"),
    ("start-loss-without-tokens", lambda e: e.llama(_resid(e), start_at_layer=1, return_type="loss"), ValueError,
     r"a loss needs the token ids: pass tokens= with start_at_layer"),
    # ---- text
    ("to-tokens-int", lambda e: e.llama.to_tokens(123), TypeError, r"text must be a string or a non-empty list"),
    ("to-tokens-empty-list", lambda e: e.llama.to_tokens([]), TypeError, r"text must be a string or a non-empty"),
    ("to-tokens-padding-side", lambda e: e.llama.to_tokens(["a", "bc"], padding_side="middle"), ValueError,
     r"padding_side must be 'right' or 'left', got 'middle'"),
    ("to-tokens-empty-text", lambda e: e.llama.to_tokens("", prepend_bos=False), ValueError,
     r"text 0 \(''\) tokenises to nothing"),
    ("to-single-token-many", lambda e: e.llama.to_single_token(" Paris"), ValueError,
     r"' Paris' is not a single token: it tokenises to 6 tokens"),
    ("to-single-token-int", lambda e: e.llama.to_single_token(5), TypeError, r"string must be a str; got int"),
    ("last-positions-1d", lambda e: e.llama.last_positions(torch.ones(3)), ValueError,
     r"attention_mask must be a \[batch, pos\] tensor; got shape \(3,\)"),
    ("last-positions-empty-row", lambda e: e.llama.last_positions(T([[1, 1], [0, 0]])), ValueError,
     r"attention_mask: rows \[1\] have no real token"),
    # ---- layers, sites, vocabulary
    ("check-layers-bool", lambda e: e.llama.check_layers(True), TypeError,
     r"layers must be a layer index or a sequence of them; got bool"),
    ("check-layers-float", lambda e: e.llama.check_layers(1.5), TypeError, r"layers must be a layer index"),
    ("check-layers-bool-item", lambda e: e.llama.check_layers([0, True]), TypeError,
     r"layers: True is not a layer index \(expected an int, not bool\)"),
    ("check-layers-float-item", lambda e: e.llama.check_layers([0, 1.0]), TypeError,
     r"layers: 1\.0 is not a layer index"),
    ("check-layers-range", lambda e: e.llama.check_layers([5]), IndexError,
     r"layers: layer 5 is out of range; this model has 2 layers"),
    ("check-layers-numpy-range", lambda e: e.llama.check_layers(np.int64(5)), IndexError,
     r"layers: layer 5 is out of range"),
    ("check-layers-empty", lambda e: e.llama.check_layers([]), ValueError, r"layers is empty; pass None for every"),
    ("check-layers-string", lambda e: e.llama.check_layers("0"), TypeError, r"layers must be a layer index"),
    ("check-layer-list", lambda e: e.llama.check_layer([0, 1]), TypeError, r"layer must be one layer index"),
    ("components-range", lambda e: e.llama.components(7), IndexError, r"layer: layer 7 is out of range"),
    ("components-float", lambda e: e.llama.components(1.0), TypeError, r"layer must be one layer index \(an int\)"),
    ("attention-patterns-empty", lambda e: e.llama.attention_patterns(e.tokens, layers=[]), ValueError,
     r"layers is empty"),
    ("attention-patterns-bool", lambda e: e.llama.attention_patterns(e.tokens, layers=True), TypeError,
     r"layers must be a layer index or a sequence of them; got bool"),
    ("attention-patterns-tensor-range", lambda e: e.llama.attention_patterns(e.tokens, layers=T([0, 3])),
     IndexError, r"layers: layer 3 is out of range"),
    ("attention-patterns-mamba-empty", lambda e: e.mamba.attention_patterns(e.tokens, layers=[]), ValueError,
     r"layers is empty"),
    ("apply-ln1-width", lambda e: e.llama.apply_ln1(0, torch.zeros(3, 32)), ValueError,
     r"x must be a tensor \[\.\.\., d_model=64\]; got \(3, 32\)"),
    ("apply-ln1-layer", lambda e: e.llama.apply_ln1(5, torch.zeros(3, 64)), IndexError,
     r"layer: layer 5 is out of range"),
    ("apply-ln-final-list", lambda e: e.llama.apply_ln_final([0.0] * 64), ValueError,
     r"x must be a tensor \[\.\.\., d_model=64\]; got list"),
    ("apply-mlp-mamba", lambda e: e.mamba.apply_mlp(0, torch.zeros(3, 64)), CapabilityError,
     r"apply_mlp: this mamba model has no MLP \(see has_mlp\)"),
    ("w-q-mamba", lambda e: e.mamba2.W_Q, CapabilityError, r"W_Q: this mamba2 model has no attention heads"),
    ("attention-patterns-needs-heads", lambda e: _no_heads(e), CapabilityError, r"has no attention patterns"),
    # ---- generation
    ("generate-negative", lambda e: e.llama.generate(e.tokens, max_new_tokens=-1), ValueError,
     r"max_new_tokens must be a non-negative int; got -1"),
    ("generate-float", lambda e: e.llama.generate(e.tokens, max_new_tokens=2.5), ValueError,
     r"max_new_tokens must be a non-negative int; got 2\.5"),
    ("generate-bool", lambda e: e.llama.generate(e.tokens, max_new_tokens=True), ValueError,
     r"max_new_tokens must be a non-negative int; got True"),
    ("generate-temperature", lambda e: e.llama.generate(e.tokens, 2, do_sample=True, temperature=0), ValueError,
     r"temperature must be > 0; got 0"),
    ("generate-temperature-inf", lambda e: e.llama.generate(e.tokens, 2, temperature=float("inf")), ValueError,
     r"temperature must be > 0; got inf"),
    ("generate-top-k", lambda e: e.llama.generate(e.tokens, 2, top_k=0), ValueError,
     r"top_k must be a positive int or None; got 0"),
    ("generate-top-k-bool", lambda e: e.llama.generate(e.tokens, 2, top_k=True), ValueError,
     r"top_k must be a positive int or None; got True"),
    ("generate-top-p", lambda e: e.llama.generate(e.tokens, 2, top_p=1.5), ValueError,
     r"top_p must be in \(0, 1\] or None; got 1\.5"),
    ("generate-right-padding", lambda e: e.llama.generate(e.tokens, 2, attention_mask=T([[1] * 6, [1] * 5 + [0]])),
     ValueError, r"generate needs left padding"),
    ("generate-mask-with-text", lambda e: e.llama.generate("ab", 2, attention_mask=T([[1, 1, 1]])), ValueError,
     r"attention_mask: pass it with token ids, not with text"),
]


def _no_heads(e):
    from interp.models.base import HookedModel

    class NoHeads(HookedModel):
        arch, n_layers = "toy", 1

    return NoHeads().attention_patterns(e.tokens)
