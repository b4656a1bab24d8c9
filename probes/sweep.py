"""``layer_sweep``: cross-validated probes at many sites in one batched fit, with controls beside every score.

For each site the sweep reports the cross-validated accuracy (R^2 for ridge) and, fitted in the same batched solve:

- a **control task** (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks"): every word type
  gets a random label drawn from the label distribution, fixed across its occurrences; **selectivity** = accuracy on
  the task minus accuracy on its control. A probe that scores high on the control memorises word identity rather
  than reading the property. The type of a row is, by default, the token the position rule reads (the tuple of
  tokens for a mean); pass ``control_types`` (e.g. the word carrying each text's label) to choose it;
- a **shuffled-label** baseline (labels permuted across texts: what the probe finds in noise);
- the **majority-class** baseline (always predicting the training folds' most frequent class; for ridge the R^2 of
  predicting the training mean).

Folds are stratified by class and never split a text's rows (``position="all"``).
"""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.hooks import layer_of
from interp.probes.collect import Activations, collect_activations
from interp.probes.families import MassMeanProbe, RidgeProbe
from interp.probes.linear import LinearProbe
from interp.probes.trainer import FAMILIES, decision_batched, fit_batched
from interp.reports import Result

__all__ = ["SweepResult", "layer_sweep", "sweep_activations"]


@dataclass(frozen=True)
class SweepResult(Result):
    """Probe scores per site with their controls (Hewitt & Liang 2019)."""

    sites: tuple[str, ...]
    """Site names, in forward order."""
    metric: str
    """``"accuracy"`` (classifiers) or ``"r2"`` (ridge)."""
    accuracy: Tensor
    """``[site]``: the cross-validated score (mean over folds of held-out accuracy, or R^2)."""
    accuracy_folds: Tensor
    """``[site, fold]``: held-out score per fold."""
    control: Tensor
    """``[site]``: the same probe's cross-validated score on the control task."""
    shuffled: Tensor
    """``[site]``: the cross-validated score with labels shuffled across texts (mean over shuffles)."""
    majority: float
    """The majority-class baseline (R^2 of the training mean for ridge), cross-validated."""
    family: str
    """``logistic``, ``ridge`` or ``mass_mean``."""
    position: str
    """The position rule the activations were read at."""
    classes: tuple | None
    """Class names (index order of the probes' outputs); None for ridge."""
    folds: int
    """Number of cross-validation folds."""
    n_texts: int
    """Texts probed."""
    n_rows: int
    """Rows fitted (texts, or tokens for ``position="all"``)."""
    hyper: dict = field(default_factory=dict)
    """Regularisation (``C`` or ``alpha``), normalisation, seed, control-type source."""
    converged: float = 1.0
    """Fraction of the batched problems whose solver met its tolerance."""
    fold_of: Tensor | None = field(default=None, compare=False, repr=False)
    """``[text]``: the cross-validation fold of each text (to reproduce a fold with another tool)."""
    probes: dict = field(default_factory=dict, compare=False, repr=False)
    """Site -> probe fitted on every row (real labels), for reading out and steering."""

    title = "Probe layer sweep"

    @property
    def selectivity(self) -> Tensor:
        """``accuracy - control`` per site (Hewitt & Liang 2019)."""
        return self.accuracy - self.control

    def best(self) -> str:
        """The site with the highest cross-validated score."""
        return self.sites[int(self.accuracy.argmax())]

    def probe(self, site: str | None = None):
        """The probe fitted on every row at ``site`` (default: :meth:`best`)."""
        site = self.best() if site is None else site
        if site not in self.probes:
            raise KeyError(f"no probe kept for {site!r}; sites: {', '.join(self.sites)} (keep_probes=True keeps them)")
        return self.probes[site]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sites": list(self.sites), "accuracy": self.accuracy, "control": self.control, "majority": self.majority,
            "selectivity": self.selectivity, "shuffled": self.shuffled, "accuracy_folds": self.accuracy_folds,
            "metric": self.metric, "family": self.family, "position": self.position,
            "classes": None if self.classes is None else list(self.classes), "folds": self.folds,
            "n_texts": self.n_texts, "n_rows": self.n_rows, "hyper": self.hyper, "converged": self.converged,
        }

    def _x(self) -> list:
        layers = [layer_of(s) for s in self.sites]
        suffixes = {s.split(".", 2)[-1] for s in self.sites if layer_of(s) is not None}
        return layers if None not in layers and len(suffixes) == 1 and len(set(layers)) == len(layers) \
            else list(self.sites)

    def plot(self):
        import plotly.graph_objects as go

        x = self._x()
        std = self.accuracy_folds.std(1) if self.folds > 1 else None
        name = "accuracy" if self.metric == "accuracy" else "R²"
        fig = go.Figure()
        fig.add_scatter(x=x, y=self.accuracy.tolist(), name=f"{name} (cross-validated)", mode="lines+markers",
                        error_y=None if std is None else dict(type="data", array=std.tolist(), visible=True))
        fig.add_scatter(x=x, y=self.control.tolist(), name="control task (Hewitt & Liang)", mode="lines+markers",
                        line=dict(dash="dot"))
        fig.add_scatter(x=x, y=self.selectivity.tolist(), name="selectivity", mode="lines", line=dict(dash="dash"))
        fig.add_scatter(x=x, y=self.shuffled.tolist(), name="shuffled labels", mode="lines", line=dict(dash="dot"))
        fig.add_scatter(x=x, y=[self.majority] * len(x), name="majority class" if self.metric == "accuracy"
                        else "training mean", mode="lines", line=dict(color="gray"))
        suffix = self.sites[0].split(".", 2)[-1] if isinstance(x[0], int) else "site"
        fig.update_layout(title=f"{self.family} probe at {suffix}, position {self.position!r} "
                                f"({self.n_texts} texts, {self.folds}-fold)",
                          xaxis_title="layer" if isinstance(x[0], int) else "site", yaxis_title=name,
                          template="plotly_white", height=420)
        return fig

    def _html_sections(self) -> list:
        from interp.reports.html import figure_html, table_html

        rows = [(s, float(a), float(c), float(a - c), float(sh)) for s, a, c, sh in
                zip(self.sites, self.accuracy, self.control, self.shuffled)]
        name = "accuracy" if self.metric == "accuracy" else "R²"
        note = (f"<p class='note'>{self.family} probes, {self.folds}-fold cross-validation over {self.n_texts} texts "
                f"({self.n_rows} rows), position <code>{self.position}</code>. Control task: each word type gets a "
                "random label, fixed across its occurrences (Hewitt &amp; Liang 2019); selectivity = score − "
                f"control. Majority baseline: {self.majority:.4g}. Solver converged on "
                f"{100 * self.converged:.1f}% of problems.</p>")
        return [figure_html(self.plot()), note,
                table_html(rows, ["site", name, "control", "selectivity", "shuffled"])]


