"""The ``interp`` command line: ``interp info MODEL`` and the verbs other modules register.

Each verb module exposes ``register(subparsers)``, adding its parser and setting ``func`` (a callable taking the
parsed namespace and returning an exit code). Verbs just raise on bad input: :func:`main` turns any exception into
one line on stderr (``interp VERB: error: ...``) and exit code 2 (130 on Ctrl-C); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# Modules that add verbs (each has ``register(subparsers)``); a verb whose module is missing is skipped.
_VERB_MODULES = ("interp.heads.cli", "interp.patching.cli", "interp.tracing.cli", "interp.probes.cli",
                 "interp.saes.cli", "interp.lenses.cli", "interp.function_vectors.cli")


def _info(args: argparse.Namespace) -> int:
    from interp.models import load_model

    model = load_model(args.model)
    sites = model.site_names()
    print(f"model     {args.model}")
    print(f"arch      {model.arch}")
    print(f"layers    {model.n_layers}")
    print(f"heads     {model.n_heads}")
    print(f"kv-heads  {model.n_kv_heads}")
    print(f"d_model   {model.d_model}")
    print(f"d_head    {model.d_head}")
    print(f"d_vocab   {model.d_vocab}")
    print(f"sites     {len(sites)}")
    if args.all_sites:
        shown = sites
    else:  # one layer's worth is enough to see the naming; the rest repeat it
        shown = [s for s in sites if not s.startswith("blocks.") or s.startswith("blocks.0.")]
        if len(shown) < len(sites):
            print(f"          (layer 0 shown; layers 1..{model.n_layers - 1} repeat it; --all-sites lists all)")
    for name in shown:
        print(f"  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="Mechanistic interpretability toolkit.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on an error")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    info = sub.add_parser("info", help="print a model's structure and hook sites",
                          description="Print a model's layers, heads, kv-heads, d_model and hook site names.")
    info.add_argument("model", help="'smollm2' (the embedded model) or a path to a local HF checkpoint folder")
    info.add_argument("--all-sites", action="store_true", help="list every site (default: hook_embed, layer 0, final)")
    info.set_defaults(func=_info)
    for module_name in _VERB_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
                raise  # a dependency of an existing verb module is missing: that is a real error
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"interp {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every verb ends in one clear line; --debug keeps the traceback
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err  # KeyError quotes its text
        text = " ".join(str(message).split()) or type(err).__name__  # one line, even for a multi-line message
        print(f"interp {args.verb}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
