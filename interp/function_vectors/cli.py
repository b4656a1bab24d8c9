"""``interp function-vectors``: Todd et al. 2024's function-vector experiment on one task, as HTML and JSON."""

from __future__ import annotations

import argparse

__all__ = ["register"]

# as FVConfig's defaults and tasks.TASKS (tests/function_vectors/test_cli.py checks), so that registering the verb
# imports no torch
_TASKS = ("antonyms", "country_capital", "next_letter", "next_number")
_DEFAULTS = argparse.Namespace(k=10, n_demos=10, n_mean=100, n_cie=25, n_random=5, seed=0)


def _run(args: argparse.Namespace) -> int:
    from interp.function_vectors import FVConfig, function_vectors
    from interp.models import load_model

    if not args.out and not args.json:
        raise ValueError("nothing to write: pass --out FILE.html and/or --json FILE.json")
    config = FVConfig(k=args.k, layer=args.layer, n_demos=args.n_demos, n_mean=args.n_mean, n_cie=args.n_cie,
                      n_random=args.n_random, seed=args.seed)
    model = load_model(args.model)
    result = function_vectors(model, args.task, config, progress=not args.quiet)
    if args.out:
        result.save_html(args.out)
    if args.json:
        result.save_json(args.json)
    s = result.summary()
    heads = ", ".join(f"{la}.{h}" for la, h, _ in s["top_heads"])
    print(f"{result.task}: ICL {result.icl_accuracy:.3f} (shuffled {result.corrupt_accuracy:.3f}), zero-shot "
          f"{result.zero_shot_accuracy:.3f}, + FV at layer {result.layer} {result.fv_accuracy:.3f}, + {result.k} "
          f"random heads {result.random_accuracy:.3f}; best layer {s['best_layer']} ({s['best_layer_accuracy']:.3f});"
          f" top heads {heads}" + (f"; wrote {args.out}" if args.out else "")
          + (f"; wrote {args.json}" if args.json else ""))
    return 0


def register(subparsers) -> None:
    d, TASKS = _DEFAULTS, _TASKS
    p = subparsers.add_parser(
        "function-vectors", help="function vectors of an in-context task (Todd et al. 2024), as HTML and JSON",
        description="Mean head outputs over ICL prompts, each head's causal indirect effect on shuffled-label "
                    "prompts, and the top-k heads' summed means added to zero-shot prompts.")
    p.add_argument("--model", required=True, help="'smollm2' or a local HF checkpoint folder")
    p.add_argument("--task", required=True, choices=TASKS, help="built-in task")
    p.add_argument("--k", type=int, default=d.k, help=f"heads in the vector (default {d.k})")
    p.add_argument("--layer", type=int, default=None, help="layer receiving the vector (default n_layers // 3)")
    p.add_argument("--n-demos", type=int, default=d.n_demos, help=f"demonstrations per prompt (default {d.n_demos})")
    p.add_argument("--n-mean", type=int, default=d.n_mean, help=f"clean prompts for the means (default {d.n_mean})")
    p.add_argument("--n-cie", type=int, default=d.n_cie, help=f"corrupted prompts for the CIE (default {d.n_cie})")
    p.add_argument("--n-random", type=int, default=d.n_random, help=f"random-head draws (default {d.n_random})")
    p.add_argument("--seed", type=int, default=d.seed, help="prompt and random-head seed")
    p.add_argument("--out", help="HTML report to write")
    p.add_argument("--json", help="JSON result to write")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
