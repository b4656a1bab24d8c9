"""Sparse autoencoders (installs as ``interp.saes``): TopK, BatchTopK, ReLU and JumpReLU architectures on the sparse
kernels of :mod:`interp.kernels`, saved and loaded in SAELens's folder format."""

from interp.saes.base import SAE, SAEConfig, SAEOutput, TrainOutput, reconstruction_metrics
from interp.saes.batchtopk import BatchTopKSAE
from interp.saes.config import TrainConfig
from interp.saes.io import load, save_sae
from interp.saes.jumprelu import JumpReLUSAE
from interp.saes.metrics import SAEEval, evaluate
from interp.saes.registry import ARCHITECTURES, build_sae, sae_from_config
from interp.saes.relu import ReLUSAE
from interp.saes.store import ActivationStore, builtin_corpus, load_tokens, write_activation_cache
from interp.saes.topk import TopKSAE
from interp.saes.train import NonFiniteError, TrainResult, train

__all__ = ["ARCHITECTURES", "SAE", "ActivationStore", "BatchTopKSAE", "JumpReLUSAE", "NonFiniteError", "ReLUSAE",
           "SAEConfig", "SAEEval", "SAEOutput", "TopKSAE", "TrainConfig", "TrainOutput", "TrainResult", "build_sae",
           "builtin_corpus", "evaluate", "load", "load_tokens", "reconstruction_metrics", "sae_from_config", "save_sae",
           "train", "write_activation_cache"]
