"""The HTML of a :class:`~interp.heads.report.HeadReport`: summary table, heatmaps, per-kind details, protocol."""

from __future__ import annotations

from interp.reports.html import RawHTML, escape, figure_html, table_html

__all__ = ["sections", "summary_table"]


def _heads(report, kind: str, k: int | None = None) -> str:
    return ", ".join(f"L{h.layer}.{h.head} ({h.score:.2f})" for h in report.top(kind, k))


def summary_table(report) -> str:
    """One row per kind: top heads with scores, the validation metric, top-k vs random ablation, verdict."""
    rows = []
    for kind in report.config.kinds:
        if kind in report.skipped:
            rows.append([kind, "-", "-", "-", "-", "-", "-", RawHTML(f'<span class="warn">skipped: '
                                                                   f'{escape(report.skipped[kind])}</span>')])
            continue
        v = report.validation[kind]
        if v.reason is not None:
            rows.append([kind, _heads(report, kind), v.metric, "-", "-", "-", "-", v.verdict])
            continue
        ratio = f"{v.ratio:.1f}x" if v.ratio is not None else "random: no harm"
        verdict = RawHTML(f'<b>{"causal" if v.causal else "not causal"}</b>: {escape(v.verdict.split(": ", 1)[1])}')
        rows.append([kind, _heads(report, kind), v.metric, v.clean, v.ablated,
                     f"{v.random_mean:+.3g} ± {v.random_std:.3g}", f"{v.effect:+.3g} ({ratio})", verdict])
    header = ["kind", f"top heads (layer.{report.head_axis}, score)", "task metric", "clean", "top-k ablated",
              "random-k effect (mean ± sd)", "top-k effect (vs random)", "verdict"]
    return table_html(rows, header)


def _induction(report, d: dict) -> str:
    out = []
    if "copying_score" in d:
        out.append(figure_html(report.heatmap("induction", d["copying_score"],
                                              "induction: copying score (direct logit effect, logits)")))
        rows = [[f"L{h.layer}.{h.head}", h.score, float(d["copying_score"][h.layer, h.head])]
                for h in report.top("induction")]
        out.append(table_html(rows, ["head", "prefix matching", "copying (logits)"],
                              caption="Top prefix-matching heads and their copying score"))
    if "copying_note" in d:
        out.append(f'<p class="note">{escape(d["copying_note"])}</p>')
    return "".join(out)


def _ngram(report, d: dict) -> str:
    out = [figure_html(report.heatmap("ngram", d[f"S{k}"], f"ngram: S_{k} (mass on order-{k} matches)"))
           for k in (1, 3)]
    out.append(figure_html(report.heatmap("ngram", d["best_k"].float(), "ngram: best k per head")))
    rows = [[f"L{h.layer}.{h.head}", *(float(d[f"S{k}"][h.layer, h.head]) for k in (1, 2, 3)),
             *(float(d[f"lift{k}"][h.layer, h.head]) for k in (1, 2, 3)), int(d["best_k"][h.layer, h.head])]
            for h in report.top("ngram")]
    out.append(table_html(rows, ["head", "S_1", "S_2", "S_3", "lift_1", "lift_2", "lift_3", "best k"],
                          caption="Top heads by S_2"))
    chance = ", ".join(f"{k} = {v:.3f}" for k, v in d.get("chance", {}).items())
    out.append(f'<p class="note">Chance levels c_k on the probe (S_k of an ideal order-(k-1) head; c1: attention '
               f'spread evenly over earlier positions): {escape(chance)}. lift_k = (S_k - c_k) / (1 - c_k).</p>')
    return "".join(out)


def _successor(report, d: dict) -> str:
    kept = [[name, n, "kept"] for name, n in d.get("kept_tasks", {}).items()]
    dropped = [[name, "-", f"dropped: {why}"] for name, why in d.get("dropped_tasks", {}).items()]
    out = [table_html(kept + dropped, ["task", "items", "status"], caption="Ordinal tasks")]
    if "successor" in report.scores and d.get("per_task"):
        names = list(d["per_task"])
        rows = [[f"L{h.layer}.{h.head}", h.score, *(float(d["per_task"][n][h.layer, h.head]) for n in names)]
                for h in report.top("successor")]
        out.append(table_html(rows, ["head", "mean", *names], caption="Succession score per task, top heads"))
    return "".join(out)


def _retrieval(report, d: dict) -> str:
    rows = [[t["length"], t["depth"], "yes" if t["reproduced"] else "no", t["rouge1_recall"],
             t["teacher_forced_correct"], t["answer"], t["generated"]] for t in d.get("trials", [])]
    out = [table_html(rows, ["length", "depth", "reproduced", "ROUGE-1 recall", "teacher-forced correct", "answer",
                             "greedy answer"], caption=f"Trials ({d.get('mode', '?')} haystack)")]
    above = d.get("retrieval_heads_above_0.1")
    if above:
        out.append(f'<p class="note">{above["count"]} heads ({100 * above["fraction"]:.1f}%) score above 0.1 (Wu et '
                   'al. 2024 find fewer than 5%).</p>')
    return "".join(out)


_DETAILS = {"induction": _induction, "ngram": _ngram, "successor": _successor, "retrieval": _retrieval}


def sections(report) -> list:
    """The page's sections."""
    from interp.heads.report import protocol

    out = [("Summary", summary_table(report) + '<p class="note">Effect = change of the task metric in the harmful '
            'direction (loss up, accuracy down) when the heads are ablated. Causal: the top-k effect is at least the '
            'minimum effect, above every random draw and above the random mean + 2 sd.</p>')]
    for kind in report.config.kinds:
        body = []
        if kind in report.scores:
            body.append(figure_html(report.heatmap(kind, title=f"{kind} score")))
        if kind in report.skipped:
            body.append(f'<p class="warn">Skipped: {escape(report.skipped[kind])}</p>')
        if kind in report.validation:
            body.append(f"<p>{escape(report.validation[kind].verdict)}</p>")
        if kind in _DETAILS and report.details.get(kind):
            body.append(_DETAILS[kind](report, report.details[kind]))
        body.append(f'<p class="note">Protocol: {escape(protocol(kind, report.config))}</p>')
        out.append((kind, "".join(body)))
    rows = [[stage, int(e["passes"]), int(e["tokens"]), e["seconds"]] for stage, e in report.passes.items()]
    out.append(("Forward passes", table_html(rows, ["stage", "passes", "tokens", "seconds"])))
    return out