def layer_sweep(model, texts: Sequence[str] | Tensor, labels: Sequence, sites: str | Sequence[str] =
                "blocks.*.hook_resid_post", position: str | int = "last", folds: int = 5, *,
                family: str = "logistic", C: float = 1.0, alpha: float = 1.0, control_types: Sequence | None = None,
                shuffles: int = 1, seed: int = 0, normalize: bool = False, batch_size: int = 16,
                dtype: torch.dtype | None = None, memory_budget: int | str | None = None, attention_mask=None,
                keep_probes: bool = True, max_iter: int = 500, tol: float = 1e-6,
                progress: bool = True) -> SweepResult:
    """Probe ``sites`` (names or glob patterns) for ``labels`` of ``texts`` at ``position`` in one forward pass
    per batch and one batched fit; see :func:`collect_activations` for ``batch_size``, ``dtype`` and
    ``memory_budget`` and :func:`sweep_activations` for the rest."""
    n = texts.shape[0] if isinstance(texts, Tensor) else len(texts)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but there are {n} texts; give one label per text")
    _prepare_labels(labels, family)  # fail on bad labels before running the model
    acts = collect_activations(model, texts, sites, position, attention_mask=attention_mask, batch_size=batch_size,
                               dtype=dtype, memory_budget=memory_budget, progress=progress)
    return sweep_activations(acts, labels, folds, family=family, C=C, alpha=alpha, control_types=control_types,
                             shuffles=shuffles, seed=seed, normalize=normalize, keep_probes=keep_probes,
                             max_iter=max_iter, tol=tol)


