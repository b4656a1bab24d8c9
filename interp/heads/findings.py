"""What each kind's detector found, in words: one sentence per kind from the scores and the detector's extras,
negatives included (the causal verdict is :attr:`Validation.verdict`; this is the detection side).

Thresholds named here are the literature's where it has one (retrieval heads: score > 0.1, Wu et al. 2024;
successor heads: succession score > 0.4, a cut-off from later work, Tigges et al., not Gould et al. 2023); the
attention-pattern kinds have none, so their sentence gives the best head's score and how many heads put most of
their attention (> 0.5) on the kind's target.
"""

from __future__ import annotations

__all__ = ["finding", "SUCCESSOR_CUTOFF", "RETRIEVAL_CUTOFF", "NGRAM_MIN_LIFT"]

SUCCESSOR_CUTOFF = 0.4
RETRIEVAL_CUTOFF = 0.1
NGRAM_MIN_LIFT = 0.1
"""An n-gram head is counted when its best k is 2 or 3 and that order's lift is at least this."""


def _name(h) -> str:
    return f"L{h.layer}.{h.head}"


def _majority(report, kind: str, what: str) -> str:
    s = report.scores[kind]
    best = report.top(kind, 1)[0]
    n = int((s > 0.5).sum())
    total = s.numel()
    tail = (f"{n} of {total} {report.head_axis}s put more than half of it there" if n else
            f"no {report.head_axis} puts more than half of it there: no clear {kind.replace('_', '-')} head")
    return f"Best {report.head_axis} {_name(best)} puts {best.score:.2f} of its attention on {what}; {tail}."


def _induction(report, d: dict) -> str:
    text = _majority(report, "induction", "the token after the earlier copy of the current one")
    if "copying_score" in d:
        c = d["copying_score"]
        top = report.top("induction")
        pos = [h for h in top if float(c[h.layer, h.head]) > 0]
        copier = max(((layer, h) for layer in range(c.shape[0]) for h in range(c.shape[1])),
                     key=lambda x: float(c[x]))
        each = ", ".join(f"{_name(h)} {float(c[h.layer, h.head]):+.2f}" for h in top)
        text += (f" Copying (direct logit effect on the attended token): {len(pos)} of the top {len(top)} "
                 f"prefix-matching heads raise it ({each} logits); the largest copier overall is "
                 f"L{copier[0]}.{copier[1]} ({float(c[copier]):+.2f}).")
        if not pos:
            text += " The top prefix-matching heads do not copy directly."
    elif "copying_note" in d:
        text += f" {d['copying_note'][0].upper()}{d['copying_note'][1:]}."
    return text


def _successor(report, d: dict) -> str:
    s = report.scores["successor"]
    best = report.top("successor", 1)[0]
    n = int((s > SUCCESSOR_CUTOFF).sum())
    kept = ", ".join(d.get("kept_tasks", {})) or "none"
    dropped = ", ".join(d.get("dropped_tasks", {})) or "none"
    head = (f"{n} {report.head_axis}s score above {SUCCESSOR_CUTOFF}" if n else
            f"no {report.head_axis} reaches the {SUCCESSOR_CUTOFF} cut-off (Tigges et al.), so the OV detector "
            "finds no clear successor head")
    return (f"Best {report.head_axis} {_name(best)} ranks the next item first for {best.score:.2f} of the pairs; "
            f"{head}. Tasks kept: {kept}; dropped (not single tokens): {dropped}.")


def _ngram(report, d: dict) -> str:
    best_k = d["best_k"]
    lifts = {k: d[f"lift{k}"] for k in (2, 3)}
    counted = {k: int(((best_k == k) & (lifts[k] >= NGRAM_MIN_LIFT)).sum()) for k in (2, 3)}
    top = report.top("ngram", 1)[0]
    lead = (f"Best S_2 {report.head_axis} {_name(top)}: S_1 {float(d['S1'][top.layer, top.head]):.2f}, S_2 "
            f"{top.score:.2f}, lift_2 {float(d['lift2'][top.layer, top.head]):.2f}, best k = "
            f"{int(best_k[top.layer, top.head])}.")
    if counted[2] + counted[3] == 0:
        return (f"{lead} No {report.head_axis} prefers order-2 or order-3 matches over order-1 matches (best k >= 2 "
                f"with lift >= {NGRAM_MIN_LIFT}): no n-gram head beyond induction on this probe.")
    return (f"{lead} {counted[2]} {report.head_axis}s are order-2 and {counted[3]} order-3 heads "
            f"(lift >= {NGRAM_MIN_LIFT}).")


def _retrieval(report, d: dict) -> str:
    trials = d.get("trials", [])
    above = d.get("retrieval_heads_above_0.1", {"count": 0, "fraction": 0.0})
    best = report.top("retrieval", 1)[0]
    lead = (f"{d.get('reproduced', 0)} of {len(trials)} trials reproduced the needle; best {report.head_axis} "
            f"{_name(best)} copy-pastes {best.score:.2f} of the answer tokens.")
    if above["count"] == 0:
        return f"{lead} No {report.head_axis} scores above {RETRIEVAL_CUTOFF}: no retrieval head."
    return (f"{lead} {above['count']} {report.head_axis}s ({100 * above['fraction']:.1f}%) score above "
            f"{RETRIEVAL_CUTOFF} (Wu et al. 2024 find 3-6% of heads).")


_FINDERS = {
    "previous_token": lambda r, d: _majority(r, "previous_token", "the previous token"),
    "duplicate_token": lambda r, d: _majority(r, "duplicate_token", "earlier copies of the current token"),
    "induction": _induction,
    "successor": _successor,
    "ngram": _ngram,
    "retrieval": _retrieval,
}


def finding(report, kind: str) -> str:
    """The detection finding for ``kind`` in words (module docstring); for a skipped kind, why it was skipped."""
    if kind in report.skipped:
        return f"Skipped: {report.skipped[kind]}"
    if kind not in report.scores:
        raise KeyError(f"kind {kind!r} was not run; kinds run: {', '.join(report.scores)}")
    return _FINDERS[kind](report, report.details.get(kind, {}))
