"""Lenses: decode every layer's residual stream as next-token predictions.

- :func:`logit_lens` (nostalgebraist 2020): the final norm and unembedding applied to each layer's stream;
  a :class:`LogitLensResult` with the answer's rank and probability by layer and the top tokens.
- :class:`TunedLens` (Belrose et al. 2023): one trained affine translator per layer before that decoding;
  ``TunedLens.train(model)``, ``save`` / ``load``, ``logit_lens(model, prompt, lens=tuned)``.
- :func:`evaluate_lenses` / :class:`LensEval`: held-out KL(final || lens) per layer, tuned vs logit lens.

Both ride on the residual stream (``cache.accumulated_resid``), so they run on transformers and Mamba alike.

>>> from interp import lenses
>>> lenses.logit_lens(model, "The Eiffel Tower is located in the city of").plot()
>>> tuned = lenses.TunedLens.train(model, steps=60); tuned.heldout.plot()
"""

from interp.lenses.evaluate import LensEval, evaluate_lenses, kl_to_final
from interp.lenses.logit import LogitLensResult, layer_logits, logit_lens
from interp.lenses.training import TrainConfig, train_tuned_lens
from interp.lenses.tuned import TunedLens, model_identity, resid_stack

__all__ = ["logit_lens", "LogitLensResult", "layer_logits", "TunedLens", "TrainConfig", "train_tuned_lens",
           "evaluate_lenses", "LensEval", "kl_to_final", "resid_stack", "model_identity"]
