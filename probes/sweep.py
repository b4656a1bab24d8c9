"""``layer_sweep``: cross-validated probes at many sites in one batched fit, with controls beside every score.

For each site the sweep reports the cross-validated accuracy (R^2 for ridge) and, fitted in the same batched solve:

- a **control task** (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks"): every word type
  gets a random label drawn from the label distribution, fixed across its occurrences; **selectivity** = accuracy on
  the task minus accuracy on its control. A probe that scores high on the control memorises word identity rather
  than reading the property. The type of a row is, by default, the token the position rule reads (the tuple of
  tokens for a mean); pass ``control_types`` (e.g. the word carrying each text's label) to choose it, or
  ``control="none"`` for no control task. When the default types are one type (the rule reads the same token in every
  text) the control is *not applicable*: the sweep still runs, ``control`` is NaN and ``control_note`` says why;
- a **shuffled-label** baseline (labels permuted across texts: what the probe finds in noise);
- the **majority-class** baseline (always predicting the training folds' most frequent class; for ridge the R^2 of
  predicting the training mean).

Folds are stratified by class and never split a text's rows (``position="all"``). Every argument that can be
checked without activations (labels, folds against the class counts, family, ``C``/``alpha``, control types,
shuffles, sites, position, ...) is checked before the first forward pass.
"""

from __future__ import annotations

import html
import math
import numbers
import random
import textwrap
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.checks import check_int
from interp.hooks import layer_of
from interp.models.loading import as_hooked
from interp.probes.collect import Activations, collect_activations
from interp.probes.control import NOT_RUN, check_control, control_labels, default_types
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
    """``[site]``: the same probe's cross-validated score on the control task (NaN where no control task ran:
    see :attr:`control_note`)."""
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
    control_note: str | None = None
    """None when the control task ran; else why not (``"not applicable (<reason>; <how to supply one>)"`` when the
    default word types are a single type, or ``"not run (control='none')"``)."""
    fold_of: Tensor | None = field(default=None, compare=False, repr=False)
    """``[text]``: the cross-validation fold of each text (to reproduce a fold with another tool)."""
    probes: dict = field(default_factory=dict, compare=False, repr=False)
    """Site -> probe fitted on every row (real labels), for reading out and steering."""

    title = "Probe layer sweep"

    @property
    def selectivity(self) -> Tensor:
        """``accuracy - control`` per site (Hewitt & Liang 2019; NaN where no control task ran)."""
        return self.accuracy - self.control

    @property
    def has_control(self) -> bool:
        """Whether the control task ran (else :attr:`control_note` says why not)."""
        return self.control_note is None

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
            "control_note": self.control_note,
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
        if self.has_control:
            fig.add_scatter(x=x, y=self.control.tolist(), name="control task (Hewitt & Liang)",
                            mode="lines+markers", line=dict(dash="dot"))
            fig.add_scatter(x=x, y=self.selectivity.tolist(), name="selectivity", mode="lines",
                            line=dict(dash="dash"))
        fig.add_scatter(x=x, y=self.shuffled.tolist(), name="shuffled labels", mode="lines", line=dict(dash="dot"))
        fig.add_scatter(x=x, y=[self.majority] * len(x), name="majority class" if self.metric == "accuracy"
                        else "training mean", mode="lines", line=dict(color="gray"))
        suffix = self.sites[0].split(".", 2)[-1] if isinstance(x[0], int) else "site"
        title = f"{self.family} probe at {suffix}, position {self.position!r} ({self.n_texts} texts, {self.folds}-fold)"
        lines = [] if self.has_control else textwrap.wrap(f"control: {self.control_note}", 110)
        if lines:
            title += "<br><sup>" + "<br>".join(html.escape(line, quote=False) for line in lines) + "</sup>"
        fig.update_layout(title=title, xaxis_title="layer" if isinstance(x[0], int) else "site", yaxis_title=name,
                          template="plotly_white", height=420 + 18 * len(lines))
        if lines:
            fig.update_layout(margin=dict(t=80 + 18 * len(lines)))
        return fig

    def _repr_html_(self) -> str:
        from interp.reports.html import notebook_figure

        note = "" if self.has_control else f"<p class='note'>control: {html.escape(self.control_note)}</p>"
        return note + notebook_figure(self.plot())

    def _html_sections(self) -> list:
        from interp.reports.html import figure_html, table_html

        name = "accuracy" if self.metric == "accuracy" else "R²"
        if self.has_control:
            rows = [(s, float(a), float(c), float(a - c), float(sh)) for s, a, c, sh in
                    zip(self.sites, self.accuracy, self.control, self.shuffled)]
            header = ["site", name, "control", "selectivity", "shuffled"]
            control = ("Control task: each word type gets a random label, fixed across its occurrences (Hewitt "
                       "&amp; Liang 2019); selectivity = score − control.")
        else:
            rows = [(s, float(a), float(sh)) for s, a, sh in zip(self.sites, self.accuracy, self.shuffled)]
            header = ["site", name, "shuffled"]
            control = f"<strong>control: {html.escape(self.control_note)}</strong>."
        note = (f"<p class='note'>{self.family} probes, {self.folds}-fold cross-validation over {self.n_texts} texts "
                f"({self.n_rows} rows), position <code>{html.escape(self.position)}</code>. {control} Majority "
                f"baseline: {self.majority:.4g}. Solver converged on {100 * self.converged:.1f}% of problems.</p>")
        return [figure_html(self.plot()), note, table_html(rows, header)]


