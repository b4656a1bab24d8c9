"""``interp sae train`` / ``interp sae eval``.

``register(subparsers)`` adds the ``sae`` command to the toolkit's CLI; each verb sets ``func`` (call
``args.func(args)``). ``train`` flags are generated 1:1 from the ``TrainConfig`` fields (``--d-sae`` for ``d_sae``)
with the field docstrings as help. Data-parallel: ``torchrun --nproc_per_node 2 -m interp.saes.cli train ...``.
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


def _sae_folder(path: Path) -> Path:
    """Accept an SAE folder, a checkpoint folder (with ``sae/``) or a checkpoint root (with ``latest.json``)."""
    from interp.saes.checkpoint import latest_checkpoint

    if (path / "latest.json").is_file():
        path = latest_checkpoint(path)
    if (path / "sae" / "cfg.json").is_file():
        path = path / "sae"
    if not (path / "cfg.json").is_file():
        raise FileNotFoundError(f"--sae: {path} holds no SAE (cfg.json), checkpoint (sae/) or latest.json")
    return path


def _run_eval(args: argparse.Namespace) -> int:
    from interp.checks import check_int
    from interp.models import load_model
    from interp.saes import load
    from interp.saes.metrics import evaluate

    for flag, lo in (("context_length", 2), ("batch_size", 1), ("max_sequences", 1), ("skip_sequences", 0)):
        check_int(getattr(args, flag), _flag(flag), lo=lo)
    if args.max_norm_ratio is not None and not args.max_norm_ratio > 1:
        raise ValueError(f"--max-norm-ratio must be a number > 1 (a multiple of the median norm); got "
                         f"{args.max_norm_ratio}")
    for flag in ("json", "html"):
        out = getattr(args, flag)
        if out is not None and Path(out).is_dir():
            raise IsADirectoryError(f"--{flag} {out} is a folder; expected a file path to write")
    sae = load(_sae_folder(Path(args.sae)))
    model = load_model(args.model)
    from interp.saes.store import load_tokens

    tokens = load_tokens(args.dataset, model.tokenizer, args.context_length)[args.skip_sequences:]
    if tokens.shape[0] == 0:
        raise ValueError(f"--skip-sequences {args.skip_sequences} leaves no sequence of the dataset to evaluate")
    result = evaluate(sae, model, args.site, tokens, batch_size=args.batch_size, max_sequences=args.max_sequences,
                      skip_special=args.skip_special, max_norm_ratio=args.max_norm_ratio,
                      progress=True)
    print(json.dumps(result.to_dict(), indent=1))
    if args.json:
        from interp.atomic import atomic_write_json

        atomic_write_json(result.to_dict(), args.json)
    if args.html:
        result.plot().write_html(args.html, include_plotlyjs=True)
    return 0


def register(subparsers) -> None:
    """Add ``sae train`` and ``sae eval`` to an ``argparse`` subparsers object."""
    sae = subparsers.add_parser("sae", help="train and evaluate sparse autoencoders")
    verbs = sae.add_subparsers(dest="sae_command", required=True)
    tr = verbs.add_parser("train", help="train an SAE on one hook site (flags = TrainConfig fields)",
                          description=TrainConfig.__doc__)
    add_dataclass_arguments(tr, TrainConfig)
    tr.set_defaults(func=_run_train)
    ev = verbs.add_parser("eval", help="evaluate an SAE: L0, FVU, dead latents, CE loss recovered, KL")
    ev.add_argument("--sae", required=True, help="SAE folder, checkpoint folder, or checkpoint_dir of a run")
    ev.add_argument("--model", required=True, help="model spec for interp.load_model (local folder or smollm2)")
    ev.add_argument("--site", required=True, help="hook site the SAE was trained on")
    ev.add_argument("--dataset", required=True, help="token source: .txt, .safetensors or builtin:stdlib-docs")
    ev.add_argument("--context-length", type=int, default=128, help="tokens per sequence (default: 128)")
    ev.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default: 8)")
    ev.add_argument("--skip-sequences", type=int, default=0,
                    help="skip the first N sequences of the dataset, e.g. those used for training (default: 0)")
    ev.add_argument("--max-sequences", type=int, default=64, help="sequences to evaluate (default: 64)")
    ev.add_argument("--skip-special", action=argparse.BooleanOptionalAction, default=True,
                    help="leave BOS/EOS/pad positions out of the SAE metrics and interventions (default: on)")
    ev.add_argument("--max-norm-ratio", type=float, default=None,
                    help="leave positions whose activation norm exceeds this multiple of the batch median out of "
                         "the SAE metrics and interventions (massive activations; default: keep all)")
    ev.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    ev.add_argument("--html", default=None, help="write the feature-density histogram to this HTML file")
    ev.set_defaults(func=_run_eval)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``main(["sae", "train", ...])`` (a leading ``sae`` may be left out); runs through
    :func:`interp.cli.main`, so any error ends in one line and exit code 2 (``--debug`` shows the traceback)."""
    from interp.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = [a for a in argv if a == "--debug"]
    argv = [a for a in argv if a != "--debug"]
    if argv and argv[0] in ("train", "eval"):
        argv = ["sae", *argv]
    return cli_main([*debug, *argv])


if __name__ == "__main__":
    sys.exit(main())
