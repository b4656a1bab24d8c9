"""``interp patch``: an activation-patching sweep of one site, written as a self-contained HTML page and JSON."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _patch(args: argparse.Namespace) -> int:
    from interp.models import load_model
    from interp.patching import logit_diff, sweep
    from interp.patching.sites import SITES

    if args.site not in SITES:
        raise KeyError(f"--site {args.site!r} is not a patchable site; expected one of {', '.join(SITES)}")
    if not args.out and not args.json:
        raise ValueError("nothing to write: pass --out FILE.html and/or --json FILE.json")
    model = load_model(args.model)
    metric = logit_diff(args.answer, args.wrong)
    result = sweep(model, args.clean, args.corrupt, metric, args.site, batch_size=args.batch_size,
                   memory_budget=args.memory_budget, progress=not args.quiet)
    if args.out:
        result.save_html(args.out)
    if args.json:
        result.save_json(args.json)
    print(f"patched {args.site} over {' x '.join(str(s) for s in result.values.shape)} cells; clean "
          f"{result.clean_metric:.4f}, corrupted {result.corrupt_metric:.4f}, max {float(result.values.max()):.4f}"
          + (f"; wrote {args.out}" if args.out else "") + (f"; wrote {args.json}" if args.json else ""))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "patch", help="activation patching of one site (clean into corrupted), as HTML and JSON",
        description="Patch each cell of one site from the clean prompt into the corrupted prompt and score it "
                    "with logit(answer) - logit(wrong) at the last position.")
    p.add_argument("--model", required=True, help="'smollm2' or a local HF checkpoint folder")
    p.add_argument("--clean", required=True, help="clean prompt")
    p.add_argument("--corrupt", required=True, help="corrupted prompt (same number of tokens)")
    p.add_argument("--answer", required=True, help="correct answer token, e.g. ' Paris' (one token)")
    p.add_argument("--wrong", required=True, help="wrong answer token, e.g. ' Rome' (one token)")
    p.add_argument("--site", default="resid", help="site keyword: resid, attn_out, mlp_out, heads, ... (default resid)")
    p.add_argument("--out", help="HTML report to write")
    p.add_argument("--json", help="JSON result to write")
    p.add_argument("--batch-size", type=int, default=None, help="patched variants per forward (default: memory)")
    p.add_argument("--memory-budget", default=None,
                   help="memory for caches and batched forwards: bytes, '2GiB', '1.5G', '80%%' or 'off'")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_patch)
