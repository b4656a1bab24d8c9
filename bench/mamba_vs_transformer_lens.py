"""Benchmark: TransformerLens 4.3 against interp on Mamba-1 / Mamba-2, same saved weights, alternating, medians.

Not part of CI: run it by hand. TransformerLens 4.3 cannot share interp's environment (sae-lens pins
transformer-lens < 4), so it runs in its own virtual environment, as a worker process this script starts (the same
file with ``--worker``) and talks to over a pipe: in each round the worker runs and times one TransformerLens call,
then this process times ours, on the same token ids, 1 thread each; the table shows medians over ``--repeats``
rounds after one warm-up each. Both load one saved HF folder per architecture, built here with random init from
transformers configs: a bench Mamba with d_model 768, 2 layers, vocabulary 50280 (Mamba-1: d_state 16, d_inner
1536; Mamba-2: 24 heads of 64, d_state 128, 1 group).

Rows, TransformerLens time / ours:
- ``forward``: ``bridge(tokens)`` (HF's torch path) / ``model(tokens)``; with its *floor*, TransformerLens time /
  our matmuls alone (projections and the 50280-way LM head, on inputs of the forward's shapes, the LM head writing
  into pooled memory as our forward does; timed in the same rounds, right after ours): work both sides do, so no
  implementation of the rest can beat that ratio;
- ``states``: every layer's ``hook_ssm_state`` through ``run_with_cache`` (TransformerLens with
  ``mixer.eager_scan = True``, needed under transformers 5.24 for its state hooks to fire), with the same floor
  (both sides also run every matmul of the forward: the logits come back too);
- ``attention``: implicit attention of layer 0 from tokens: TransformerLens ``run_with_cache(..., stop_at_layer=1)``
  of the hooks it reads, then ``compute_effective_attention(cache, 0, include_dt_scaling=True)`` (per channel for
  Mamba-1, per head for Mamba-2) / ``interp.mamba.implicit_attention(model, tokens, 0)`` (same layout and values).
  TransformerLens' Mamba-1 version holds channels x d_state x T² numbers: it runs out of memory from T = 256 (the
  worker's address space is capped by ``--tl-memory-gib`` so that it fails cleanly instead of swapping the machine);
  ours refuses per-channel maps above ``max_elements`` (T = 1024: 6 GiB) unless ``--allow-big``;
- ``from cache``: the same maps from a cache recorded before the timer (the analysis step alone, no forward):
  TransformerLens ``compute_effective_attention(cache, 0, include_dt_scaling=True)`` on its cache of the hooks it
  reads / ``implicit_attention(model, None, 0, cache=cache)`` on ``model.run_with_cache(tokens)`` (every site);
- ``patterns`` (ours only): ``attention_patterns(model, tokens)``, head-level maps of every layer, time and the
  peak resident memory of a fresh process computing them.

Then agreement and accuracy: ours against TransformerLens (states of the last layer at three positions, layer 0's
attention), and each side's attention against the float64 per-step reference (:func:`interp.mamba.alpha.
mamba1_alpha_ref`, on 64 of the 1536 channels for Mamba-1) computed from that side's own Δ, B, C: the largest error
relative to the largest reference value, and the largest absolute error.

Run (under the CPU lock, as every benchmark here):
    python3 -m venv .venv-tl && .venv-tl/bin/python -m pip install uv && .venv-tl/bin/uv pip install \\
        --python .venv-tl/bin/python --find-links /opt/wheels "torch==2.13.0" "transformer-lens==4.3.0"
    flock /tmp/interp-cpu.lock .venv/bin/python bench/mamba_vs_transformer_lens.py --tl-python .venv-tl/bin/python
(``--make-tl-env .venv-tl`` runs the first two lines; ``/opt/wheels`` is where this machine keeps the CPU torch
wheel: pass ``--find-links`` elsewhere.) The table goes to stdout, progress bars to stderr (``2>/dev/null`` for the
table alone). Options: ``--lengths 64 256 1024 --archs mamba mamba2 --repeats 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MARK = "@@bench@@ "  # prefix of the worker's answers on stdout (libraries may print there too)
SITES = {"mamba": ("x_proj.hook_out", "dt_proj.hook_out"), "mamba2": ("in_proj.hook_out", "conv1d.hook_out")}


# ---------------------------------------------------------------------------------------------- TL worker
def _worker(memory_gib: float) -> None:
    """The TransformerLens side: answer JSON requests from stdin, one per line (runs in the TL environment)."""
    import resource

    from transformer_lens.model_bridge import TransformerBridge

    torch.set_num_threads(1)
    bridge = arch = None

    def reply(**kw) -> None:
        print(MARK + json.dumps(kw), flush=True)

    def run(task: str, tokens: torch.Tensor):
        for block in bridge.blocks:
            block.mixer.eager_scan = task != "forward"
        if task == "forward":
            return bridge(tokens)
        if task == "states":
            names = [f"blocks.{layer}.mixer.hook_ssm_state" for layer in range(len(bridge.blocks))]
            return bridge.run_with_cache(tokens, names_filter=names)[1]
        names = [f"blocks.0.mixer.{s}" for s in SITES[arch]]
        _, cache = bridge.run_with_cache(tokens, names_filter=names, stop_at_layer=1)
        return effective(cache), cache

    def effective(cache):
        return bridge.blocks[0].mixer.compute_effective_attention(cache, 0, include_dt_scaling=True)

    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "load":
                arch = req["arch"]
                bridge = TransformerBridge.boot_transformers(req["path"], device="cpu")
                bridge.eval()
                vm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmSize")) * 1024
                resource.setrlimit(resource.RLIMIT_AS, (vm + int(memory_gib * 2**30), resource.RLIM_INFINITY))
                reply(ok=True)
            elif req["op"] == "time":
                tokens = torch.tensor([req["tokens"]])
                with torch.no_grad():
                    cache = run("attention", tokens)[1] if req["task"] == "from cache" else None  # before the timer
                    start = time.perf_counter()
                    out = run(req["task"], tokens) if cache is None else effective(cache)
                    seconds = time.perf_counter() - start
                del out, cache
                reply(seconds=seconds)
            elif req["op"] == "dump":
                _dump(run, arch, bridge, req)
                reply(ok=True)
            else:
                return
        except (RuntimeError, MemoryError) as err:  # out of memory under the address-space cap, mostly
            reply(error=f"{type(err).__name__}: {str(err).splitlines()[0][:160]}")


def _dump(run, arch: str, bridge, req) -> None:
    """Save TransformerLens' last-layer states at ``positions`` and layer 0's α with its own Δ, B, C."""
    from safetensors.torch import save_file

    tokens = torch.tensor([req["tokens"]])
    with torch.no_grad():
        last = len(bridge.blocks) - 1
        states = run("states", tokens)[f"blocks.{last}.mixer.hook_ssm_state"]
        pos = torch.tensor(req["positions"])
        states = states[:, :, pos] if arch == "mamba" else states[:, pos]  # Mamba-1: [b, c, T, N]
        out = {"states": states.contiguous()}
        if req.get("attention", True):
            alpha, cache = run("attention", tokens)
            mixer = bridge.blocks[0].mixer
            if arch == "mamba":
                terms = mixer._s6_terms(cache, 0)
                out.update(alpha=alpha, dt=terms.dt.transpose(1, 2), B=terms.B, C=terms.C)
            else:
                terms = mixer._ssd_terms(cache, 0)
                out.update(alpha=alpha, dt=terms.dt, B=terms.B[:, :, :1], C=terms.C[:, :, :1])
    save_file({k: v.contiguous().float() for k, v in out.items()}, req["out"])


class Worker:
    """The TransformerLens worker process, seen from here."""

    def __init__(self, python: str, memory_gib: float) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([python, __file__, "--worker", "--tl-memory-gib", str(memory_gib)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise RuntimeError(f"the TransformerLens worker exited (code {self.proc.wait()})")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------------------------------------- our side
def build(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Save the two bench models (random init from transformers configs) once; return their folders."""
    import transformers as tf

    paths = {}
    for arch in ("mamba", "mamba2"):
        path = folder / arch
        paths[arch] = path
        if (path / "config.json").exists():
            continue
        if arch == "mamba":
            cfg = tf.MambaConfig(hidden_size=768, state_size=16, num_hidden_layers=2, vocab_size=50280)
            cls = tf.MambaForCausalLM
        else:
            cfg = tf.Mamba2Config(hidden_size=768, state_size=128, num_hidden_layers=2, vocab_size=50280,
                                  num_heads=24, head_dim=64, n_groups=1)
            cls = tf.Mamba2ForCausalLM
        torch.manual_seed(seed)
        cls(cfg).eval().save_pretrained(path)
    return paths


