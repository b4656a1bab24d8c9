"""Linear probes over any hooked site: ``interp.probes``.

- :func:`layer_sweep` (:func:`sweep_activations` on cached rows): cross-validated probes at many sites in one
  forward pass per batch and one batched fit, each score beside its control task (Hewitt & Liang 2019),
  shuffled-label and majority baselines -> :class:`SweepResult` (plot, HTML, JSON).
- :func:`collect_activations`: many sites in one pass, at a position rule (:class:`Position`: last real token, a
  named token or regex, a mean over a span, every token), batched, optionally float16, within a memory budget.
- Families: :class:`LinearProbe` (logistic regression; Alain & Bengio 2016), :class:`RidgeProbe` (continuous
  targets), :class:`MassMeanProbe` (difference of means; Marks & Tegmark 2023); all save/load as safetensors + JSON
  (:func:`load_probe`); :func:`fit_batched` fits one per (site, fold, label set) at once.
- Interventions: :func:`steer` adds, subtracts or projects out a direction at a site for a forward pass or
  generation; :func:`steering_curve` measures a metric against the coefficient.
"""

# The modules live in the top-level probes/ folder (a wheel: interp/probes/); see interp/_layout.py.
from interp._layout import package_path

__path__ = package_path(__file__, "probes")

from interp.probes import datasets
from interp.probes.base import Probe, load_probe
from interp.probes.collect import Activations, collect_activations, resolve_sites
from interp.probes.families import MassMeanProbe, RidgeProbe
from interp.probes.linear import LinearProbe, probe_activations
from interp.probes.positions import Position
from interp.probes.steering import SteeringResult, logit_diff_metric, sae_direction, steer, steering_curve
from interp.probes.sweep import SweepResult, layer_sweep, sweep_activations
from interp.probes.trainer import BatchedFit, fit_batched

__all__ = [
    "LinearProbe", "RidgeProbe", "MassMeanProbe", "Probe", "load_probe", "probe_activations",
    "collect_activations", "Activations", "Position", "resolve_sites",
    "layer_sweep", "sweep_activations", "SweepResult", "fit_batched", "BatchedFit",
    "steer", "steering_curve", "SteeringResult", "logit_diff_metric", "sae_direction", "datasets",
]
