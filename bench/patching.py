"""Patching and causal tracing on SmolLM2: the batched engine against one forward pass per cell, same process.

1. Full residual sweep (every layer x every position of the Eiffel prompt, ``hook_resid_pre``, metric
   logit(" Paris") - logit(" Rome")): ``interp.patching.patch_residual`` against TransformerLens's
   ``patching.get_act_patch_resid_pre`` on a ``TransformerBridge`` booted from the same cached SmolLM2 folder
   (``enable_compatibility_mode``), and against a per-cell loop over the Hugging Face model (one hooked forward per
   cell). Goal: >= 15x TransformerLens; results identical to <= 1e-4.
2. Causal trace (Meng et al. 2022; 10 noise samples, every layer x token): ``interp.tracing.causal_trace`` against
   a per-cell loop in ROME's style (one forward of the 10 noised samples per cell with the clean state restored).
   Goal: >= 10x; identical to <= 1e-4.

Runs alternate between the methods; medians of ``--repeats`` runs. Use the CPU lock:
``flock /tmp/interp-cpu.lock python bench/patching.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import interp
from interp import patching, tracing
from interp.tracing.subject import subject_span
from interp.tracing.trace import subject_noise

CLEAN = "The Eiffel Tower is located in the city of"
CORRUPT = "The Colosseum is located in the city of"


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def residual_loop(model, clean, corrupt, metric) -> torch.Tensor:
    """One hooked forward per (layer, position): the plain reference."""
    T = clean.shape[1]
    names = [model.components(layer)["resid_pre"] for layer in range(model.n_layers)]
    _, cache = model.run_with_cache(clean, names_filter=names)
    out = torch.empty(model.n_layers, T)
    with torch.no_grad():
        for layer, name in enumerate(names):
            for pos in range(T):
                def hook(act, hook, pos=pos, name=name):
                    act = act.clone()
                    act[:, pos] = cache[name][:, pos]
                    return act
                out[layer, pos] = metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])).mean()
    return out


def tl_sweep(bridge, clean, corrupt, metric) -> torch.Tensor:
    from transformer_lens import patching as tl_patching

    with torch.no_grad():
        _, cache = bridge.run_with_cache(clean)
        return tl_patching.get_act_patch_resid_pre(bridge, corrupt, cache, lambda logits: metric(logits).mean())


def trace_loop(model, prompt, subject, target_id, samples=10, noise=3.0, seed=0) -> torch.Tensor:
    """ROME's loop: for each (layer, token), one forward of the noised samples with the clean state restored."""
    tokens = model.to_tokens(prompt)
    T = tokens.shape[1]
    start, stop = subject_span(model, tokens, subject)
    eps, _ = subject_noise(model, samples, stop - start, noise, seed)
    names = [model.components(layer)["resid_post"] for layer in range(model.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=names)

    def add_noise(act, hook):
        act = act.clone()
        act[:, start:stop] += eps
        return act

    corrupt = tokens.repeat(samples, 1)
    out = torch.empty(model.n_layers, T)
    with torch.no_grad():
        for layer, name in enumerate(names):
            for pos in range(T):
                def restore(act, hook, pos=pos, name=name):
                    act = act.clone()
                    act[:, pos] = cache[name][:, pos]
                    return act
                logits = model.run_with_hooks(corrupt, fwd_hooks=[("hook_embed", add_noise), (name, restore)])
                out[layer, pos] = logits[:, -1].softmax(-1)[:, target_id].mean()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each method (interleaved)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-tl", action="store_true", help="leave TransformerLens out (it takes ~1 min a run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = interp.load_model("smollm2")
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)
    metric = patching.logit_diff(" Paris", " Rome").bind(model)
    methods = {"ours": lambda: patching.patch_residual(model, clean, corrupt, metric, progress=False),
               "HF loop": lambda: residual_loop(model, clean, corrupt, metric)}
    if not args.skip_tl:
        from transformer_lens.model_bridge import TransformerBridge

        from interp.models.smollm2 import cache_dir

        bridge = TransformerBridge.boot_transformers(str(cache_dir() / "smollm2-135m-instruct-f32"), device="cpu")
        bridge.enable_compatibility_mode()
        methods["TransformerLens"] = lambda: tl_sweep(bridge, clean, corrupt, metric)
    print(f"residual sweep: {model.n_layers} layers x {clean.shape[1]} positions, {torch.get_num_threads()} threads")
    times, outs = {k: [] for k in methods}, {}
    methods["ours"]()  # warm-up (also builds nothing else)
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t, outs[name] = _timed(fn)
            times[name].append(t)
    ours = statistics.median(times["ours"])
    for name in methods:
        med = statistics.median(times[name])
        diff = float((outs[name] - outs["ours"]).abs().max())
        print(f"  {name:16s} {med:8.3f} s   ratio to ours {med / ours:7.2f}x   max |diff| {diff:.2e}")

    target = model.to_single_token(" Paris")
    trace = {"ours": lambda: tracing.causal_trace(model, CLEAN, "Eiffel Tower", " Paris", progress=False).scores,
             "per-cell loop": lambda: trace_loop(model, CLEAN, "Eiffel Tower", target)}
    print(f"causal trace: {model.n_layers} layers x {clean.shape[1]} tokens x 10 samples")
    times, outs = {k: [] for k in trace}, {}
    for _ in range(args.repeats):
        for name, fn in trace.items():
            t, outs[name] = _timed(fn)
            times[name].append(t)
    ours = statistics.median(times["ours"])
    for name in trace:
        med = statistics.median(times[name])
        diff = float((outs[name] - outs["ours"]).abs().max())
        print(f"  {name:16s} {med:8.3f} s   ratio to ours {med / ours:7.2f}x   max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