def ours(model, task: str, tokens: torch.Tensor, allow_big: bool, cache=None):
    from interp.mamba import attention_patterns, implicit_attention

    if task == "from cache":
        return implicit_attention(model, None, 0, cache=cache, max_elements=2**34 if allow_big else 2**28)
    if task == "forward":
        return model(tokens)
    if task == "states":
        names = [f"blocks.{layer}.mixer.hook_ssm_state" for layer in range(model.n_layers)]
        return model.run_with_cache(tokens, names_filter=names)[1]
    if task == "patterns":
        return attention_patterns(model, tokens)
    return implicit_attention(model, tokens, 0, max_elements=2**34 if allow_big else 2**28)


def time_ours(model, task: str, tokens: torch.Tensor, allow_big: bool, cache=None) -> float | str:
    try:
        with torch.no_grad():
            start = time.perf_counter()
            out = ours(model, task, tokens, allow_big, cache)
            seconds = time.perf_counter() - start
        del out
        return seconds
    except ValueError as err:  # our budget check
        return f"refused: {str(err)[:70]}"


def peak_memory(path: Path, T: int) -> float:
    """Peak resident memory (GiB, ``VmHWM``) of a fresh process loading the model and computing every layer's
    patterns (``ru_maxrss`` would not do: Linux keeps the parent's across fork and exec)."""
    code = ("import sys, torch; import interp; from interp.mamba import attention_patterns; "
            "torch.set_num_threads(1); m = interp.load_model(sys.argv[1]); "
            "t = torch.randint(0, 50000, (1, int(sys.argv[2])), generator=torch.Generator().manual_seed(0)); "
            "p = attention_patterns(m, t); "
            "print(next(x.split()[1] for x in open('/proc/self/status') if x.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(T)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 2**20


def matmul_pass(model, tokens: torch.Tensor):
    """A function timing one pass of our model's matmuls alone (every ``nn.Linear``: projections and LM head, on
    inputs of the forward's shapes, the LM head as the forward runs it): work TransformerLens does too, so ``TL time /
    that`` bounds the forward and state rows' ratios from above whatever the rest (scan, conv, norms) costs."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(*tokens.shape, m.in_features) for m in linears]
    calls = [model._project_logits if m is model.unembed else m for m in linears]

    def once() -> float:
        with torch.no_grad():
            start = time.perf_counter()
            for f, x in zip(calls, inputs):
                f(x)
            return time.perf_counter() - start

    return once


def rounds(worker: Worker, model, task: str, tokens: torch.Tensor, repeats: int, allow_big: bool, floor=None):
    """Median seconds (or the reason there is none) of TransformerLens and ours, alternating, after a warm-up; and
    of ``floor()`` (one pass of our matmuls, :func:`matmul_pass`) timed in the same rounds, right after ours, so
    that it sees the same machine (None without ``floor``)."""
    ids = tokens[0].tolist()
    tl_times, our_times, floor_times, tl_err, our_err = [], [], [], None, None
    cache = model.run_with_cache(tokens)[1] if task == "from cache" else None  # every site, before the timer
    for r in range(repeats + 1):
        if task != "patterns" and tl_err is None:
            got = worker.ask(op="time", task=task, tokens=ids)
            tl_err = got.get("error")
            if r and tl_err is None:
                tl_times.append(got["seconds"])
        if our_err is None:
            got = time_ours(model, task, tokens, allow_big, cache)
            our_err = got if isinstance(got, str) else None
            if r and our_err is None:
                our_times.append(got)
        if floor is not None:
            seconds = floor()
            if r:
                floor_times.append(seconds)
    tl = statistics.median(tl_times) if tl_times else (tl_err or "-")
    return (tl, (statistics.median(our_times) if our_times else our_err),
            statistics.median(floor_times) if floor_times else None)


# ---------------------------------------------------------------------------------------------- agreement
def _errors(got: torch.Tensor, ref: torch.Tensor) -> str:
    diff = (got.double() - ref.double()).abs().max().item()
    return f"{diff / ref.abs().max().item():.1e} rel, {diff:.1e} abs"


def agreement(worker: Worker, model, arch: str, tokens: torch.Tensor, tl_attention: bool) -> dict[str, str]:
    from safetensors.torch import load_file

    from interp.mamba import implicit_attention
    from interp.mamba.alpha import mamba1_alpha_ref, mamba2_alpha_ref
    from interp.mamba.implicit_attention import scan_sites, ssm_params

    T = tokens.shape[1]
    positions = [0, T // 2, T - 1]
    last = model.n_layers - 1
    sub = list(range(0, model.d_inner, model.d_inner // 64)) if arch == "mamba" else None
    with tempfile.TemporaryDirectory() as tmp:
        got = worker.ask(op="dump", tokens=tokens[0].tolist(), positions=positions, out=f"{tmp}/tl.safetensors",
                         attention=tl_attention)
        tl = load_file(f"{tmp}/tl.safetensors") if "error" not in got else {}
    s = scan_sites(0)
    names = [f"blocks.{last}.mixer.hook_ssm_state", s["dt"], s["B"], s["C"]]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    states = cache[names[0]][:, positions]  # [b, P, d, N] or [b, P, H, p, N]
    res = {}
    if "states" in tl:
        res["states vs TL"] = _errors(states, tl["states"].transpose(1, 2) if arch == "mamba" else tl["states"])
    A, _ = ssm_params(model, 0)
    alpha = implicit_attention(model, tokens, 0, channels=sub)
    if arch == "mamba":
        ref = mamba1_alpha_ref(cache[s["dt"]][..., sub], cache[s["B"]], cache[s["C"]], A[sub])
    else:
        ref = mamba2_alpha_ref(cache[s["dt"]], cache[s["B"]], cache[s["C"]], A)
    res["ours vs float64"] = _errors(alpha, ref)
    if "alpha" in tl:
        tl_alpha = tl["alpha"][:, sub] if arch == "mamba" else tl["alpha"]
        res["attention vs TL"] = _errors(alpha, tl_alpha)
        if arch == "mamba":
            tl_ref = mamba1_alpha_ref(tl["dt"][..., sub], tl["B"], tl["C"], A[sub])
        else:
            tl_ref = mamba2_alpha_ref(tl["dt"], tl["B"], tl["C"], A)
        res["TL vs float64"] = _errors(tl_alpha, tl_ref)
    return res


# ---------------------------------------------------------------------------------------------- main
def _cell(tl, us) -> str:
    if isinstance(tl, float) and isinstance(us, float):
        return f"{tl:8.4f} {us:8.4f} {tl / us:7.2f}x"
    fmt = (lambda v: f"{v:8.4f}" if isinstance(v, float) else f"({v})")
    return f"TL {fmt(tl)}, ours {fmt(us)}"


def make_tl_env(path: Path, find_links: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    py = path / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "uv"], check=True)
    subprocess.run([str(path / "bin" / "uv"), "pip", "install", "-q", "--python", str(py), "--find-links",
                    find_links, "torch==2.13.0", "transformer-lens==4.3.0"], check=True)
    return py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tl-python", help="python of a virtual environment with transformer-lens 4.3")
    parser.add_argument("--make-tl-env", type=Path, help="create that environment here first")
    parser.add_argument("--find-links", default="/opt/wheels", help="where uv finds the CPU torch wheel")
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "interp" / "bench_mamba_tl")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--archs", nargs="+", default=["mamba", "mamba2"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tl-memory-gib", type=float, default=8.0, help="address-space cap of the TL worker")
    parser.add_argument("--allow-big", action="store_true", help="let ours build per-channel maps above 1 GiB")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.tl_memory_gib)
    python = make_tl_env(args.make_tl_env, args.find_links) if args.make_tl_env else args.tl_python
    if not python:
        parser.error("pass --tl-python PATH (a venv with transformer-lens==4.3.0) or --make-tl-env DIR")
    from transformers.utils import logging

    import interp

    logging.set_verbosity_error()
    torch.set_num_threads(1)
    paths = build(args.models)
    print(f"bench Mamba: d_model 768, 2 layers, vocab 50280; 1 thread each; median of {args.repeats} alternating "
          f"rounds; TransformerLens time / ours (seconds)\n")
    for arch in args.archs:
        worker = Worker(python, args.tl_memory_gib)
        worker.ask(op="load", path=str(paths[arch]), arch=arch)
        model = interp.load_model(str(paths[arch]))
        for T in args.lengths:
            tokens = torch.randint(0, 50000, (1, T), generator=torch.Generator().manual_seed(T))
            tl_attention, once = None, matmul_pass(model, tokens)
            for task in ("forward", "states", "attention", "from cache", "patterns"):
                tl, us, floor = rounds(worker, model, task, tokens, args.repeats, args.allow_big,
                                       once if task in ("forward", "states") else None)
                if task == "attention":
                    tl_attention = isinstance(tl, float)
                extra = f"   peak RSS {peak_memory(paths[arch], T):.2f} GiB" if task == "patterns" else ""
                if floor is not None and isinstance(tl, float):
                    extra = f"   floor (TL / our matmuls alone) {tl / floor:.2f}x"
                print(f"{arch:7s} T={T:5d} {task:10s} {_cell(tl, us)}{extra}", flush=True)
            for key, val in agreement(worker, model, arch, tokens, tl_attention).items():
                print(f"{arch:7s} T={T:5d}   {key:18s} {val}", flush=True)
        worker.close()


if __name__ == "__main__":
    main()
