"""``interp lens`` (the logit lens, or a trained tuned lens with ``--tuned``, on one prompt) and ``interp tuned-lens``
(train a tuned lens on the builtin corpus and write it as a folder, with its held-out evaluation)."""

from __future__ import annotations

import argparse
import os

__all__ = ["register"]

_CI_SIZES = {"steps": 2, "batch_size": 2, "context_length": 32, "max_rows": 8}
"""``interp tuned-lens`` defaults under ``CI=true`` (a smoke-sized run)."""


def _lens(args: argparse.Namespace) -> int:
    from interp.lenses import TunedLens, logit_lens
    from interp.models import load_model

    if not args.out and not args.json:
        raise ValueError("nothing to write: pass --out FILE.html and/or --json FILE.json")
    if args.answer is not None and args.answer_id is not None:
        raise ValueError("pass --answer or --answer-id, not both")
    model = load_model(args.model)
    tuned = TunedLens.load(args.tuned, model) if args.tuned else None
    answer = args.answer_id if args.answer_id is not None else args.answer
    result = logit_lens(model, args.prompt, answer, position=args.position, top_k=args.top_k, lens=tuned)
    if args.out:
        result.save_html(args.out)
    if args.json:
        result.save_json(args.json)
    first = result.first_layer_top()
    print(f"{result.lens} lens: answer {result.answer!r} at position {result.position}: final P "
          f"{float(result.answer_prob[-1]):.4f}; top-1 from {result.labels[first] if first is not None else 'never'}"
          + (f"; wrote {args.out}" if args.out else "") + (f"; wrote {args.json}" if args.json else ""))
    return 0


def _train(args: argparse.Namespace) -> int:
    from interp.lenses import TrainConfig, TunedLens
    from interp.models import load_model

    small = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    fields = {}
    for key in ("steps", "batch_size", "context_length", "max_rows", "lr", "heldout", "seed"):
        value = getattr(args, key)
        if value is None and small and key in _CI_SIZES:
            value = _CI_SIZES[key]
        if value is not None:
            fields[key] = value
    config = TrainConfig(**fields)
    model = load_model(args.model)
    lens = TunedLens.train(model, config=config, checkpoint=args.checkpoint, progress=not args.quiet)
    lens.save(args.out)
    info = lens.training_info
    line = (f"trained {info['steps']} steps on {info['train_tokens']} tokens in {info['seconds']:.1f} s; wrote "
            f"{args.out}")
    if lens.heldout is not None:
        h = lens.heldout
        wins = h.tuned_wins()
        line += (f"; held-out KL ({h.tokens} tokens) mean logit {float(h.logit_kl[:-1].mean()):.3f}, tuned "
                 f"{float(h.tuned_kl[:-1].mean()):.3f} nats; tuned better at {sum(wins)}/{len(wins)} layers")
        if args.html:
            h.save_html(args.html)
            line += f"; wrote {args.html}"
    print(line)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lens", help="logit lens (or a tuned lens) on one prompt, as HTML and JSON",
        description="Decode every layer's residual stream through the final norm and unembedding (nostalgebraist "
                    "2020); with --tuned, through a trained tuned lens's translators first (Belrose et al. 2023).")
    p.add_argument("--model", required=True, help="'smollm2' or a local HF checkpoint folder")
    p.add_argument("--prompt", required=True, help="the prompt")
    p.add_argument("--answer", default=None, help="token to track, e.g. ' Paris' (default: the model's prediction)")
    p.add_argument("--answer-id", type=int, default=None, help="token id to track instead of --answer")
    p.add_argument("--position", type=int, default=-1, help="position whose prediction is tracked (default -1)")
    p.add_argument("--top-k", type=int, default=5, help="top tokens listed per layer")
    p.add_argument("--tuned", default=None, help="a tuned-lens folder (from `interp tuned-lens`)")
    p.add_argument("--out", help="HTML report to write")
    p.add_argument("--json", help="JSON result to write")
    p.set_defaults(func=_lens)

    t = subparsers.add_parser(
        "tuned-lens", help="train a tuned lens (Belrose et al. 2023) on the builtin corpus",
        description="Train one affine translator per layer so each layer's decoded distribution matches the final "
                    "layer's (KL), on standard-library docstrings; writes the lens folder and reports held-out KL "
                    "per layer against the logit lens. Under CI=true the default sizes are tiny.")
    t.add_argument("--model", required=True, help="'smollm2' or a local HF checkpoint folder")
    t.add_argument("--out", required=True, help="folder to write (lens.safetensors + lens.json)")
    t.add_argument("--steps", type=int, default=None, help="optimizer steps (default 10)")
    t.add_argument("--batch-size", type=int, default=None, help="rows per step (default 4)")
    t.add_argument("--context-length", type=int, default=None, help="tokens per row (default 128)")
    t.add_argument("--max-rows", type=int, default=None, help="rows of corpus to use (default: what the run needs)")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 5e-4)")
    t.add_argument("--heldout", type=float, default=None, help="held-out fraction of rows (default 0.1)")
    t.add_argument("--seed", type=int, default=None, help="split and batch-order seed")
    t.add_argument("--checkpoint", default=None, help="folder to checkpoint in and resume from")
    t.add_argument("--html", default=None, help="held-out KL report (HTML) to write")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_train)
