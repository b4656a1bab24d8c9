"""``interp sae train`` / ``interp sae eval`` / ``interp sae inspect``.

``register(subparsers)`` adds the ``sae`` command to the toolkit's CLI; each verb sets ``func`` (call
``args.func(args)``). ``train`` flags are generated 1:1 from the ``TrainConfig`` fields (``--d-sae`` for ``d_sae``)
with the field docstrings as help (``--site-in`` / ``--site-out`` train a transcoder). ``eval`` and ``inspect`` use
the model and site the SAE records unless told otherwise.
Data-parallel: ``torchrun --nproc_per_node 2 -m interp.saes.cli train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from interp.saes.config import TrainConfig, field_docs

__all__ = ["add_dataclass_arguments", "config_from_args", "main", "register"]

_SCALARS = {int: int, float: float, str: str}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field: required when the field has no default; help from the field docstring."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        tp, help_text = hints[f.name], docs.get(f.name, "").replace("%", "%%")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kw: dict = {"help": f"{help_text} (default: {str(default).replace('%', '%%')})" if has_default else help_text}
        args = typing.get_args(tp)
        optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else tp
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif base is dict:
            kw["type"] = _json_object
            kw["metavar"] = "JSON"
        elif typing.get_origin(base) is tuple:
            kw.update(nargs=len(typing.get_args(base)), type=typing.get_args(base)[0])
        elif base in _SCALARS:
            kw["type"] = _none_or(_SCALARS[base]) if optional else _SCALARS[base]
        else:
            raise TypeError(f"field {f.name}: no command-line form for type {tp!r}")
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if has_default:
            kw["default"] = default
        else:
            kw["required"] = True
        parser.add_argument(_flag(f.name), dest=f.name, **kw)


def _none_or(conv):
    def parse(text: str):
        return None if text.lower() == "none" else conv(text)
    parse.__name__ = conv.__name__
    return parse


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"aux_coefficient\": 0.03}}': {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object; got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` a parsed ``interp sae train`` command describes."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def _run_train(args: argparse.Namespace) -> int:
    from interp.saes.train import train

    result = train(config_from_args(args))
    last = result.history[-1] if result.history else {}
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        print(json.dumps({"steps": result.steps, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                          **{k: last[k] for k in ("loss", "fvu", "l0", "dead_fraction") if k in last}}))
    return 0


def _load_for_tool(args: argparse.Namespace):
    """``(sae, model, site)`` for eval / inspect: the model and site default to those the SAE records."""
    import warnings

    from interp.checks import check_int
    from interp.models import load_model
    from interp.saes import load

    for flag, lo in (("context_length", 2), ("batch_size", 1), ("max_sequences", 1), ("skip_sequences", 0)):
        check_int(getattr(args, flag), _flag(flag), lo=lo)
    for flag in ("json", "html", "out"):
        out = getattr(args, flag, None)
        if out is not None and Path(out).is_dir():
            raise IsADirectoryError(f"--{flag} {out} is a folder; expected a file path to write")
    try:
        sae = load(args.sae)
    except FileNotFoundError as e:
        message = str(e)
        raise FileNotFoundError("--sae" + message[len("path"):] if message.startswith("path ") else
                                f"--sae {args.sae}: {message}") from None
    recorded = sae.metadata.model_name if sae.metadata is not None else None
    spec = args.model if args.model is not None else recorded
    if spec is None:
        raise ValueError(f"--model: the SAE in {args.sae} records no model (cfg.json metadata.model_name); pass "
                         "--model")
    if recorded is not None and args.model is not None and args.model != recorded:
        warnings.warn(f"--model {args.model!r} is not the model the SAE records ({recorded!r})", stacklevel=2)
    if sae.cfg.d_out is not None:
        if args.site is not None:
            raise ValueError("--site is for SAEs; give a transcoder's sites with --site-in and --site-out")
        site = None if args.site_in is None and args.site_out is None else (args.site_in, args.site_out)
        if site is not None and None in site:
            raise ValueError("give both --site-in and --site-out (or neither, for the recorded sites)")
    else:
        if args.site_in is not None or args.site_out is not None:
            raise ValueError("--site-in / --site-out are for transcoders; this is an SAE: use --site")
        site = args.site
    return sae, load_model(spec), site


def _tokens(args: argparse.Namespace, model):
    from interp.saes.store import load_tokens

    tokens = load_tokens(args.dataset, model.tokenizer, args.context_length)[args.skip_sequences:]
    if tokens.shape[0] == 0:
        raise ValueError(f"--skip-sequences {args.skip_sequences} leaves no sequence of the dataset")
    return tokens


def _with_flag_names(run):
    """The CLI's words in a site-mismatch error: ``--allow-site-mismatch``, not the Python argument."""

    def wrapped(args: argparse.Namespace) -> int:
        from interp.saes.metadata import SiteMismatchError

        try:
            return run(args)
        except SiteMismatchError as err:
            words = str(err).replace("pass allow_site_mismatch=True", "pass --allow-site-mismatch")
            raise SiteMismatchError(words.replace("leave site out", "leave --site out")) from None

    return wrapped


def _run_eval(args: argparse.Namespace) -> int:
    from interp.saes.metrics import evaluate

    if args.max_norm_ratio is not None and not args.max_norm_ratio > 1:
        raise ValueError(f"--max-norm-ratio must be a number > 1 (a multiple of the median norm); got "
                         f"{args.max_norm_ratio}")
    sae, model, site = _load_for_tool(args)
    result = evaluate(sae, model, site, _tokens(args, model), batch_size=args.batch_size,
                      max_sequences=args.max_sequences, skip_special=args.skip_special,
                      max_norm_ratio=args.max_norm_ratio, allow_site_mismatch=args.allow_site_mismatch,
                      progress=True)
    print(json.dumps(result.to_dict(), indent=1))
    if args.json:
        result.save_json(args.json)
    if args.html:
        result.save_html(args.html)
    return 0


