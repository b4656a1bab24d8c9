"""One batched probe fit over all 30 SmolLM2 layers against 30 separate scikit-learn fits, same process.

Activations: the residual stream after every block (``blocks.*.hook_resid_post``) of SmolLM2-135M at the final
token of the toolkit's templated reviews (``interp.probes.datasets.sentiment_texts``, negated ones included),
collected once (``--activations PATH`` caches them between runs). Both sides fit L2 logistic regression with the
same ``C`` on the same stratified train split and score the same held-out rows; scikit-learn's
``LogisticRegression`` (lbfgs, its default tol 1e-4, max_iter raised so that it converges) gets float32 or
float64 input (``--sklearn-dtype``), ``fit_batched`` solves in float64 to the same gradient tolerance. Repeats are
interleaved; medians and their ratio are printed, with the largest per-layer accuracy difference.

    flock /tmp/interp-cpu.lock .venv/bin/python bench/probes.py --activations /tmp/probe_acts.safetensors
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def activations(path: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    if path and Path(path).is_file():
        saved = load_file(path)
        if saved["X"].shape[1] == n:
            return saved["X"], saved["y"]
    import interp
    from interp.probes import collect_activations
    from interp.probes.datasets import sentiment_texts

    model = interp.load_model("smollm2")
    data = sentiment_texts(n, seed=0)
    t = time.perf_counter()
    acts = collect_activations(model, list(data.texts), "blocks.*.hook_resid_post", "last", batch_size=32)
    print(f"collected {acts.n_rows} rows x {len(acts.sites)} sites in one pass per batch: "
          f"{time.perf_counter() - t:.1f} s")
    X = acts.groups[0][1]
    y = torch.tensor([label == "positive" for label in data.labels], dtype=torch.long)
    if path:
        save_file({"X": X.contiguous(), "y": y}, path)
    return X, y


def split(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    train = torch.zeros_like(y, dtype=torch.bool)
    for c in (0, 1):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        train[idx[: int(0.8 * idx.numel())]] = True
    return train


def run_sklearn(X: torch.Tensor, y: torch.Tensor, train: torch.Tensor, C: float, dtype) -> tuple[float, list]:
    from sklearn.linear_model import LogisticRegression

    Xn, yn, tr = X.numpy().astype(dtype), y.numpy(), train.numpy()
    accs = []
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning would make the comparison unfair: fail instead
        for s in range(Xn.shape[0]):
            ref = LogisticRegression(C=C, max_iter=20_000).fit(Xn[s][tr], yn[tr])
            accs.append(ref.score(Xn[s][~tr], yn[~tr]))
    return time.perf_counter() - t, accs


def run_batched(X: torch.Tensor, y: torch.Tensor, train: torch.Tensor, C: float) -> tuple[float, list, bool]:
    from interp.probes.trainer import decision_batched, fit_batched

    t = time.perf_counter()
    fit = fit_batched(X, y[None], train[None], "logistic", C=C, tol=1e-4)
    dec = decision_batched(X, fit)[:, ~train, 0, 0, 0]
    accs = ((dec > 0).long() == y[~train]).double().mean(1)
    elapsed = time.perf_counter() - t
    return elapsed, accs.tolist(), bool(fit.converged.all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1600, help="texts (default 1600)")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sklearn-dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--activations", default=None, help="cache file for the collected activations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    X, y = activations(args.activations, args.n)
    train = split(y)
    print(f"{X.shape[0]} sites x {int(train.sum())} training rows x {X.shape[2]} features, C={args.C}, "
          f"{args.threads} threads, scikit-learn input {args.sklearn_dtype}")
    times_sk, times_b = [], []
    for r in range(args.repeats):
        tb, acc_b, converged = run_batched(X, y, train, args.C)
        ts, acc_s = run_sklearn(X, y, train, args.C, np.dtype(args.sklearn_dtype))
        times_sk.append(ts)
        times_b.append(tb)
        diff = max(abs(a - b) for a, b in zip(acc_b, acc_s))
        print(f"repeat {r}: scikit-learn 30 fits {ts:.2f} s, batched {tb:.2f} s, ratio {ts / tb:.1f}x; "
              f"largest accuracy difference {100 * diff:.2f} points; batched converged: {converged}")
    ms, mb = statistics.median(times_sk), statistics.median(times_b)
    print(f"median: scikit-learn {ms:.2f} s, batched {mb:.2f} s, ratio {ms / mb:.1f}x (goal >= 10x)")
    print("held-out accuracy per layer (batched):", " ".join(f"{a:.3f}" for a in acc_b))
    print("held-out accuracy per layer (sklearn):", " ".join(f"{a:.3f}" for a in acc_s))


if __name__ == "__main__":
    main()
