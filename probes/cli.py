"""``interp probe``: a layer sweep from a JSONL file, written as one HTML page and a JSON summary.

    interp probe --model smollm2 --data data.jsonl --text-key text --label-key y \\
        --site 'blocks.*.hook_resid_post' --position last --out probe.html --json probe.json

The JSON holds ``{"sites": [...], "accuracy": [...], "control": [...], "majority": float}`` plus selectivity,
shuffled-label scores, per-fold scores, ``control_note`` and the settings (see :class:`~interp.probes.SweepResult`).
The control task's word types are ``--control-key``'s values, else the token read; when the token read is the same
in every text the control is reported as not applicable (``control`` null, ``control_note`` says why) and the
sweep still runs; ``--control none`` runs none. The arguments are checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register", "read_jsonl"]

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def read_jsonl(path: str | Path, text_key: str, label_key: str, type_key: str | None = None):
    """``(texts, labels, types or None)`` from a JSON-lines file; every line must hold the keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data: no file {path}")
    texts, labels, types = [], [], []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"--data: line {i} of {path} is not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"--data: line {i} of {path} is not a JSON object")
            for key, flag in ((text_key, "--text-key"), (label_key, "--label-key"), (type_key, "--control-key")):
                if key is not None and key not in row:
                    raise ValueError(f"{flag}: line {i} of {path} has no key {key!r} (keys: {sorted(row)})")
            if not isinstance(row[text_key], str) or not row[text_key]:
                raise ValueError(f"--text-key: line {i} of {path}: {text_key!r} must be a non-empty string")
            texts.append(row[text_key])
            labels.append(row[label_key])
            if type_key is not None:
                types.append(json.dumps(row[type_key], sort_keys=True))
    if not texts:
        raise ValueError(f"--data: {path} holds no rows")
    return texts, labels, (types if type_key is not None else None)


def _run(args: argparse.Namespace) -> int:
    import torch

    from interp.models import load_model
    from interp.probes.positions import Position
    from interp.probes.sweep import _check_args, layer_sweep

    if args.control == "none" and args.control_key is not None:
        raise ValueError("--control none runs no control task; --control-key would be ignored (pass one or the other)")
    texts, labels, types = read_jsonl(args.data, args.text_key, args.label_key, args.control_key)
    settings = dict(family=args.family, C=args.C, alpha=args.alpha, control=args.control, control_types=types,
                    shuffles=args.shuffles, seed=args.seed)
    _check_args(labels, len(texts), args.folds, **settings)  # before loading the model
    Position.parse(args.position)
    model = load_model(args.model)
    result = layer_sweep(
        model, texts, labels, _sites(args.site), args.position, args.folds, normalize=args.normalize,
        batch_size=args.batch_size, dtype=getattr(torch, _DTYPES[args.dtype]), memory_budget=args.memory_budget,
        keep_probes=args.save_probes is not None, progress=not args.quiet, **settings)
    if args.out:
        result.save_html(args.out)
    if args.json:
        result.save_json(args.json)
    if args.save_probes:
        for i, site in enumerate(result.sites):
            result.probe(site).save(Path(args.save_probes) / f"{i:03d}_{site}")
    name = "accuracy" if result.metric == "accuracy" else "R2"
    best = result.best()
    i = result.sites.index(best)
    control = (f"control {float(result.control[i]):.3f}, selectivity {float(result.selectivity[i]):.3f}; "
               if result.has_control else "")
    print(f"{len(result.sites)} sites, {result.n_texts} texts, {result.folds}-fold {result.family}: best {best} "
          f"{name} {float(result.accuracy[i]):.3f} ({control}majority {result.majority:.3f})")
    if not result.has_control:
        print(f"control: {result.control_note}")
    for path in (args.out, args.json):
        if path:
            print(f"wrote {path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "probe", help="cross-validated linear probes at many sites, with control tasks",
        description="Fit one linear probe per site (one forward pass per batch, one batched fit) and report "
                    "cross-validated accuracy (R^2 for ridge) beside a control task (Hewitt & Liang 2019), "
                    "shuffled labels and the majority class.")
    p.add_argument("--model", required=True, help="'smollm2', a local HF folder, or a zoo model folder")
    p.add_argument("--data", required=True, help="JSON-lines file, one object per text")
    p.add_argument("--text-key", default="text", help="key of the text in each line (default: text)")
    p.add_argument("--label-key", default="y", help="key of the label in each line (default: y)")
    p.add_argument("--control-key", default=None,
                   help="key of each text's word type for the control task (default: the token read; when that is "
                        "the same token in every text the control is reported as not applicable)")
    p.add_argument("--control", default="default", choices=["default", "none"],
                   help="'none': no control task (default: run it on --control-key's types, else the token read)")
    p.add_argument("--site", default="blocks.*.hook_resid_post", help="site name or glob pattern (repeatable "
                   "with commas)")
    p.add_argument("--position", default="last", help="last | INDEX | token:TEXT | regex:PATTERN | mean | "
                   "mean:START:STOP | mean:regex:PATTERN | all (default: last)")
    p.add_argument("--family", default="logistic", choices=["logistic", "ridge", "mass_mean"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--C", type=float, default=1.0, help="logistic inverse regularisation (scikit-learn's C)")
    p.add_argument("--alpha", type=float, default=1.0, help="ridge penalty (scikit-learn's alpha)")
    p.add_argument("--normalize", action="store_true", help="standardise features before fitting")
    p.add_argument("--shuffles", type=int, default=1, help="shuffled-label baselines (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=sorted(_DTYPES), help="storage dtype of activations")
    p.add_argument("--memory-budget", default=None, help="most memory the activations may take, e.g. 2GiB")
    p.add_argument("--out", default=None, help="HTML report path")
    p.add_argument("--json", default=None, help="JSON summary path")
    p.add_argument("--save-probes", default=None, metavar="DIR", help="save each site's probe (fitted on all rows)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _sites(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]