def layer_sweep(model, texts: Sequence[str] | Tensor, labels: Sequence, sites: str | Sequence[str] =
                "blocks.*.hook_resid_post", position: str | int = "last", folds: int = 5, *,
                family: str = "logistic", C: float = 1.0, alpha: float = 1.0, control: str = "default",
                control_types: Sequence | None = None, shuffles: int = 1, seed: int = 0, normalize: bool = False,
                batch_size: int = 16, dtype: torch.dtype | None = None, memory_budget: int | str | None = None,
                attention_mask=None, keep_probes: bool = True, max_iter: int = 500, tol: float = 1e-6,
                progress: bool = True) -> SweepResult:
    """Probe ``sites`` (names or glob patterns) for ``labels`` of ``texts`` at ``position`` in one forward pass
    per batch and one batched fit; see :func:`collect_activations` for ``batch_size``, ``dtype`` and
    ``memory_budget`` and :func:`sweep_activations` for the rest (``control``, ``control_types`` included).
    Every argument is checked before the first forward pass (the sites and position rule by
    :func:`collect_activations`, over every text)."""
    model = as_hooked(model, "layer_sweep")
    _check_args(labels, _n_texts(texts), folds, family=family, C=C, alpha=alpha, control=control,
                control_types=control_types, shuffles=shuffles, seed=seed, max_iter=max_iter, tol=tol,
                normalize=normalize, keep_probes=keep_probes)
    acts = collect_activations(model, texts, sites, position, attention_mask=attention_mask, batch_size=batch_size,
                               dtype=dtype, memory_budget=memory_budget, progress=progress)
    return sweep_activations(acts, labels, folds, family=family, C=C, alpha=alpha, control=control,
                             control_types=control_types, shuffles=shuffles, seed=seed, normalize=normalize,
                             keep_probes=keep_probes, max_iter=max_iter, tol=tol)


def sweep_activations(acts: Activations, labels: Sequence, folds: int = 5, *, family: str = "logistic",
                      C: float = 1.0, alpha: float = 1.0, control: str = "default",
                      control_types: Sequence | None = None, shuffles: int = 1, seed: int = 0,
                      normalize: bool = False, keep_probes: bool = True, max_iter: int = 500,
                      tol: float = 1e-6) -> SweepResult:
    """The sweep on activations already collected (one label per text).

    ``family``: ``logistic`` (``C`` as scikit-learn's), ``ridge`` (``alpha``; numeric labels, scored by R^2) or
    ``mass_mean``. ``folds``: cross-validation folds (stratified by class; every class needs a text per fold).
    ``control``: ``"default"`` runs the control task (Hewitt & Liang 2019) on ``control_types``, one word type per
    text (e.g. the word each label rests on), or without them on the token(s) read; when those are a single type
    (the position rule reads the same token in every text) the control is not applicable: the sweep still runs,
    ``control`` and ``selectivity`` are NaN and :attr:`SweepResult.control_note` says why. ``control="none"``: no
    control task. Given ``control_types`` that cannot make one (wrong length, a single type) raise.
    ``shuffles``: shuffled-label fits. ``normalize``: standardise each feature with its mean and standard deviation
    over all rows (label-free) before fitting. ``max_iter``, ``tol``: the logistic solver's (scikit-learn's lbfgs).
    The fit works on a float64 copy of each group of equal-width sites (twice the float32 rows' memory).
    """
    y, classes, given = _check_args(labels, acts.n_texts, folds, family=family, C=C, alpha=alpha, control=control,
                                    control_types=control_types, shuffles=shuffles, seed=seed, max_iter=max_iter,
                                    tol=tol, normalize=normalize, keep_probes=keep_probes)
    rng = random.Random(seed)
    fold_of = _folds(y, classes, folds, rng)
    rows = acts.row_text
    if control == "none":
        types, source, note = None, "none", NOT_RUN
    elif given is not None:
        types, source, note = [given[int(t)] for t in rows], "given", None
    else:
        types, note = default_types(acts.types, acts.position)
        source = "token"
    label_sets = [y[rows]]
    if types is not None:
        label_sets.append(control_labels(y, types, rows, rng))
    first_shuffle = len(label_sets)
    label_sets += [y[torch.tensor(rng.sample(range(len(y)), len(y)))][rows] for _ in range(shuffles)]
    Y = torch.stack(label_sets)                                               # [L, rows]
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
    nan = torch.full((len(order),), float("nan"), dtype=S.dtype)
    hyper = {"C": C} if family == "logistic" else {"alpha": alpha} if family == "ridge" else {}
    hyper.update(normalize=normalize, seed=seed, control_types=source, shuffles=shuffles)
    return SweepResult(
        sites=tuple(order), metric="r2" if family == "ridge" else "accuracy", accuracy=S[:, :, 0].mean(1),
        accuracy_folds=S[:, :, 0], control=nan if types is None else S[:, :, 1].mean(1),
        shuffled=S[:, :, first_shuffle:].mean((1, 2)) if shuffles else nan,
        majority=_majority(y[rows], fold_rows, folds, family), family=family, position=str(acts.position),
        classes=None if classes is None else tuple(classes), folds=folds, n_texts=acts.n_texts,
        n_rows=acts.n_rows, hyper=hyper, converged=conv / max(total, 1), control_note=note, fold_of=fold_of,
        probes=fitted)


