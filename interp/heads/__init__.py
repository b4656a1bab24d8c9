"""Head discovery: six detectors, causal validation, and one report.

>>> from interp import heads
>>> report = heads.detect(model)                      # every kind; top-5 heads per kind, validated causally
>>> report.top("induction", 3)                        # [Head(layer, head, score), ...]
>>> report.validation["induction"].verdict            # top-k vs random-k ablation, in words
>>> report.save_html("report.html"); report.save_json("scores.json")
>>> with heads.ablate(model, [(17, 3)], how="mean"):  # any forward pass inside runs without that head
...     logits = model(tokens)

Detectors (one module each; ``score(model, ..., *, seed) -> Tensor[n_layers, n_heads]``; ``KINDS`` names them in
report order and ``SCORERS`` maps each name to its function):

- ``previous_token``, ``duplicate_token``: attention-pattern scores (Olsson et al. 2022; Wang et al. 2022);
- ``induction``: prefix matching on repeated random tokens, plus a separate copying score (Olsson et al. 2022);
- ``retrieval``: needle-in-a-haystack copy-paste (Wu et al. 2024);
- ``successor``: OV succession over ordinal tasks (Gould et al. 2023);
- ``ngram``: order-k match scores, k = 1, 2, 3 (Akyürek et al. 2024).

Works on every ``HookedModel`` with attention heads, and on Mamba through implicit attention (kinds that need an
OV circuit are skipped with the reason).
"""

from interp.heads import duplicate_token, induction, ngram, previous_token, retrieval, successor
from interp.heads.ablation import ablate
from interp.heads.config import KINDS, HeadsConfig
from interp.heads.detect import detect, detect_config
from interp.heads.report import Head, HeadReport, top_heads
from interp.heads.validation import Validation

SCORERS = {
    "induction": induction.score,
    "previous_token": previous_token.score,
    "duplicate_token": duplicate_token.score,
    "retrieval": retrieval.score,
    "successor": successor.score,
    "ngram": ngram.score,
}
"""Kind name -> its ``score`` function (the registry; no ``eval``)."""

__all__ = ["detect", "detect_config", "ablate", "HeadReport", "HeadsConfig", "Head", "Validation", "KINDS", "SCORERS",
           "top_heads", "previous_token", "duplicate_token", "induction", "retrieval", "successor", "ngram"]
