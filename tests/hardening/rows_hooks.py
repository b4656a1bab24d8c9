"""Bad hooks, hook specs and names filters (every row also checks that nothing stays attached)."""

import torch

SITE = "blocks.0.hook_mlp_out"


def _run(e, fn, site=SITE, model="llama"):
    return e.model(model).run_with_hooks(e.tokens, fwd_hooks=[(site, fn)])


def _backward_without_grad(e):
    with torch.no_grad(), e.llama.hooks(bwd_hooks=[(SITE, lambda g, hook: None)]):
        e.llama(e.tokens)


def _enter(e, **kw):
    with e.llama.hooks(**kw):
        pass


ROWS = [
    ("fwd-hooks-string", lambda e: _enter(e, fwd_hooks=SITE), TypeError,
     r"fwd_hooks must be a list of \(name_or_predicate, fn\) pairs; got str"),
    ("fwd-hooks-not-pair", lambda e: _enter(e, fwd_hooks=[SITE]), TypeError,
     r"fwd_hooks\[0\] must be a \(name_or_predicate, fn\) pair"),
    ("fwd-hooks-fn-not-callable", lambda e: _enter(e, fwd_hooks=[(SITE, 5)]), TypeError,
     r"fwd_hooks\[0\] must be a \(name_or_predicate, fn\) pair"),
    ("fwd-hooks-dict", lambda e: _enter(e, fwd_hooks={SITE: print}), TypeError,
     r"fwd_hooks must be a list of \(name_or_predicate, fn\) pairs; got dict"),
    ("bwd-hooks-not-pair", lambda e: _enter(e, bwd_hooks=[(SITE,)]), TypeError,
     r"bwd_hooks\[0\] must be a \(name_or_predicate, fn\) pair"),
    ("site-unknown", lambda e: _enter(e, fwd_hooks=[("blocks.1.hook_resid_pots", print)]), KeyError,
     r"unknown hook site 'blocks\.1\.hook_resid_pots'.*Did you mean 'blocks\.1\.hook_resid_post'"),
    ("site-layer-range", lambda e: _enter(e, fwd_hooks=[("blocks.7.hook_resid_pre", print)]), KeyError,
     r"site 'blocks\.7\.hook_resid_pre': layer 7 is out of range; this llama model has layers 0\.\.1"),
    ("site-mamba-on-llama", lambda e: _enter(e, fwd_hooks=[("blocks.0.mixer.hook_ssm_state", print)]), KeyError,
     r"unknown hook site 'blocks\.0\.mixer\.hook_ssm_state' for this llama model"),
    ("site-attention-on-mamba", lambda e: _run(e, print, "blocks.0.attn.hook_pattern", "mamba"), KeyError,
     r"unknown hook site 'blocks\.0\.attn\.hook_pattern' for this mamba model"),
    ("hook-returns-str", lambda e: _run(e, lambda a, hook: "x"), TypeError,
     r"returned str; expected a Tensor or None"),
    ("hook-returns-shape", lambda e: _run(e, lambda a, hook: a[..., 0]), ValueError,
     r"at 'blocks\.0\.hook_mlp_out' returned shape \(2, 6\); expected \(2, 6, 64\)"),
    ("hook-returns-int", lambda e: _run(e, lambda a, hook: a.long()), TypeError,
     r"returned dtype torch\.int64; expected a floating-point tensor"),
    ("hook-returns-bool", lambda e: _run(e, lambda a, hook: a > 0), TypeError, r"returned dtype torch\.bool"),
    ("hook-returns-complex", lambda e: _run(e, lambda a, hook: a.to(torch.complex64)), TypeError,
     r"returned dtype torch\.complex64; expected a floating-point tensor"),
    ("hook-returns-int-pattern", lambda e: _run(e, lambda a, hook: a.round().int(), "blocks.1.attn.hook_pattern"),
     TypeError, r"at 'blocks\.1\.attn\.hook_pattern' returned dtype torch\.int32"),
    ("hook-returns-int-mamba", lambda e: _run(e, lambda a, hook: a.long(), "blocks.0.mixer.hook_dt", "mamba"),
     TypeError, r"at 'blocks\.0\.mixer\.hook_dt' returned dtype torch\.int64"),
    ("hook-returns-shape-mamba2", lambda e: _run(e, lambda a, hook: a[:, :1], "blocks.1.mixer.hook_ssm_state",
                                                 "mamba2"),
     ValueError, r"at 'blocks\.1\.mixer\.hook_ssm_state' returned shape"),
    ("hook-raises", lambda e: _run(e, lambda a, hook: 1 / 0), ZeroDivisionError, r"division by zero"),
    ("bwd-hook-under-no-grad", _backward_without_grad, RuntimeError,
     r"backward hook at 'blocks\.0\.hook_mlp_out': gradients are off"),
    ("run-with-hooks-bwd", lambda e: e.llama.run_with_hooks(e.tokens, bwd_hooks=[(SITE, print)]), TypeError,
     r"run_with_hooks: backward hooks must outlive the forward pass"),
    ("names-filter-int", lambda e: e.llama.run_with_cache(e.tokens, names_filter=3), TypeError,
     r"names_filter must be None, a site name, a list of names or a predicate; got int"),
    ("names-filter-unknown", lambda e: e.llama.run_with_cache(e.tokens, names_filter=["blocks.0.attn.hook_patern"]),
     KeyError, r"Did you mean 'blocks\.0\.attn\.hook_pattern'"),
    ("names-filter-unreachable", lambda e: e.llama.run_with_cache(e.tokens, names_filter=["blocks.1.hook_resid_post"],
                                                                  stop_at_layer=1),
     ValueError, r"sites \['blocks\.1\.hook_resid_post'\] are never reached by this run \(stop_at_layer=1"),
]