def _n_texts(texts) -> int:
    if isinstance(texts, Tensor):
        return 1 if texts.ndim == 1 else int(texts.shape[0])
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a non-empty list of strings or token ids [n, pos]; got {type(texts).__name__}")
    return len(texts)


def _check_args(labels, n_texts: int, folds, *, family, C, alpha, control, control_types, shuffles, seed,
                max_iter=500, tol=1e-6, normalize=False, keep_probes=True) -> tuple[Tensor, list | None, list | None]:
    """Every check that needs no activations, so that a bad argument fails before the forward passes:
    ``(labels as a tensor, class names or None, control_types as a list or None)``."""
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    check_int(folds, "folds", lo=2)
    check_int(shuffles, "shuffles", lo=0)
    check_int(seed, "seed")
    check_int(max_iter, "max_iter", lo=1)
    _check_positive(tol, "tol", "the solver's gradient tolerance")
    _check_flag(normalize, "normalize")
    _check_flag(keep_probes, "keep_probes")
    if family == "logistic":
        _check_positive(C, "C", "the inverse regularisation strength, scikit-learn's C; without a penalty the "
                        "objective has no minimiser on separable data")
    elif family == "ridge":
        _check_positive(alpha, "alpha", "the ridge penalty, scikit-learn's alpha")
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise TypeError(f"labels must be a sequence of one label per text; got {type(labels).__name__}")
    if len(labels) != n_texts:
        raise ValueError(f"labels has {len(labels)} entries but there are {n_texts} texts; give one label per text")
    y, classes = _prepare_labels(labels, family)
    _check_folds(y, classes, folds)
    return y, classes, check_control(control, control_types, n_texts)


def _check_positive(value, arg: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg} must be a positive finite number ({what}); got {type(value).__name__} {value!r}")
    if not 0 < value < math.inf:
        raise ValueError(f"{arg} must be a positive finite number ({what}); got {value!r}")
    return float(value)


def _check_flag(value, arg: str) -> None:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{arg} must be True or False; got {type(value).__name__} {value!r}")


def _prepare_labels(labels: Sequence, family: str) -> tuple[Tensor, list | None]:
    labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
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


def _check_folds(y: Tensor, classes: list | None, folds: int) -> None:
    """Every fold's training set can be fitted: ``folds`` texts per class, at least 2 texts to train on."""
    n = y.shape[0]
    if folds > n:
        raise ValueError(f"folds={folds} exceeds the {n} texts")
    if classes is not None:
        counts = torch.bincount(y, minlength=len(classes)).tolist()
        small = [(c, k) for c, k in zip(classes, counts) if k < folds]
        if small:
            raise ValueError(f"labels: class {small[0][0]!r} has {small[0][1]} text(s), fewer than folds={folds}; "
                             "every class needs one per fold (use fewer folds or more texts)")
    least = n - math.ceil(n / folds)
    if least < 2:
        raise ValueError(f"folds={folds} over {n} texts leaves {least} text(s) to train on in some fold; a fit needs "
                         "at least 2 (use fewer folds or more texts)")


def _folds(y: Tensor, classes: list | None, folds: int, rng: random.Random) -> Tensor:
    """Fold index per text, stratified by class (checked by :func:`_check_folds`)."""
    n = y.shape[0]
    fold = torch.empty(n, dtype=torch.long)
    groups = [list(range(n))] if classes is None else [(y == c).nonzero().flatten().tolist()
                                                        for c in range(len(classes))]
    offset = 0
    for g in groups:
        rng.shuffle(g)
        for r, i in enumerate(g):
            fold[i] = (r + offset) % folds
        offset += len(g)
    return fold


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