def sweep_activations(acts: Activations, labels: Sequence, folds: int = 5, *, family: str = "logistic",
                      C: float = 1.0, alpha: float = 1.0, control_types: Sequence | None = None, shuffles: int = 1,
                      seed: int = 0, normalize: bool = False, keep_probes: bool = True, max_iter: int = 500,
                      tol: float = 1e-6) -> SweepResult:
    """The sweep on activations already collected (one label per text).

    ``family``: ``logistic`` (``C`` as scikit-learn's), ``ridge`` (``alpha``; numeric labels, scored by R^2) or
    ``mass_mean``. ``folds``: cross-validation folds (stratified by class). ``control_types``: one word type per
    text for the control task (default: the token(s) read). ``shuffles``: shuffled-label fits. ``normalize``:
    standardise each feature with its mean and standard deviation over all rows (label-free) before fitting.
    The fit works on a float64 copy of each group of equal-width sites (twice the float32 rows' memory).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ValueError(f"folds must be an int >= 2; got {folds!r}")
    if not isinstance(shuffles, int) or shuffles < 0:
        raise ValueError(f"shuffles must be an int >= 0; got {shuffles!r}")
    if len(labels) != acts.n_texts:
        raise ValueError(f"labels has {len(labels)} entries but {acts.n_texts} texts were read")
    y, classes = _prepare_labels(labels, family)
    rng = random.Random(seed)
    fold_of = _folds(y, classes, folds, rng)
    types, source = _types(acts, control_types)
    control = _control_labels(y, classes, types, acts.row_text, rng)
    shuffled = [y[torch.tensor(rng.sample(range(len(y)), len(y)))] for _ in range(shuffles)]
    rows = acts.row_text
    Y = torch.stack([y[rows], control, *(s[rows] for s in shuffled)])          # [L, rows]
    fold_rows = fold_of[rows]
    train = torch.stack([fold_rows != f for f in range(folds)] + [torch.ones_like(fold_rows, dtype=torch.bool)])
    n_cls = None if classes is None else len(classes)
    scores: dict[str, Tensor] = {}
    fitted: dict[str, Any] = {}
    conv, total = 0, 0
    for names, X in acts.groups:
        Xf, mean, scale = _normalized(X, normalize)
        fit = fit_batched(Xf, Y, train, family, n_classes=n_cls, C=C, alpha=alpha, max_iter=max_iter, tol=tol)
        conv, total = conv + int(fit.converged[:, :folds].sum()), total + fit.converged[:, :folds].numel()
        dec = decision_batched(Xf, fit)                                       # [S, rows, F+1, L, k]
        score = _scores(dec[:, :, :folds], Y, ~train[:folds], family)         # [S, F, L]
        for i, name in enumerate(names):
            scores[name] = score[i]
            if keep_probes:
                fitted[name] = _probe(family, fit, i, folds, classes, C, alpha, mean, scale, name, acts)
    if conv < total:
        warnings.warn(f"{total - conv} of {total} cross-validation fits did not reach tol={tol} within "
                      f"max_iter={max_iter} iterations (SweepResult.converged = {conv / total:.3f}); raise max_iter "
                      "or lower C", RuntimeWarning, stacklevel=2)
    order = list(acts.sites)
    S = torch.stack([scores[s] for s in order])                               # [S, F, L]
    hyper = {"C": C} if family == "logistic" else {"alpha": alpha} if family == "ridge" else {}
    hyper.update(normalize=normalize, seed=seed, control_types=source, shuffles=shuffles)
    return SweepResult(
        sites=tuple(order), metric="r2" if family == "ridge" else "accuracy", accuracy=S[:, :, 0].mean(1),
        accuracy_folds=S[:, :, 0], control=S[:, :, 1].mean(1),
        shuffled=S[:, :, 2:].mean((1, 2)) if shuffles else torch.full((len(order),), float("nan")),
        majority=_majority(y[rows], fold_rows, folds, family), family=family, position=str(acts.position),
        classes=None if classes is None else tuple(classes), folds=folds, n_texts=acts.n_texts,
        n_rows=acts.n_rows, hyper=hyper, converged=conv / max(total, 1), fold_of=fold_of, probes=fitted)


def _prepare_labels(labels: Sequence, family: str) -> tuple[Tensor, list | None]:
    labels = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    if not labels:
        raise ValueError("labels is empty")
    if family == "ridge":
        bad = [(i, v) for i, v in enumerate(labels) if isinstance(v, bool) or not isinstance(v, (int, float))
               or not math.isfinite(v)]
        if bad:
            i, v = bad[0]
            raise ValueError(f"labels: ridge regression needs finite numeric targets; label {i} is {v!r}"
                             f"{f' ({len(bad)} such labels)' if len(bad) > 1 else ''}")
        y = torch.tensor(labels, dtype=torch.float64)
        if float(y.std()) == 0:
            raise ValueError("labels: every regression target is the same value; there is nothing to predict")
        return y, None
    try:
        classes = sorted(set(labels), key=lambda v: (type(v).__name__, v))
    except TypeError:
        raise ValueError("labels must be hashable class names (strings or numbers)") from None
    if len(classes) < 2:
        raise ValueError(f"labels hold a single class ({classes[0]!r}); a probe needs at least 2 classes")
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[v] for v in labels], dtype=torch.long), classes


def _folds(y: Tensor, classes: list | None, folds: int, rng: random.Random) -> Tensor:
    """Fold index per text, stratified by class (a class with fewer texts than folds raises)."""
    n = y.shape[0]
    if folds > n:
        raise ValueError(f"folds={folds} exceeds the {n} texts")
    fold = torch.empty(n, dtype=torch.long)
    groups = [list(range(n))] if classes is None else [(y == c).nonzero().flatten().tolist()
                                                        for c in range(len(classes))]
    if classes is not None:
        small = [(classes[c], len(g)) for c, g in enumerate(groups) if len(g) < folds]
        if small:
            raise ValueError(f"labels: class {small[0][0]!r} has {small[0][1]} text(s), fewer than folds={folds}; "
                             "every class needs one per fold (use fewer folds or more texts)")
    offset = 0
    for g in groups:
        rng.shuffle(g)
        for r, i in enumerate(g):
            fold[i] = (r + offset) % folds
        offset += len(g)
    return fold


def _types(acts: Activations, control_types: Sequence | None) -> tuple[list, str]:
    if control_types is not None:
        if len(control_types) != acts.n_texts:
            raise ValueError(f"control_types has {len(control_types)} entries for {acts.n_texts} texts")
        types = [control_types[int(t)] for t in acts.row_text]
        source = "given"
    else:
        types, source = list(acts.types), "token"
    if len(set(types)) < 2:
        raise ValueError(f"control task: every row has the same word type ({types[0]!r}; position "
                         f"{str(acts.position)!r} reads the same token in every text), so a control task "
                         "(Hewitt & Liang 2019) has one type; pass control_types= (CLI: --control-key) naming the "
                         "word each text's label rests on")
    return types, source


def _control_labels(y: Tensor, classes: list | None, types: list, row_text: Tensor, rng: random.Random) -> Tensor:
    """Hewitt & Liang's control task: one random label per word type, drawn from the empirical label
    distribution of the texts, the same wherever the type occurs."""
    pool = y[row_text].tolist()
    table: dict = {}
    for t in types:
        if t not in table:
            table[t] = pool[rng.randrange(len(pool))]
    return torch.tensor([table[t] for t in types], dtype=y.dtype)


def _normalized(X: Tensor, normalize: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    if not normalize:
        return X, None, None
    Xd = X.double()
    mean = Xd.mean(1, keepdim=True)
    scale = Xd.std(1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (Xd - mean) / scale, mean[:, 0], scale[:, 0]


def _scores(dec: Tensor, Y: Tensor, test: Tensor, family: str) -> Tensor:
    """Held-out score per (site, fold, label set): accuracy, or R^2 for ridge."""
    mask = test.T.to(dec.dtype)[None, :, :, None]                              # [1, rows, F, 1]
    count = mask.sum(1)
    Yt = Y.T[None, :, None, :]                                                 # [1, rows, 1, L]
    if family == "ridge":
        pred = dec[..., 0]
        mean = (Yt * mask).sum(1, keepdim=True) / count[:, None]
        ss_res = ((Yt - pred).pow(2) * mask).sum(1)
        ss_tot = ((Yt - mean).pow(2) * mask).sum(1)
        return 1 - ss_res / ss_tot.clamp_min(1e-300)
    pred = (dec[..., 0] > 0).long() if dec.shape[-1] == 1 else dec.argmax(-1)  # [S, rows, F, L]
    return ((pred == Yt).to(dec.dtype) * mask).sum(1) / count


def _majority(y: Tensor, fold_rows: Tensor, folds: int, family: str) -> float:
    out = []
    for f in range(folds):
        tr, te = y[fold_rows != f], y[fold_rows == f]
        if family == "ridge":
            ss_tot = (te - te.mean()).pow(2).sum()
            out.append(float(1 - (te - tr.mean()).pow(2).sum() / ss_tot) if ss_tot > 0 else float("nan"))
        else:
            top = Counter(tr.tolist()).most_common(1)[0][0]
            out.append(float((te == top).double().mean()))
    return sum(out) / len(out)


def _probe(family, fit, i, folds, classes, C, alpha, mean, scale, site, acts):
    W, b = fit.W[i, folds, 0], fit.b[i, folds, 0]
    meta = dict(site=site, position=str(acts.position), classes=None if classes is None else list(classes),
                mean=None if mean is None else mean[i], scale=None if scale is None else scale[i])
    if family == "logistic":
        return LinearProbe.from_weights(W, b, C=C, converged=bool(fit.converged[i, folds, 0]), **meta)
    if family == "ridge":
        return RidgeProbe.from_weights(W, b, hyper={"alpha": alpha}, **meta)
    return MassMeanProbe.from_weights(W, b, **meta)
