"""Linear probes over any hooked site: ``interp.probes``.

``LinearProbe.fit(X, y, C=...)`` is L2-regularised logistic regression (binary: one sigmoid weight vector;
multi-class: softmax), the estimator of Alain & Bengio 2016, "Understanding intermediate layers using linear
classifier probes", with scikit-learn's objective so that results can be checked against ``LogisticRegression``.
``probe_activations(model, site, tokens)`` reads the training inputs off a model.
"""

from interp.probes.linear import LinearProbe, probe_activations

__all__ = ["LinearProbe", "probe_activations"]
