"""Position rules: which token(s) of each text a probe reads.

A rule is written as a short string (the CLI's ``--position``) and parsed into a frozen :class:`Position`:

- ``"last"``: the last real token of each text, found from the attention mask (never a pad token);
- ``"3"``, ``"-2"``: a token index among each text's real tokens (negative: from its last real token; a prepended
  BOS is position 0);
- ``"token: Paris"``: the last token whose text is exactly ``" Paris"`` (everything after ``token:``, spaces kept);
- ``"regex:PAT"``: the last token overlapping the first match of ``PAT`` in the text (group 1 if it has groups);
- ``"mean"``: the mean over every real token (a prepended BOS left out: its activations are outliers);
- ``"mean:A:B"``: the mean over real tokens ``A..B-1`` (Python slice bounds, negatives from the end);
- ``"mean:regex:PAT"``: the mean over the tokens overlapping the first match of ``PAT``;
- ``"all"``: every real token but a prepended BOS is a row (each carries its text's label).

:func:`resolve` turns a rule into, per text, the positions it reads, and raises naming every text where the rule
finds nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Position", "Resolved", "resolve"]

_KINDS = ("last", "index", "token", "regex", "mean", "mean_span", "mean_regex", "all")


@dataclass(frozen=True)
class Position:
    """A parsed position rule (see the module docstring for the string forms)."""

    kind: str
    """One of ``last``, ``index``, ``token``, ``regex``, ``mean``, ``mean_span``, ``mean_regex``, ``all``."""
    index: int | None = None
    """The token index (``kind="index"``) or the span start (``kind="mean_span"``)."""
    stop: int | None = None
    """The span stop for ``kind="mean_span"`` (None: to the end)."""
    pattern: str | None = None
    """The token text (``token``) or regular expression (``regex``, ``mean_regex``)."""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"position kind must be one of {_KINDS}; got {self.kind!r}")
        if self.kind in ("token", "regex", "mean_regex") and not self.pattern:
            raise ValueError(f"position {self.kind!r} needs a non-empty pattern")
        if self.kind in ("regex", "mean_regex"):
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(f"position: bad regular expression {self.pattern!r}: {err}") from None

    @classmethod
    def parse(cls, rule: str | int | Position) -> Position:
        """Parse ``rule`` (a string form, an int index or a Position)."""
        if isinstance(rule, Position):
            return rule
        if isinstance(rule, int) and not isinstance(rule, bool):
            return cls("index", index=rule)
        if not isinstance(rule, str):
            raise TypeError(f"position must be a rule string (e.g. 'last', 'mean', 'regex:PAT') or an int; got "
                            f"{type(rule).__name__}")
        if rule in ("last", "mean", "all"):
            return cls(rule)
        if re.fullmatch(r"-?\d+", rule.strip()):
            return cls("index", index=int(rule))
        if rule.startswith("token:"):
            return cls("token", pattern=rule[len("token:"):])
        if rule.startswith("regex:"):
            return cls("regex", pattern=rule[len("regex:"):])
        if rule.startswith("mean:regex:"):
            return cls("mean_regex", pattern=rule[len("mean:regex:"):])
        m = re.fullmatch(r"mean:(-?\d*):(-?\d*)", rule)
        if m:
            start = int(m.group(1)) if m.group(1) else 0
            return cls("mean_span", index=start, stop=int(m.group(2)) if m.group(2) else None)
        raise ValueError(f"position {rule!r} is not a rule; expected 'last', an index such as '-2', 'token:TEXT', "
                         "'regex:PATTERN', 'mean', 'mean:START:STOP', 'mean:regex:PATTERN' or 'all'")

    @property
    def single(self) -> bool:
        """True when the rule reads one token per text (not a mean, not every token)."""
        return self.kind in ("last", "index", "token", "regex")

    def __str__(self) -> str:
        if self.kind in ("last", "mean", "all"):
            return self.kind
        if self.kind == "index":
            return str(self.index)
        if self.kind == "mean_span":
            return f"mean:{self.index}:{'' if self.stop is None else self.stop}"
        return {"token": "token:", "regex": "regex:", "mean_regex": "mean:regex:"}[self.kind] + self.pattern


@dataclass(frozen=True)
class Resolved:
    """Where a rule reads, for a batch of texts: ``weights [batch, pos]`` (a row's weights sum to 1 for ``single``
    and mean rules; 0/1 real-token flags for ``all``)."""

    weights: Tensor
    types: list
    """Per text (``all``: per row, in reading order) the word type Hewitt & Liang's control task labels: the token
    id read, or the tuple of ids averaged over."""


def resolve(position: Position, model, tokens: Tensor, mask: Tensor, texts: list[str] | None,
            bos: bool, first_index: int = 0) -> Resolved:
    """The reading weights of ``position`` for ``tokens [b, T]`` with ``mask [b, T]`` (1 = real token; rows may
    be padded on either side). ``texts`` (needed by ``token``/``regex`` rules) are the strings tokenised;
    ``bos``: whether position 0 of each row's real tokens is a prepended BOS. ``first_index`` numbers the texts
    in error messages."""
    b, T = tokens.shape
    real = mask.bool()
    starts = real.int().argmax(1)           # first real token (left padding)
    lengths = real.sum(1)
    weights = torch.zeros(b, T, dtype=torch.float64)
    types: list = []
    failed: list[int] = []
    offsets = _offsets(model, tokens, real, texts, bos) if position.kind in ("regex", "mean_regex") else None
    strs = model.to_str_tokens(tokens) if position.kind == "token" else None
    for i in range(b):
        s, n = int(starts[i]), int(lengths[i])
        ids = tokens[i, s: s + n].tolist()
        lo = 1 if bos and n > 1 else 0      # first non-BOS real token
        picked: list[int] = []
        if position.kind == "last":
            picked = [n - 1]
        elif position.kind == "index":
            j = position.index + n if position.index < 0 else position.index
            picked = [j] if 0 <= j < n else []
        elif position.kind == "token":
            hits = [j for j in range(n) if strs[i][s + j] == position.pattern]
            picked = hits[-1:]
        elif position.kind == "mean":
            picked = list(range(lo, n))
        elif position.kind == "mean_span":
            picked = list(range(n))[position.index: position.stop]
        elif position.kind in ("regex", "mean_regex"):
            span = _match(position.pattern, texts[i])
            if span is not None:
                picked = [j for j, (a, e) in enumerate(offsets[i]) if a < span[1] and e > span[0] and e > a]
                if position.kind == "regex":
                    picked = picked[-1:]
        elif position.kind == "all":
            picked = list(range(lo, n))
        if not picked:
            failed.append(i)
            continue
        cols = [s + j for j in picked]
        if position.kind == "all":
            weights[i, cols] = 1.0
            types.extend(ids[j] for j in picked)
        else:
            weights[i, cols] = 1.0 / len(cols)
            types.append(ids[picked[0]] if position.single else tuple(ids[j] for j in picked))
    if failed:
        shown = ", ".join(f"{first_index + i} ({_short(texts[i]) if texts else 'ids'})" for i in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise ValueError(f"position {str(position)!r} finds no token in {len(failed)} text(s): {shown}{more}")
    return Resolved(weights, types)


def _short(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _match(pattern: str, text: str) -> tuple[int, int] | None:
    m = re.search(pattern, text)
    if m is None:
        return None
    group = 1 if m.re.groups else 0
    if m.start(group) < 0:
        return None
    return m.start(group), m.end(group)


def _offsets(model, tokens: Tensor, real: Tensor, texts: list[str] | None, bos: bool) -> list[list[tuple[int, int]]]:
    """Character offsets ``(start, end)`` of each real token in its text (a prepended BOS gets ``(0, 0)``)."""
    if texts is None:
        raise ValueError("a regex position needs the texts (pass strings, not token ids)")
    tok = model.tokenizer
    if tok is None:
        raise ValueError("a regex position needs the model's tokenizer (this model has none)")
    out = []
    for i, text in enumerate(texts):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        ref = tokens[i][real[i]].tolist()[1 if bos else 0:]
        if ids != ref:
            raise ValueError(f"regex positions: the tokenizer's offsets do not line up with the model's tokens for "
                             f"text {i} ({_short(text)})")
        out.append(([(0, 0)] if bos else []) + [tuple(o) for o in enc["offset_mapping"]])
    return out
