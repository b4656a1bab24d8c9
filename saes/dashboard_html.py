"""HTML for feature dashboards: one card per latent (top contexts with highlighted tokens, an activation histogram,
logit-lens tokens), the summary, and the dead / ultra-dense lists. Plain HTML and inline SVG; the page's only script
is plotly (inlined once by :func:`interp.reports.page`) for the density histogram."""

from __future__ import annotations

from interp.reports.html import RawHTML, escape, figure_html, table_html

__all__ = ["STYLE", "latent_card", "page_sections", "summary_html"]

STYLE = """
.latent { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; margin: 1em 0; }
.latent h3 { margin: 0.2em 0 0.4em; font-size: 1.1em; }
.latent .cols { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.ctx { font-family: Menlo, Consolas, monospace; font-size: 0.82em; line-height: 1.7; margin: 0.15em 0;
       white-space: nowrap; overflow-x: auto; }
.ctx .act { display: inline-block; min-width: 4.5em; color: #555; text-align: right; margin-right: 0.6em; }
.tok { white-space: pre; border-radius: 2px; padding: 0 1px; }
.tok.max { outline: 1.5px solid #222; }
.lens td { font-family: Menlo, Consolas, monospace; font-size: 0.85em; }
.pos { color: #1a7f37; } .neg { color: #b42318; }
"""


def _token_text(text: str) -> str:
    return escape(text.replace("\n", "\u21b5").replace("\t", "\u2192").replace("\r", "\u240d")) or "&nbsp;"


def _context(example: dict, scale: float) -> str:
    spans = []
    for i, (tok, act) in enumerate(zip(example["tokens"], example["acts"])):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, act / scale))
        cls = "tok max" if i == example["center"] else "tok"
        style = f' style="background: rgba(255, 140, 0, {alpha:.3f})"' if alpha > 0 else ""
        spans.append(f'<span class="{cls}"{style} title="{act:.4g}">{_token_text(tok)}</span>')
    return f'<div class="ctx"><span class="act">{example["activation"]:.3g}</span>{"".join(spans)}</div>'


def _svg_histogram(edges: list, counts: list, width: int = 320, height: int = 110) -> str:
    """A small bar chart with its axis ranges written out (no script)."""
    top = max(counts) if counts else 0
    if top == 0:
        return '<p class="note">no activations</p>'
    pad_l, pad_b, n = 34, 18, len(counts)
    w, h = width - pad_l - 4, height - pad_b - 4
    bars = []
    for i, c in enumerate(counts):
        if c:
            bh = max(1.0, h * c / top)
            bars.append(f'<rect x="{pad_l + i * w / n:.1f}" y="{4 + h - bh:.1f}" width="{max(w / n - 1, 1):.1f}" '
                        f'height="{bh:.1f}" fill="#d2691e"><title>{edges[i]:.3g}-{edges[i + 1]:.3g}: {c}</title>'
                        "</rect>")
    axis = (f'<line x1="{pad_l}" y1="{4 + h}" x2="{pad_l + w}" y2="{4 + h}" stroke="#888"/>'
            f'<text x="{pad_l}" y="{height - 4}" font-size="10">0</text>'
            f'<text x="{pad_l + w}" y="{height - 4}" font-size="10" text-anchor="end">{edges[-1]:.3g}</text>'
            f'<text x="{pad_l - 3}" y="12" font-size="10" text-anchor="end">{top}</text>'
            f'<text x="{pad_l + w / 2}" y="{height - 4}" font-size="10" text-anchor="middle">activation</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="activation histogram">'
            f'{axis}{"".join(bars)}</svg>')