def parse_latents(text: str | None) -> list[int] | None:
    """``"0-63,100,200-210"`` -> the listed latent indices; None or "all" -> None (every latent)."""
    if text is None or text.strip().lower() == "all":
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"--latents: {part!r} is not a latent index or a range like 0-63 "
                             f"(e.g. --latents 0-63,100)") from None
    return out


def _run_inspect(args: argparse.Namespace) -> int:
    from interp.saes.dashboards import inspect

    sae, model, site = _load_for_tool(args)
    dash = inspect(sae, model, _tokens(args, model), parse_latents(args.latents), n_examples=args.n_examples,
                   site=site, allow_site_mismatch=args.allow_site_mismatch, batch_size=args.batch_size,
                   max_sequences=args.max_sequences, skip_special=args.skip_special,
                   dense_threshold=args.dense_threshold, progress=True)
    dash.save_html(args.out, max_cards=args.max_cards)
    if args.json:
        dash.save_json(args.json)
    print(json.dumps({"out": args.out, "json": args.json, "n_tokens": dash.n_tokens, "dead": len(dash.dead),
                      "dense": len(dash.dense), "latents": len(dash.latents)}))
    return 0


def _tool_arguments(parser: argparse.ArgumentParser, max_sequences: int) -> None:
    parser.add_argument("--sae", required=True,
                        help="SAE folder, checkpoint folder, or checkpoint_dir of a run (its latest checkpoint)")
    parser.add_argument("--model", default=None,
                        help="model spec for interp.load_model (default: the model the SAE records)")
    parser.add_argument("--site", default=None, help="hook site (default: the site the SAE records)")
    parser.add_argument("--site-in", default=None, help="transcoders: input site (default: the recorded one)")
    parser.add_argument("--site-out", default=None, help="transcoders: output site (default: the recorded one)")
    parser.add_argument("--allow-site-mismatch", action="store_true",
                        help="allow a site other than the one the SAE was trained on")
    parser.add_argument("--dataset", required=True, help="token source: .txt, .safetensors or builtin:stdlib-docs")
    parser.add_argument("--context-length", type=int, default=128, help="tokens per sequence (default: 128)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default: 8)")
    parser.add_argument("--skip-sequences", type=int, default=0,
                        help="skip the first N sequences of the dataset, e.g. those used for training (default: 0)")
    parser.add_argument("--max-sequences", type=int, default=max_sequences,
                        help=f"sequences to use (default: {max_sequences})")
    parser.add_argument("--skip-special", action=argparse.BooleanOptionalAction, default=True,
                        help="leave BOS/EOS/pad positions out (default: on)")


def register(subparsers) -> None:
    """Add ``sae train``, ``sae eval`` and ``sae inspect`` to an ``argparse`` subparsers object."""
    sae = subparsers.add_parser("sae", help="train, evaluate and inspect sparse autoencoders and transcoders")
    verbs = sae.add_subparsers(dest="sae_command", required=True)
    tr = verbs.add_parser("train", help="train an SAE on one hook site, or a transcoder from --site-in to "
                          "--site-out (flags = TrainConfig fields)", description=TrainConfig.__doc__)
    add_dataclass_arguments(tr, TrainConfig)
    tr.set_defaults(func=_run_train)
    ev = verbs.add_parser("eval", help="evaluate an SAE: L0, FVU, dead latents, CE loss recovered, KL")
    _tool_arguments(ev, max_sequences=64)
    ev.add_argument("--max-norm-ratio", type=float, default=None,
                    help="leave positions whose activation norm exceeds this multiple of the batch median out of "
                         "the SAE metrics and interventions (massive activations; default: keep all)")
    ev.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    ev.add_argument("--html", default=None, help="write the metrics and feature-density histogram to this HTML file")
    ev.set_defaults(func=_with_flag_names(_run_eval))
    ins = verbs.add_parser("inspect", help="feature dashboards: top contexts, histograms, logit lens per latent")
    _tool_arguments(ins, max_sequences=256)
    ins.add_argument("--out", required=True, help="HTML file to write (self-contained, opens offline)")
    ins.add_argument("--json", default=None, help="also write the dashboards' data to this JSON file")
    ins.add_argument("--latents", default=None, help="latents to build dashboards for, e.g. 0-63,100 (default: all)")
    ins.add_argument("--n-examples", type=int, default=20, help="top contexts per latent (default: 20)")
    ins.add_argument("--dense-threshold", type=float, default=0.1,
                     help="density above which a latent is listed as ultra-dense (default: 0.1)")
    ins.add_argument("--max-cards", type=int, default=2000,
                     help="at most this many latent cards in the HTML (the JSON keeps all; default: 2000)")
    ins.set_defaults(func=_with_flag_names(_run_inspect))


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``main(["sae", "train", ...])`` (a leading ``sae`` may be left out); runs through
    :func:`interp.cli.main`, so any error ends in one line and exit code 2 (``--debug`` shows the traceback)."""
    from interp.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = [a for a in argv if a == "--debug"]
    argv = [a for a in argv if a != "--debug"]
    if argv and argv[0] in ("train", "eval", "inspect"):
        argv = ["sae", *argv]
    return cli_main([*debug, *argv])


if __name__ == "__main__":
    sys.exit(main())
