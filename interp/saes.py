"""Sparse autoencoders (installs as ``interp.saes``): TopK, BatchTopK, ReLU and JumpReLU architectures and TopK
transcoders on the sparse kernels of :mod:`interp.kernels`, saved and loaded in SAELens's folder format with the
model and site they belong to; spliced into a model (``splice``), evaluated (``evaluate``) and inspected latent by
latent (``inspect``)."""

# The modules live in the top-level saes/ folder (a wheel: interp/saes/); see interp/_layout.py.
from interp._layout import package_path

__path__ = package_path(__file__, "saes")

from interp.saes.base import SAE, SAEConfig, SAEOutput, TrainOutput, reconstruction_metrics
from interp.saes.batchtopk import BatchTopKSAE
from interp.saes.config import TrainConfig
from interp.saes.dashboards import FeatureDashboards, LatentDashboard, inspect
from interp.saes.io import load, sae_folder, save_sae
from interp.saes.jumprelu import JumpReLUSAE
from interp.saes.metadata import SAEMetadata, SiteMismatchError, latent_site_name, resolve_sites
from interp.saes.metrics import SAEEval, evaluate
from interp.saes.registry import ARCHITECTURES, build_sae, sae_from_config
from interp.saes.relu import ReLUSAE
from interp.saes.splice import splice
from interp.saes.store import ActivationStore, builtin_corpus, load_tokens, write_activation_cache
from interp.saes.topk import TopKSAE
from interp.saes.train import NonFiniteError, TrainResult, train
from interp.saes.transcoder import TopKTranscoder

__all__ = ["ARCHITECTURES", "SAE", "ActivationStore", "BatchTopKSAE", "FeatureDashboards", "JumpReLUSAE",
           "LatentDashboard", "NonFiniteError", "ReLUSAE", "SAEConfig", "SAEEval", "SAEMetadata", "SAEOutput",
           "SiteMismatchError", "TopKSAE", "TopKTranscoder", "TrainConfig", "TrainOutput", "TrainResult", "build_sae",
           "builtin_corpus", "evaluate", "inspect", "latent_site_name", "load", "load_tokens", "reconstruction_metrics",
           "resolve_sites", "sae_folder", "sae_from_config", "save_sae", "splice", "train", "write_activation_cache"]
