"""Causal tracing of factual prompts (Meng et al. 2022) on SmolLM2 and on the zoo Mamba trained on facts: what the
models show, with the protocol untouched (10 noise samples, noise 3 x std(W_E) on the subject, window 10).

SmolLM2: the Eiffel Tower prompt and a handful more; the subject is the entity without its article; the target is
the model's own top prediction (ROME's protocol), and prompts whose top prediction is not the expected answer are
reported and left out of the averages. For each prompt: hidden-state restoration per (layer, token) and of the whole
subject span at once, MLP and attention restoration (window 10); then ROME's average by token category.

Zoo Mamba (``mamba1-facts`` and ``mamba2-facts``, 2 layers each): held-out fact prompts, hidden states (token and
span) and the mixer components of Sharma et al. 2024 (``conv``, ``ssm``, ``gate``, ``out``) with window 1.

Not a speed benchmark; run it under the CPU lock all the same:
``flock /tmp/interp-cpu.lock python bench/trace_facts.py [--out-dir DIR]`` (writes one HTML page per average).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import interp
from interp import tracing, zoo

SMOLLM2_FACTS = [  # (prompt, subject without its article, expected answer)
    ("The Eiffel Tower is located in the city of", "Eiffel Tower", " Paris"),
    ("The Colosseum is located in the city of", "Colosseum", " Rome"),
    ("The Great Wall is located in the country of", "Great Wall", " China"),
    ("Mount Fuji is located in the country of", "Mount Fuji", " Japan"),
    ("The Statue of Liberty is located in the city of", "Statue of Liberty", " New"),
    ("The Louvre is located in the city of", "Louvre", " Paris"),
    ("Big Ben is located in the city of", "Big Ben", " London"),
    ("The Taj Mahal is located in the country of", "Taj Mahal", " India"),
]


def _line(r: tracing.TraceResult, extra: str = "") -> str:
    s = r.summary()
    return (f"  P clean {r.p_clean:.3f} corrupt {r.p_corrupt:.3f} TE {r.total_effect:.3f} | last subject "
            f"{s['last_subject_peak_ie']:.3f} @L{s['last_subject_peak_layer']} | last token "
            f"{s['last_token_peak_ie']:.3f} @L{s['last_token_peak_layer']}{extra}")


def _span_peak(r: tracing.TraceResult) -> str:
    col = [i for i, u in enumerate(r.units) if len(u) > 1]
    if not col:
        return ""
    ie = r.indirect_effect[:, col[0]]
    return f" | span {float(ie.max()):.3f} @L{r.layers[int(ie.argmax())]}"


def _averages(name: str, runs: dict[str, list[tracing.TraceResult]], out_dir: Path | None) -> None:
    for mode, results in runs.items():
        if not results:
            continue
        avg = tracing.average_trace(results)
        print(f"{name} average over {avg.n_prompts} prompts, {mode} (mean TE {avg.mean_total_effect:.3f}):")
        for cat in avg.categories:
            layer, value = avg.peak(cat)
            row = " ".join(f"{v:.2f}" for v in avg.effect[avg.categories.index(cat)].tolist())
            print(f"  {cat:24s} peak {value:.3f} @L{layer}   [{row}]")
        if out_dir is not None:
            avg.save_html(out_dir / f"{name}-{mode.replace(' ', '-')}.html")


def _flows(name: str, flows: list[tracing.FlowResult]) -> None:
    """Geva et al. 2023: mean % change of P(answer) per source set and window centre, over the prompts."""
    if not flows:
        return
    mean = torch.stack([f.change for f in flows]).mean(0)
    print(f"{name} information flow (knock out edges into the last token, {flows[0].window}-layer windows, "
          f"{flows[0].mode}), mean % change of P(answer) over {len(flows)} prompts, by window centre:")
    for edge, row in zip(tracing.EDGES, mean):
        print(f"  {edge:12s} -> last: min {float(row.min()):6.1f}% @L{int(row.argmin())}   "
              + " ".join(f"{v:.0f}" for v in row.tolist()))


def smollm2(out_dir: Path | None) -> None:
    model = interp.load_model("smollm2")
    modes = {"resid token": dict(site="resid", restore="token"), "resid span": dict(site="resid", restore="span"),
             "mlp token": dict(site="mlp"), "attn token": dict(site="attn")}
    runs: dict[str, list] = {m: [] for m in modes}
    flows = []
    for prompt, subject, answer in SMOLLM2_FACTS:
        tokens = model.to_tokens(prompt)
        with torch.no_grad():
            top = int(model(tokens)[0, -1].argmax())
        got = model.to_string([top])
        print(f"{prompt!r} subject {subject!r}: top prediction {got!r} (expected {answer!r})")
        if got != answer:
            print("  skipped: the model does not know this fact")
            continue
        flows.append(tracing.information_flow(model, prompt, subject))
        for mode, kw in modes.items():
            r = tracing.causal_trace(model, prompt, subject, progress=False, **kw)
            runs[mode].append(r)
            print(f"  {mode:12s}" + _line(r, _span_peak(r)))
        if out_dir is not None and prompt.startswith("The Eiffel"):
            runs["resid token"][-1].save_html(out_dir / "smollm2-eiffel-resid-token.html")
            runs["resid span"][-1].save_html(out_dir / "smollm2-eiffel-resid-span.html")
    _averages("smollm2", runs, out_dir)
    _flows("smollm2", flows)


def mamba(name: str, n_prompts: int, out_dir: Path | None) -> None:
    model = zoo.load(name)
    prompts = zoo.facts(name)[:n_prompts]
    roles = model.components(0)
    comps = [c for c in ("conv", "ssm", "gate", "out") if c in roles]
    modes = {"resid token": dict(site="resid", restore="token"), "resid span": dict(site="resid", restore="span")}
    modes.update({f"{c} token": dict(site=c, window=1) for c in comps})
    runs: dict[str, list] = {m: [] for m in modes}
    known, flows, mixer_flows = 0, [], []
    for fp in prompts:
        tokens = torch.tensor([fp.tokens])
        with torch.no_grad():
            if int(model(tokens)[0, -1].argmax()) != fp.answer_id:
                continue
        known += 1
        if fp.subject_span[1] < len(fp.tokens):
            flows.append(tracing.information_flow(model, tokens, fp.subject_span, fp.answer_id, window=1))
            mixer_flows.append(tracing.information_flow(model, tokens, fp.subject_span, fp.answer_id, window=1,
                                                        mamba_mode="mixer"))
        for mode, kw in modes.items():
            runs[mode].append(tracing.causal_trace(model, tokens, fp.subject_span, fp.answer_id, progress=False,
                                                   **kw))
    print(f"{name}: {known} of {len(prompts)} held-out prompts answered correctly; e.g. {prompts[0].text!r} -> "
          f"{prompts[0].answer!r}, subject tokens {prompts[0].subject_span}")
    first = runs["resid token"][0]
    print("  first prompt, resid token IE [layer, token]:")
    for li, layer in enumerate(first.layers):
        print(f"    L{layer}: " + " ".join(f"{t.strip() or '_'}={v:.2f}" for t, v in
                                         zip(first.str_tokens, first.indirect_effect[li].tolist())))
    _averages(name, runs, out_dir)
    _flows(name, flows)
    _flows(name, mixer_flows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=None, help="write the HTML pages here")
    parser.add_argument("--mamba-prompts", type=int, default=40, help="held-out zoo prompts per Mamba model")
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("mamba1-facts", "mamba2-facts"):
        mamba(name, args.mamba_prompts, args.out_dir)
    if not args.skip_smollm2:
        smollm2(args.out_dir)


if __name__ == "__main__":
    main()
