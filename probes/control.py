"""The control task of Hewitt & Liang 2019 ("Designing and Interpreting Probes with Control Tasks"), for
:func:`~interp.probes.layer_sweep`: which word types it labels, its random labels, and when it does not apply.

Every word type gets a random label drawn from the label distribution, fixed across its occurrences. The types are
the ``control_types`` given (one per text, e.g. the word each text's label rests on), or by default the token(s) the
position rule reads. ``control="none"`` runs no control task.

Given types that cannot make a control task (wrong length, a single type) are an error, raised before any forward
pass. Default types that cannot (the position rule reads the same token in every text, e.g. a final ".") make the
control *not applicable*: the sweep still runs, its control scores are NaN and :attr:`SweepResult.control_note`
says why and how to supply types.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["CONTROLS", "check_control", "default_types", "control_labels"]

CONTROLS = ("default", "none")
"""``control=`` values: ``"default"`` (the control task on ``control_types``, else on the token read) or
``"none"`` (no control task)."""

NOT_RUN = "not run (control='none'; CLI: --control none)"
_HOW = ("pass control_types= (CLI: --control-key) naming the word each text's label rests on to supply one, or "
        "control='none' (CLI: --control none)")


def check_control(control: str, control_types, n_texts: int) -> list | None:
    """``control_types`` as a list of one hashable word type per text (None: the default types or no control);
    raises naming the argument when ``control`` is unknown or the given types cannot make a control task."""
    if not isinstance(control, str) or control not in CONTROLS:
        raise ValueError(f"control must be one of {CONTROLS}; got {control!r}")
    if control_types is None:
        return None
    if control == "none":
        raise ValueError("control='none' runs no control task, so control_types would be ignored; pass one or the "
                         "other (CLI: --control none or --control-key)")
    if isinstance(control_types, Tensor):
        if control_types.ndim != 1:
            raise ValueError(f"control_types must be one word type per text; got a tensor of shape "
                             f"{tuple(control_types.shape)}")
        control_types = control_types.tolist()
    elif hasattr(control_types, "tolist") and not isinstance(control_types, (list, tuple)):  # numpy
        control_types = control_types.tolist()
    if isinstance(control_types, (str, bytes)) or not isinstance(control_types, Sequence):
        raise TypeError(f"control_types must be a sequence of one word type per text; got "
                        f"{type(control_types).__name__}")
    types = list(control_types)
    if len(types) != n_texts:
        raise ValueError(f"control_types has {len(types)} entries but there are {n_texts} texts; give one word type "
                         "per text")
    bad = next((i for i, t in enumerate(types) if not _is_type(t)), None)
    if bad is not None:
        t = types[bad]
        raise TypeError(f"control_types: entry {bad} ({t!r}, {type(t).__name__}) is not a word type; use strings, "
                        "numbers or tuples of them")
    if len(set(types)) < 2:
        raise ValueError(f"control_types: every text has the same word type ({types[0]!r}), so the control task "
                         "(Hewitt & Liang 2019) would have a single type; give the word each text's label rests on, "
                         "or pass control='none' (CLI: --control none)")
    return types


def _is_type(t) -> bool:
    """A word type is hashable by value (a tensor hashes by identity: every row would be its own type)."""
    if isinstance(t, Tensor):
        return False
    try:
        hash(t)
    except TypeError:
        return False
    return True


def default_types(types: Sequence, position) -> tuple[list | None, str | None]:
    """``(types, None)`` when the default word types (per row, the token(s) read) can make a control task, else
    ``(None, note)`` with the reason it is not applicable and how to supply one."""
    types = list(types)
    if len(set(types)) > 1:
        return types, None
    what = f"the tokens {types[0]!r}" if isinstance(types[0], tuple) else f"token id {types[0]!r}"
    return None, (f"not applicable (position {str(position)!r} reads the same word type, {what}, in every text, so "
                  f"the default control task has a single type; {_HOW})")


def control_labels(y: Tensor, types: list, row_text: Tensor, rng: random.Random) -> Tensor:
    """Per row, the control label of its word type: one random label per type, drawn from the empirical label
    distribution of the rows, the same wherever the type occurs."""
    pool = y[row_text].tolist()
    table: dict = {}
    for t in types:
        if t not in table:
            table[t] = pool[rng.randrange(len(pool))]
    return torch.tensor([table[t] for t in types], dtype=y.dtype)
