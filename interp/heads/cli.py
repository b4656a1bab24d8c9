"""``interp heads``: find and causally validate attention heads; write an HTML report and a JSON file.

    interp heads --model smollm2 --out report.html --json scores.json [--kinds a,b] [--top-k N] [--seed S]

One flag per :class:`~interp.heads.config.HeadsConfig` field. Prints a one-line summary per kind.
"""

from __future__ import annotations

import argparse

from interp.heads.config import KINDS, HeadsConfig

__all__ = ["register", "run"]

_DEFAULT = HeadsConfig()


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers; got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers; got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "heads", help="find previous-token, duplicate-token, induction, retrieval, successor and n-gram heads",
        description="Score every attention head (or Mamba head / channel group) for six kinds, ablate each kind's "
                    "top-k heads against random heads on that kind's task, and write an offline HTML report and a "
                    "JSON file.")
    p.add_argument("--model", required=True, help="'smollm2' or a local Hugging Face checkpoint folder")
    p.add_argument("--out", help="HTML report to write (one self-contained file)")
    p.add_argument("--json", help="JSON file of scores and validation to write")
    p.add_argument("--kinds", default=None, help=f"comma-separated kinds (default: all of {','.join(KINDS)})")
    p.add_argument("--top-k", type=int, default=None,
                   help="heads per kind reported and ablated (default 5, at most an eighth of the model's heads)")
    p.add_argument("--seed", type=int, default=_DEFAULT.seed, help="seed of every probe and random draw (default 0)")
    p.add_argument("--draws", type=int, default=None,
                   help="random k-head draws per kind (default 5, at most the distinct sets)")
    p.add_argument("--ablation", choices=("mean", "zero"), default=None, help="ablation in validation (default mean)")
    p.add_argument("--repeat-batch", type=int, default=None, help="rows of repeated random tokens (default 8)")
    p.add_argument("--repeat-half", type=int, default=None,
                   help="tokens per half of a repeated row (default 40, at most the usable vocabulary and half the "
                        "context)")
    p.add_argument("--thorough", action="store_true",
                   help="larger validation samples, every successor prompt, haystacks up to 2048 tokens (about 2.4x "
                        "the work; same top heads and verdicts on SmolLM2)")
    p.add_argument("--validation-batch", type=int, default=None,
                   help="rows of fresh validation data (default 2; 4 with --thorough)")
    p.add_argument("--ngram-batch", type=int, default=None, help="Markov-chain rows (default 8)")
    p.add_argument("--ngram-length", type=int, default=None, help="tokens per Markov-chain row (default 128)")
    p.add_argument("--ngram-symbols", type=int, default=None, help="Markov-chain alphabet size (default 6)")
    p.add_argument("--ngram-stickiness", type=float, default=None,
                   help="probability of a context's preferred successor in the Markov chains (default 0.6)")
    p.add_argument("--retrieval-lengths", type=_ints, default=None,
                   help="comma-separated haystack lengths in tokens (default 256,512; --thorough: 256,512,1024,2048)")
    p.add_argument("--retrieval-depths", type=_floats, default=None,
                   help="comma-separated needle depths in [0, 1] (default 0.25,0.75)")
    p.add_argument("--retrieval-mode", choices=("auto", "text", "tokens"), default=None,
                   help="haystack kind (default auto: text when the tokenizer encodes it losslessly)")
    p.add_argument("--retrieval-validation-trials", type=int, default=None,
                   help="reproduced trials used to validate retrieval heads, shortest first (default 1; 2 with "
                        "--thorough)")
    p.add_argument("--successor-window", type=int, default=None, help="items per successor prompt (default 4)")
    p.add_argument("--successor-prompts", type=int, default=None,
                   help="successor validation prompts per task, evenly spaced (default 8; 0 = all, as --thorough)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


_OPTIONS = ("draws", "ablation", "repeat_batch", "repeat_half", "validation_batch", "ngram_batch", "ngram_length",
            "ngram_symbols", "ngram_stickiness", "retrieval_lengths", "retrieval_depths", "retrieval_mode",
            "retrieval_validation_trials", "successor_window", "successor_prompts")


def run(args: argparse.Namespace) -> int:
    from interp.heads.config import check_kinds
    from interp.heads.detect import detect_config
    from interp.heads.report import top_heads
    from interp.models.loading import load_model

    if not args.out and not args.json:
        raise ValueError("nothing to write: pass --out report.html and/or --json scores.json")
    kinds = check_kinds(args.kinds)  # fail on a bad kind before loading the model
    model = load_model(args.model)
    options = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k) is not None}
    cfg = HeadsConfig.for_model(model, thorough=args.thorough, kinds=kinds, top_k=args.top_k, seed=args.seed,
                                **options)
    for name, why in cfg.derived:
        print(f"default {name}={getattr(cfg, name)!r}: {why}")
    report = detect_config(model, cfg, name=str(args.model), progress=not args.no_progress)
    for kind in cfg.kinds:
        if kind in report.skipped:
            print(f"{kind:16s} skipped: {report.skipped[kind]}")
            continue
        heads = ", ".join(f"L{h.layer}.{h.head}={h.score:.2f}" for h in top_heads(report.scores[kind], 3))
        print(f"{kind:16s} {heads}  |  {report.validation[kind].verdict}")
        print(f"{'':16s} {report.finding(kind)}")
    if args.out:
        print(f"wrote {report.save_html(args.out)}")
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    return 0
