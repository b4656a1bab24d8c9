"""``interp trace``: a causal trace of one factual prompt, written as a self-contained HTML page and JSON."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _trace(args: argparse.Namespace) -> int:
    from interp.models import load_model
    from interp.tracing import causal_trace

    if not args.out and not args.json:
        raise ValueError("nothing to write: pass --out FILE.html and/or --json FILE.json")
    model = load_model(args.model)
    result = causal_trace(model, args.prompt, args.subject, args.target, samples=args.samples, noise=args.noise,
                          site=args.site, window=args.window, restore=args.restore, sever=args.sever, seed=args.seed,
                          memory_budget=args.memory_budget, progress=not args.quiet)
    if args.out:
        result.save_html(args.out)
    if args.json:
        result.save_json(args.json)
    s = result.summary()
    print(f"target {result.target!r}: P clean {result.p_clean:.4f}, corrupted {result.p_corrupt:.4f}, total effect "
          f"{result.total_effect:.4f}; peak IE last subject token {s['last_subject_peak_ie']:.4f} (layer "
          f"{s['last_subject_peak_layer']}), last token {s['last_token_peak_ie']:.4f} (layer "
          f"{s['last_token_peak_layer']})" + (f"; wrote {args.out}" if args.out else "")
          + (f"; wrote {args.json}" if args.json else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "trace", help="causal tracing of a factual prompt (Meng et al. 2022), as HTML and JSON",
        description="Noise the subject's token embeddings, restore clean hidden states one (layer, token) at a "
                    "time and report the indirect effect on P(target).")
    p.add_argument("--model", required=True, help="'smollm2' or a local HF checkpoint folder")
    p.add_argument("--prompt", required=True, help="the factual prompt, e.g. 'The Eiffel Tower is located in the "
                                                   "city of'")
    p.add_argument("--subject", required=True, help="the subject in the prompt, without its article")
    p.add_argument("--target", default=None, help="answer token, e.g. ' Paris' (default: the model's prediction)")
    p.add_argument("--site", default="resid", help="resid, mlp, attn, or a Mamba component (conv, ssm, gate, out)")
    p.add_argument("--restore", default="token", choices=["token", "span"], help="restore single tokens or the "
                                                                                 "subject span at once")
    p.add_argument("--window", type=int, default=10, help="layers restored together for non-resid sites")
    p.add_argument("--sever", default=None, help="freeze this sublayer (mlp, attn, ...) at corrupted values")
    p.add_argument("--samples", type=int, default=10, help="noise samples (default 10)")
    p.add_argument("--noise", type=float, default=3.0, help="noise std as a multiple of std(W_E) (default 3)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--memory-budget", default=None,
                   help="memory for caches and batched forwards: bytes, '2GiB', '1.5G', '80%%' or 'off'")
    p.add_argument("--out", help="HTML report to write")
    p.add_argument("--json", help="JSON result to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_trace)