def _lens_table(d) -> str:
    if not d.promoted and not d.suppressed:
        return '<p class="note">no logit lens (the decoder does not write a d_model-wide activation)</p>'
    rows = []
    for i in range(max(len(d.promoted), len(d.suppressed))):
        p = d.promoted[i] if i < len(d.promoted) else ("", None)
        s = d.suppressed[i] if i < len(d.suppressed) else ("", None)
        rows.append("<tr>" + "".join(
            f'<td>{_token_text(t)}</td><td class="num {cls}">{"" if v is None else f"{v:+.3g}"}</td>'
            for (t, v), cls in ((p, "pos"), (s, "neg"))) + "</tr>")
    return ('<table class="lens"><thead><tr><th colspan="2">promoted</th><th colspan="2">suppressed</th></tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def latent_card(d, *, figure: str | None = None, plotly: bool = False) -> str:
    """One latent's card; the histogram is ``figure`` (an HTML fragment), a plotly figure when ``plotly``, or an
    inline SVG."""
    stats = table_html([["density", d.density], ["fires on", f"{d.n_fired} tokens"],
                        ["max activation", d.max_activation], ["mean activation", d.mean_activation]])
    hist = figure if figure is not None else figure_html(d.plot()) if plotly else _svg_histogram(d.hist_edges,
                                                                                              d.hist_counts)
    scale = d.max_activation
    contexts = "".join(_context(e, scale) for e in d.examples) or '<p class="note">never fired</p>'
    return (f'<div class="latent" id="latent-{d.latent}"><h3>Latent {d.latent}</h3>'
            f'<div class="cols"><div>{stats}</div><div><b>activation histogram</b><br>{hist}</div>'
            f'<div><b>logit lens</b>{_lens_table(d)}</div></div>'
            f'<p><b>top contexts</b> <span class="note">(activation; the maximal token outlined, shading by '
            f"activation, hover for values)</span></p>{contexts}</div>")


def summary_html(dash) -> str:
    d_sae = int(dash.density.numel())
    where = dash.site if dash.site_out is None else f"{dash.site} -> {dash.site_out}"
    return table_html([["site", where], ["model", dash.model_name or "(not recorded)"], ["latents", d_sae],
                       ["tokens inspected", dash.n_tokens], ["sequences", dash.n_sequences],
                       ["dead latents", f"{len(dash.dead)} ({len(dash.dead) / d_sae:.1%})"],
                       [f"ultra-dense (density > {dash.dense_threshold:g})", len(dash.dense)],
                       ["dashboards", len(dash.latents)]])


def page_sections(dash, max_cards: int | None) -> list:
    """The sections of the dashboards page (see ``FeatureDashboards.save_html``)."""
    dead, dense = set(dash.dead), set(dash.dense)
    shown = [j for j in sorted(dash.latents) if j not in dead and j not in dense]
    dense_all = [j for j in dash.dense if j in dash.latents]
    dense_shown = dense_all if max_cards is None else dense_all[:max_cards]
    limit = len(shown) if max_cards is None else max(0, max_cards - len(dense_shown))
    note = "" if limit >= len(shown) and len(dense_shown) == len(dense_all) else (
        f'<p class="note">cards for the first {limit} of {len(shown)} latents and {len(dense_shown)} of '
        f"{len(dense_all)} ultra-dense ones (max_cards={max_cards}); the JSON holds all of them</p>")
    dead_list = ", ".join(str(j) for j in dash.dead) or "none"
    dense_rows = [[f"{j}", float(dash.density[j])] for j in dash.dense]
    rows = []
    for j in shown[:limit]:
        card = dash.latents[j]
        rows.append([RawHTML(f'<a href="#latent-{j}">{j}</a>'), card.density, card.max_activation,
                     card.promoted[0][0] if card.promoted else ""])
    index = table_html(rows, ["latent", "density", "max activation", "top promoted token"])
    return [
        f"<style>{STYLE}</style>",
        ("Summary", summary_html(dash) + figure_html(dash.plot())),
        (f"Dead latents ({len(dash.dead)})", f'<p class="note">never fired on these tokens</p><p>{dead_list}</p>'),
        (f"Ultra-dense latents ({len(dash.dense)})",
         (table_html(dense_rows, ["latent", "density"]) if dense_rows else "<p>none</p>")
         + "".join(latent_card(dash.latents[j]) for j in dense_shown)),
        (f"Latents ({len(shown)})", note + index
         + "".join(latent_card(dash.latents[j]) for j in shown[:limit])),
    ]
