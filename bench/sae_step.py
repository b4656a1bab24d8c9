"""Bench: one TopK SAE training step (forward + backward + Adam step) on CPU, ours vs SAELens vs the floor.

    python bench/sae_step.py            # d_in 512 -> d_sae 16384, k 32, batch 4096 (the task's size)
    python bench/sae_step.py --quick    # small size, seconds

What is compared, all timed in this process, interleaved, median of --repeats:
- floor:   one dense encoder matmul ``addmm(b_enc, x, W_enc)`` (a step cannot avoid it).
- ours:    ``TopKSAE.training_forward`` on the sparse kernels, ``loss.backward()``, ``before_step()`` (decoder-parallel
           gradient removed), dense ``torch.optim.Adam`` step (exact Adam; fused CPU kernel when available),
           ``after_step()`` (decoder rows renormalised), fired-latent bookkeeping, ``zero_grad``.
- saelens: ``TopKTrainingSAE.training_forward_pass`` as ``SAETrainer._train_step`` runs it (default config:
           ``rescale_acts_by_decoder_norm=True``, dense activations), its firing statistics, ``backward``,
           ``clip_grad_norm_(1.0)``, ``Adam.step``, ``zero_grad``.
No dead latents (AuxK inactive) in either. Ratios are printed; the machine is shared, so repeat and take medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from interp.kernels import backend_name
from interp.saes import TopKSAE


def make_adam(params, lr=1e-4):
    try:
        return torch.optim.Adam(params, lr=lr, fused=True), "fused"
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr), "foreach"


def ours_step_fn(d_in, d_sae, k, device="cpu"):
    sae = TopKSAE(d_in=d_in, d_sae=d_sae, k=k, device=device)
    opt, kind = make_adam(sae.parameters())
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)

    def step(x):
        out = sae.training_forward(x)
        out.loss.backward()
        sae.before_step()
        opt.step()
        sae.after_step()
        opt.zero_grad(set_to_none=True)
        since_fired.add_(1).masked_fill_(out.fired, 0)
        step.touched = float(out.fired.float().mean())
        return out.loss

    step.touched = float("nan")
    return step, f"Adam({kind})"


def saelens_step_fn(d_in, d_sae, k, device="cpu"):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, device=str(device)))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    since_fired = torch.zeros(d_sae, device=device)

    def step(x):
        sae.train()
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None,
                                                       n_training_steps=0, is_logging_step=False))
        with torch.no_grad():
            did_fire = out.feature_acts.bool().float().sum(-2).bool()
            since_fired.add_(1)
            since_fired[did_fire] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return out.loss

    return step


def timed(fn, x, sync=lambda: None):
    sync()
    t0 = time.perf_counter()
    fn(x)
    sync()
    return time.perf_counter() - t0


def run(d_in, d_sae, k, batch, repeats, device="cpu", with_saelens=True, extra=None):
    """Times the contenders; returns {name: median seconds}."""
    warnings.filterwarnings("ignore")
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    x = torch.randn(batch, d_in, device=device)
    W_enc = torch.randn(d_in, d_sae, device=device) / d_in ** 0.5
    b_enc = torch.zeros(d_sae, device=device)
    ours, adam = ours_step_fn(d_in, d_sae, k, device)
    steps = {"floor: encoder matmul": lambda x: torch.addmm(b_enc, x, W_enc), f"ours ({adam})": ours}
    if extra:
        steps.update(extra)
    if with_saelens:
        steps["saelens TopK step"] = saelens_step_fn(d_in, d_sae, k, device)
    run.touched = lambda: ours.touched
    times = {name: [] for name in steps}
    for fn in steps.values():  # warm-up
        timed(fn, x, sync)
    for _ in range(repeats):
        for name, fn in steps.items():
            times[name].append(timed(fn, x, sync))
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(medians, header):
    floor = medians["floor: encoder matmul"]
    print(header)
    for name, t in medians.items():
        print(f"  {name:<34} {t * 1e3:9.1f} ms   {t / floor:6.2f}x floor")
    ours = next(v for k, v in medians.items() if k.startswith("ours"))
    if "saelens TopK step" in medians:
        print(f"  speed-up of ours over SAELens: {medians['saelens TopK step'] / ours:.2f}x")
    print(f"  ours / floor: {ours / floor:.2f}x")
    if hasattr(run, "touched"):
        print(f"  latents with a gradient in ours' last step: {100 * run.touched():.1f}% (so a row-sparse 'lazy' Adam "
              "would skip little at this size; the bench uses exact dense Adam)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small size (d_in 64, d_sae 1024, k 8, batch 256)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-saelens", action="store_true")
    a = p.parse_args()
    d_in, d_sae, k, batch = (64, 1024, 8, 256) if a.quick else (512, 16384, 32, 4096)
    medians = run(d_in, d_sae, k, batch, a.repeats, with_saelens=not a.no_saelens)
    report(medians, f"TopK step, CPU, {torch.get_num_threads()} threads, d_in {d_in} -> d_sae {d_sae}, k {k}, "
                    f"batch {batch}, kernels={backend_name(torch.zeros(1))}, median of {a.repeats}")


if __name__ == "__main__":
    main()
