"""Writes notebooks/10_lenses.ipynb (without outputs): `python notebooks/build_10_lenses.py`."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("""# 10 · Logit lens and tuned lens

The **logit lens** (nostalgebraist 2020, "interpreting GPT: the logit lens") decodes every layer's residual stream with
the model's own final norm and unembedding: `logits_l = ln_final(resid_l) @ W_U + b_U`. The **tuned lens** (Belrose et
al. 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens") first passes layer *l*'s stream through
a trained affine translator `A_l h + b_l` (initialised at the identity, trained so the decoded distribution matches the
final layer's: KL(final || lens)). Both ride on the residual stream, so they run on transformers and Mamba alike.

Under `CI=true` the training runs are a few steps on a few hundred tokens."""),
    new_code_cell("""import os

import interp
from interp import lenses

SMALL = os.environ.get("CI") == "true"
model = interp.load_model("smollm2")
prompt = "The Eiffel Tower is located in the city of"
result = lenses.logit_lens(model, prompt, " Paris")
result.plot()"""),
    new_markdown_cell("""Top: the top-1 token of every (layer, position), coloured by its probability (nostalgebraist's
figure). Bottom: the rank and probability of ` Paris` at the last position, by layer."""),
    new_code_cell("""ranks, probs = result.answer_rank.tolist(), result.answer_prob.tolist()
rows = zip(result.labels, ranks, probs, result.top_tokens)
for label, rank, prob, top in rows:
    if label.split("_")[0] in {"0", "10", "15", "20", "24", "27", "29", "final"}:
        print(f"{label:>10}  rank {rank:>6}  P {prob:.3f}  top {top[:3]}")
print("top-1 from", result.labels[result.first_layer_top()])"""),
    new_markdown_cell("""## Tuned lens on SmolLM2

Trained on the builtin offline corpus (standard-library docstrings) with a held-out split; `heldout` compares the
held-out KL per layer with the logit lens's. (The README's figures come from a longer run of `interp tuned-lens`.)"""),
    new_code_cell("""sizes = dict(steps=3, batch_size=2, context_length=32, max_rows=10) if SMALL else \\
    dict(steps=8, batch_size=4, context_length=128, max_rows=40)
tuned = lenses.TunedLens.train(model, heldout=0.2, **sizes)
print(tuned.training_info["train_tokens"], "training tokens in", tuned.training_info["seconds"], "s;",
      "tuned lens better at", sum(tuned.heldout.tuned_wins()), "of", model.n_layers, "layers")
tuned.heldout.plot()"""),
    new_code_cell("""lenses.logit_lens(model, prompt, " Paris", lens=tuned).plot()"""),
    new_markdown_cell("""## A Mamba from the zoo

The same two lenses on `mamba1-facts` (a tiny Mamba-1 trained on synthetic facts), with its own training text."""),
    new_code_cell("""import random

from interp import zoo
from interp.saes.tokens import pack_texts
from interp.zoo.corpus import train_sequence

mamba = zoo.load("mamba1-facts")
rng = random.Random(0)
texts = [train_sequence(rng, zoo.fact_table("mamba1-facts"), 40) for _ in range(160 if SMALL else 400)]
tokens = pack_texts(texts, mamba.tokenizer, 32)
mamba_lens = lenses.TunedLens.train(mamba, tokens, steps=40 if SMALL else 100, batch_size=8, lr=3e-3, heldout=0.2)
mamba_lens.heldout.plot()"""),
    new_code_cell("""fact = zoo.facts("mamba1-facts")[0]
print(fact.text)
lenses.logit_lens(mamba, fact.tokens, lens=mamba_lens).plot()"""),
]

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}, "language_info": {"name": "python"}})
path = Path(__file__).resolve().parent / "10_lenses.ipynb"
nbformat.write(nb, path)
print("wrote", path)
