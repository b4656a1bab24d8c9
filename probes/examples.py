"""Worked examples behind the README's Probes section: ``python -m interp.probes.examples OUT [--which ...]``.

- ``smollm2``: which SmolLM2 layers encode the sentiment of templated reviews, negated ones included
  (:func:`~interp.probes.datasets.sentiment_texts`), read at the final "." with logistic and mass-mean probes,
  controls beside every score; then steering along the mass-mean direction (Marks & Tegmark 2023) at the most
  selective layer: the logit difference of positive vs negative words against the coefficient, projection
  ablation, and greedy continuations.
- ``mamba``: the same sweep on the zoo's Mamba-2 (``mamba2-facts``) at its residual and recurrent-state sites: does
  the last prompt token know which half of the attribute list the fact's answer falls in?

Each writes an HTML report per result, a JSON summary and small SVG line charts (no browser needed).
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

from interp.atomic import atomic_write_json

__all__ = ["smollm2_example", "mamba_example", "line_svg"]

POSITIVE_WORDS = (" great", " wonderful", " excellent", " amazing", " good")
NEGATIVE_WORDS = (" terrible", " awful", " horrible", " boring", " bad")
STEER_PROMPTS = ("I watched the movie last night. Honestly, it was", "We ate at the new restaurant. The food was",
                 "My trip to the coast was", "The concert yesterday was", "I read the book and found it")


def line_svg(x: list, series: dict[str, list[float]], path: str | Path, *, title: str, xlabel: str, ylabel: str,
             width: int = 640, height: int = 300) -> Path:
    """A small self-contained SVG line chart (one polyline per series) for READMEs."""
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#7f7f7f", "#ff7f0e"]
    left, right, top, bottom = 56, 170, 30, 40
    vals = [v for ys in series.values() for v in ys if v == v]
    lo, hi = min(vals), max(vals)
    lo, hi = (lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1))
    xs = list(range(len(x)))
    W, H = width - left - right, height - top - bottom

    def px(i: float) -> float:
        return left + W * i / max(len(x) - 1, 1)

    def py(v: float) -> float:
        return top + H * (1 - (v - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="16" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{left}" y1="{top + H}" x2="{left + W}" y2="{top + H}" stroke="#444"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + H}" stroke="#444"/>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        out.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>'
                   f'<line x1="{left}" y1="{py(v):.1f}" x2="{left + W}" y2="{py(v):.1f}" stroke="#eee"/>')
    step = max(1, len(x) // 10)
    for i in xs[::step]:
        out.append(f'<text x="{px(i):.1f}" y="{top + H + 14}" text-anchor="middle">{html.escape(str(x[i]))}</text>')
    out.append(f'<text x="{left + W / 2}" y="{height - 6}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text x="14" y="{top + H / 2}" transform="rotate(-90 14 {top + H / 2})" text-anchor="middle">'
               f'{html.escape(ylabel)}</text>')
    for j, (name, ys) in enumerate(series.items()):
        c = colors[j % len(colors)]
        pts = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in zip(xs, ys) if v == v)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        out.append(f'<line x1="{left + W + 10}" y1="{top + 14 * j + 6}" x2="{left + W + 28}" y2="{top + 14 * j + 6}" '
                   f'stroke="{c}" stroke-width="2"/><text x="{left + W + 32}" y="{top + 14 * j + 10}">'
                   f'{html.escape(name)}</text>')
    out.append("</svg>")
    path = Path(path)
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def _sweep_summary(result) -> dict:
    return {"accuracy": [round(float(a), 4) for a in result.accuracy],
            "control": [round(float(a), 4) for a in result.control],
            "selectivity": [round(float(a), 4) for a in result.selectivity],
            "shuffled": [round(float(a), 4) for a in result.shuffled], "majority": round(result.majority, 4),
            "best": result.best(), "sites": list(result.sites)}


def _sweep_svg(result, path: Path, title: str) -> None:
    x = [v if isinstance(v, int) else v.replace("blocks.", "").replace("mixer.", "").replace("hook_", "")
         for v in result._x()]
    line_svg(x, {"accuracy": result.accuracy.tolist(), "control task": result.control.tolist(),
                 "selectivity": result.selectivity.tolist(), "shuffled labels": result.shuffled.tolist(),
                 "majority": [result.majority] * len(x)}, path, title=title,
             xlabel="layer" if isinstance(x[0], int) else "site", ylabel="held-out accuracy")


def smollm2_example(out: str | Path, *, n: int = 1200, seed: int = 0, model=None, steer_only: bool = False) -> dict:
    """Sentiment sweep (logistic and mass-mean) and steering on SmolLM2; writes reports into ``out``.
    ``steer_only`` reruns the steering part from the direction and summary a previous run saved in ``out``."""
    import interp
    from interp.probes.base import load_probe
    from interp.probes.collect import collect_activations
    from interp.probes.datasets import sentiment_texts
    from interp.probes.sweep import sweep_activations

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = interp.load_model("smollm2") if model is None else model
    if steer_only:
        summary = json.loads((out / "smollm2_summary.json").read_text())
        probe = load_probe(out / "smollm2_sentiment_direction")
    else:
        data = sentiment_texts(n, seed=seed)
        acts = collect_activations(model, list(data.texts), "blocks.*.hook_resid_post", "last", batch_size=32)
        summary = {"texts": len(data), "position": "last (the final '.')"}
        results = {}
        for family in ("logistic", "mass_mean"):
            r = sweep_activations(acts, list(data.labels), 5, family=family, control_types=list(data.types),
                                  seed=seed)
            results[family] = r
            r.save_html(out / f"smollm2_sentiment_{family}.html")
            r.save_json(out / f"smollm2_sentiment_{family}.json")
            _sweep_svg(r, out / f"smollm2_sentiment_{family}.svg",
                       f"SmolLM2: sentiment at the final '.', {family} probe ({len(data)} reviews)")
            summary[family] = _sweep_summary(r)
        mm = results["mass_mean"]  # steer along the mass-mean direction where selectivity peaks
        probe = mm.probe(mm.sites[int(mm.selectivity.argmax())])
        probe.save(out / "smollm2_sentiment_direction")
    summary["steering"] = _steer_smollm2(model, probe, out)
    atomic_write_json(summary, out / "smollm2_summary.json")
    return summary


def _steer_smollm2(model, probe, out: Path) -> dict:
    """Add ``k * theta`` (theta = mu_positive - mu_negative, the mass-mean direction; Marks & Tegmark 2023) at
    every position of a few review prompts; the metric is the mean logit of positive minus negative words."""
    from interp.probes.steering import generate_steered, logit_diff_metric, steering_curve

    site = probe.site
    unit = float(probe.W[:, 0].norm())                   # |theta|: k = 1 moves the mean negative to the positive
    metric = logit_diff_metric(model, POSITIVE_WORDS, NEGATIVE_WORDS)
    ks = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
    coeffs = [k * unit for k in ks]
    curve = steering_curve(model, list(STEER_PROMPTS), site, probe, coeffs, metric)
    ablated = steering_curve(model, list(STEER_PROMPTS), site, probe, [1.0], metric, mode="project")
    shown = {-1.0: -unit, 0.0: 0.0, 1.0: unit}
    samples = generate_steered(model, STEER_PROMPTS[0], site, probe, list(shown.values()), max_new_tokens=12)
    curve = type(curve)(curve.site, curve.mode, curve.coeffs, curve.values, curve.metric, curve.site_norm,
                        {f"{k:+.1f} |theta|": samples[c] for k, c in shown.items()})
    curve.save_html(out / "smollm2_steering.html")
    line_svg([f"{k:+.1f}" for k in ks], {"logit diff (positive - negative words)": curve.mean.tolist()},
             out / "smollm2_steering.svg", title=f"SmolLM2: adding k x the mass-mean sentiment direction at {site}",
             xlabel="k (units of |mu_pos - mu_neg|)", ylabel="logit difference")
    return {"site": site, "theta_norm": round(unit, 2), "site_norm": round(curve.site_norm, 2), "k": ks,
            "logit_diff": [round(float(v), 3) for v in curve.mean],
            "logit_diff_per_prompt_min": [round(float(v), 3) for v in curve.values.min(1).values],
            "projected_out": round(float(ablated.mean[0]), 3), "samples": curve.samples}


def mamba_example(out: str | Path, *, seed: int = 0, name: str = "mamba2-facts") -> dict:
    """The sweep on a zoo Mamba's residual stream and SSM states at the last prompt token."""
    import interp
    from interp import zoo
    from interp.probes.collect import collect_activations
    from interp.probes.datasets import zoo_fact_texts
    from interp.probes.sweep import sweep_activations

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = interp.load_model(zoo.path(name))
    data = zoo_fact_texts(name, seed=seed)
    acts = collect_activations(model, list(data.texts), ["blocks.*.hook_resid_post", "blocks.*.mixer.hook_ssm_state"],
                               "last", batch_size=64)
    summary: dict = {"model": name, "texts": len(data)}
    for family in ("logistic", "mass_mean"):
        r = sweep_activations(acts, list(data.labels), 5, family=family, control_types=list(data.types), seed=seed)
        r.save_html(out / f"{name}_{family}.html")
        r.save_json(out / f"{name}_{family}.json")
        summary[family] = _sweep_summary(r)
        if family == "logistic":
            _sweep_svg(r, out / f"{name}_{family}.svg", f"{name}: answer half at the last token, logistic probe")
    atomic_write_json(summary, out / f"{name}_summary.json")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--which", choices=["smollm2", "mamba", "both"], default="both")
    parser.add_argument("--n", type=int, default=1200, help="SmolLM2 reviews (default 1200)")
    parser.add_argument("--steer-only", action="store_true", help="rerun only the SmolLM2 steering part")
    args = parser.parse_args(argv)
    if args.which in ("mamba", "both"):
        print(json.dumps(mamba_example(args.out), indent=1))
    if args.which in ("smollm2", "both"):
        print(json.dumps(smollm2_example(args.out, n=args.n, steer_only=args.steer_only), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
