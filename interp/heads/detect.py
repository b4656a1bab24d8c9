"""``detect``: score every head kind on a model, validate each kind causally, and return a :class:`HeadReport`.

Forward passes are shared where the probes allow: previous-token, duplicate-token and induction heads are scored
from one pass over repeated random tokens (patterns reduced inside their hooks; the same pass caches ``z`` and the
final residual for the induction copying score), and validated together on one batched set of ablation conditions
(the clean run, each kind's top-k and its random draws, as slices of the same batch). Successor scores need no
forward pass (weights only). Each stage is logged (passes, tokens, seconds) in ``report.passes``.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from tqdm.auto import tqdm

from interp.errors import CapabilityError
from interp.heads import duplicate_token, induction, ngram, previous_token, retrieval, successor
from interp.heads.config import KINDS, HeadsConfig
from interp.heads.haystack import haystack_mode, make_trials
from interp.heads.passes import PassLog, attention_pass, check_attention, mask_score
from interp.heads.probes import markov_tokens, repeated_tokens
from interp.heads.report import HeadReport, top_heads
from interp.heads.validation import Validation, unavailable, validate_many

__all__ = ["detect", "detect_config"]

_REPEAT = ("previous_token", "duplicate_token", "induction")
_PATTERN_MODULES = {"previous_token": previous_token, "duplicate_token": duplicate_token, "induction": induction}
METRICS = {
    "induction": "next-token loss on the repeated half (nats)",
    "previous_token": "next-token loss on the repeated half (nats)",
    "duplicate_token": "next-token loss on the repeated half (nats)",
    "ngram": "next-token loss at positions with an order-2 match (nats)",
    "successor": "accuracy on the next item of an ordinal sequence",
    "retrieval": "fraction of needle tokens predicted (teacher-forced greedy)",
}


class _Run:
    """State of one detection run: the model, config, results so far and the pass log."""

    def __init__(self, model, cfg: HeadsConfig, bar) -> None:
        self.model, self.cfg, self.bar = model, cfg, bar
        self.scores: dict[str, torch.Tensor] = {}
        self.validation: dict[str, Validation] = {}
        self.details: dict[str, dict[str, Any]] = {k: {} for k in cfg.kinds}
        self.skipped: dict[str, str] = {}
        self.log = PassLog()

    def wanted(self, kinds) -> list[str]:
        return [k for k in kinds if k in self.cfg.kinds]

    def step(self, label: str) -> None:
        self.bar.set_postfix_str(label)
        self.bar.update(1)

    def validate(self, tops: dict[str, list], batches, headline: str) -> None:
        cfg = self.cfg
        tops = {k: v for k, v in tops.items() if v}
        if not tops:
            return
        found = validate_many(self.model, tops, batches, metrics={k: METRICS[k] for k in tops}, headline=headline,
                              how=cfg.ablation, draws=cfg.draws, seed=cfg.seed, log=self.log)
        self.validation.update(found)

    def top(self, kind: str) -> list[tuple[int, int]]:
        return [(h.layer, h.head) for h in top_heads(self.scores[kind], self.cfg.top_k)]


def _repeat_group(run: _Run) -> None:
    kinds = run.wanted(_REPEAT)
    if not kinds:
        return
    model, cfg = run.model, run.cfg
    check_attention(model, "previous-token, duplicate-token and induction scores")
    tokens = repeated_tokens(model, cfg.repeat_batch, cfg.repeat_half, seed=cfg.seed)
    masks = {k: _PATTERN_MODULES[k].expected_pattern(tokens) for k in kinds}
    copying = "induction" in kinds and model.has_attention_heads
    z_sites = [model.components(layer)["z"] for layer in range(model.n_layers)] if copying else []
    stage = "+".join(kinds)
    with run.log.timed(stage):
        per_layer, resid, cache = attention_pass(
            model, tokens, lambda layer, p: {k: mask_score(p, m) for k, m in masks.items()}, cache=z_sites,
            log=run.log, stage=stage)
        for k in kinds:
            run.scores[k] = torch.stack([d[k] for d in per_layer]).cpu()
        if "induction" in kinds:
            if copying:
                run.details["induction"]["copying_score"] = induction.copying_from_cache(
                    model, tokens, cfg.repeat_half, [cache[s] for s in z_sites], resid)
            else:
                run.details["induction"]["copying_note"] = (
                    f"copying score not measured: it needs per-head output matrices (W_O), and this {model.arch} "
                    "model has no attention heads (its heads are read from implicit attention)")
    run.step("repeated tokens: scored")
    vtokens = repeated_tokens(model, cfg.validation_batch, cfg.repeat_half, seed=cfg.seed + 1)
    rows, targets = induction.second_half_rows(vtokens, cfg.repeat_half)
    with run.log.timed(stage):
        run.validate({k: run.top(k) for k in kinds}, [(vtokens, rows, targets, None)], "loss")
    run.step("repeated tokens: validated")


def _ngram(run: _Run) -> None:
    model, cfg = run.model, run.cfg
    check_attention(model, "n-gram scores")
    tokens = markov_tokens(model, cfg.ngram_batch, cfg.ngram_length, symbols=cfg.ngram_symbols,
                           stickiness=cfg.ngram_stickiness, seed=cfg.seed)
    with run.log.timed("ngram"):
        chance = ngram.chance_levels(tokens)
        per_layer, _, _ = attention_pass(model, tokens, lambda layer, p: ngram.score_patterns(p, tokens, chance),
                                         log=run.log, stage="ngram")
        by_order = {key: torch.stack([d[key] for d in per_layer]).cpu() for key in per_layer[0]}
        run.scores["ngram"] = by_order["S2"]
        run.details["ngram"].update(by_order)
        run.details["ngram"]["best_k"] = ngram.best_order(by_order)
        run.details["ngram"]["chance"] = chance
    run.step("ngram: scored")
    vtokens = markov_tokens(model, cfg.validation_batch, cfg.ngram_length, symbols=cfg.ngram_symbols,
                            stickiness=cfg.ngram_stickiness, seed=cfg.seed + 1)
    T = vtokens.shape[1]
    rows = torch.arange(T - 1, device=vtokens.device).expand(vtokens.shape[0], -1)
    valid = ngram.expected_pattern(vtokens, 2).any(-1)[:, : T - 1]
    with run.log.timed("ngram"):
        run.validate({"ngram": run.top("ngram")}, [(vtokens, rows, vtokens[:, 1:], valid)], "loss")
    run.step("ngram: validated")


def _successor(run: _Run) -> None:
    model, cfg = run.model, run.cfg
    with run.log.timed("successor"):
        successor.check_ov(model)  # Mamba: no OV circuit, whatever the tokenizer
        tasks = successor.select_tasks(model)
        total, per_task = successor.score_with_tasks(model, tasks)
        run.scores["successor"] = total
        run.details["successor"].update(kept_tasks={k: len(v) for k, v in tasks.kept.items()},
                                        dropped_tasks=dict(tasks.dropped), per_task=per_task)
    run.step("successor: scored")
    tokens, targets = successor.prompts(model, tasks, cfg.successor_window, per_task=cfg.successor_prompts)
    rows = torch.full((tokens.shape[0], 1), tokens.shape[1] - 1, device=tokens.device)
    with run.log.timed("successor"):
        run.validate({"successor": run.top("successor")}, [(tokens, rows, targets[:, None], None)], "accuracy")
    run.step("successor: validated")


def _retrieval(run: _Run) -> None:
    model, cfg = run.model, run.cfg
    check_attention(model, "retrieval scores")
    mode = haystack_mode(model, cfg.retrieval_mode)
    trials = make_trials(model, cfg.retrieval_lengths, cfg.retrieval_depths, mode=mode, seed=cfg.seed)
    with run.log.timed("retrieval"):
        results = retrieval.run_trials(model, trials, log=run.log, stage="retrieval")
    d = run.details["retrieval"]
    d["mode"] = mode
    d["trials"] = [dict(length=r.trial.length, depth=r.trial.depth, reproduced=r.reproduced, rouge1_recall=r.rouge,
                        teacher_forced_correct=r.teacher_forced_correct, answer=_text(model, r.trial.answer.tolist()),
                        generated=_text(model, list(r.generated))) for r in results]
    d["reproduced"] = sum(r.reproduced for r in results)
    run.step("retrieval: scored")
    run.scores["retrieval"] = retrieval.scores_from_results(results)  # raises when nothing was reproduced
    share = float((run.scores["retrieval"] > 0.1).float().mean())
    d["retrieval_heads_above_0.1"] = {"count": int((run.scores["retrieval"] > 0.1).sum()), "fraction": share}
    chosen = sorted((r for r in results if r.reproduced), key=lambda r: (r.trial.length, r.trial.depth))
    chosen = chosen[:cfg.retrieval_validation_trials]
    batches = []
    for r in chosen:
        t = r.trial
        seq = torch.cat([t.prompt, t.answer[:-1]])[None].to(model.device)
        k = t.answer.shape[0]
        rows = (t.prompt.shape[0] - 1 + torch.arange(k, device=seq.device))[None]
        batches.append((seq, rows, t.answer[None].to(seq.device), None))
    d["validation_trials"] = [(r.trial.length, r.trial.depth) for r in chosen]
    with run.log.timed("retrieval"):
        run.validate({"retrieval": run.top("retrieval")}, batches, "accuracy")
    run.step("retrieval: validated")


def _text(model, ids: list[int]) -> str:
    if model.tokenizer is None:
        return " ".join(map(str, ids))
    return model.to_string(ids)


_STEPS = {"repeat": 2, "ngram": 2, "successor": 2, "retrieval": 2}
_GROUPS = (("repeat", _REPEAT, _repeat_group), ("successor", ("successor",), _successor),
           ("ngram", ("ngram",), _ngram), ("retrieval", ("retrieval",), _retrieval))


def detect_config(model, cfg: HeadsConfig, *, name: str | None = None, progress: bool = True) -> HeadReport:
    """Run ``cfg`` on ``model`` (see :func:`detect`)."""
    from interp.models.loading import wrap

    model = wrap(model)
    cfg.check_model(model)
    start = time.perf_counter()
    groups = [g for g in _GROUPS if any(k in cfg.kinds for k in g[1])]
    with tqdm(total=sum(_STEPS[g[0]] for g in groups), desc="heads", disable=not progress) as bar, torch.no_grad():
        run = _Run(model, cfg, bar)
        for _, kinds, fn in groups:
            try:
                fn(run)
            except (CapabilityError, ValueError) as err:
                for k in run.wanted(kinds):
                    if k not in run.scores:
                        run.skipped[k] = str(err)
                    elif k not in run.validation:
                        run.validation[k] = unavailable(k, METRICS[k], str(err))
    for k, why in run.skipped.items():
        warnings.warn(f"interp.heads.detect: kind {k!r} skipped: {why}", UserWarning, stacklevel=3)
    if not run.scores:
        raise ValueError("no head kind could be scored on this model: "
                         + "; ".join(f"{k}: {why}" for k, why in run.skipped.items()))
    for k in run.scores:
        run.validation.setdefault(k, unavailable(k, METRICS[k], "validation did not run"))
    name = name or f"{model.arch} ({model.n_layers} layers x {model.n_heads} heads)"
    return HeadReport(model=name, n_layers=model.n_layers, n_heads=model.n_heads,
                      scores={k: run.scores[k] for k in KINDS if k in run.scores},
                      validation={k: run.validation[k] for k in KINDS if k in run.validation},
                      details={k: run.details[k] for k in KINDS if k in run.scores or run.details.get(k)},
                      skipped=run.skipped,
                      config=cfg, passes=run.log.to_dict(), seconds=time.perf_counter() - start,
                      head_axis="head" if (model.has_attention_heads or model.has_ssm_heads) else "channel group")


def detect(model, kinds=None, *, top_k: int | None = None, seed: int = 0, name: str | None = None,
           progress: bool = True, thorough: bool = False, **options) -> HeadReport:
    """Find previous-token, duplicate-token, induction, retrieval, successor and n-gram heads, and test each kind's
    top heads causally against random heads.

    ``kinds``: a list or comma-separated string of :data:`interp.heads.KINDS` (None = all). ``top_k``: heads per
    kind reported and ablated (default 5, at most an eighth of the heads). ``seed``: every probe and random draw.
    ``options``: any other :class:`HeadsConfig` field (``draws``, ``ablation``, ``repeat_half``,
    ``retrieval_lengths``, ...). ``thorough``: larger validation samples and haystacks up to 2048 tokens
    (:data:`~interp.heads.config.THOROUGH`; several times the work). Defaults that cannot work on the model are
    fitted to it and stated in the report (:meth:`HeadsConfig.for_model`: implicit-attention models get shorter
    probes, small vocabularies shorter repeated halves, small models fewer top heads); given values that cannot
    work raise. ``name``: the model's name in the report.

    Kinds the model cannot support (no OV circuit on Mamba for successor heads, no single-token successor task in
    the tokenizer, ...) are skipped with the reason (``report.skipped``, and a warning); the others still run.
    Works on every ``HookedModel`` with attention heads or implicit attention (Mamba: heads are SSM heads or
    Mamba-1 channel groups; ablation zeroes or mean-ablates the head's scan output, see
    :mod:`interp.heads.ablation`).
    """
    from interp.models.loading import wrap

    model = wrap(model)
    cfg = HeadsConfig.for_model(model, thorough=thorough, kinds=kinds if kinds is not None else KINDS, top_k=top_k,
                                seed=seed, **options)
    return detect_config(model, cfg, name=name, progress=progress)
