"""Base classifiers (the registry, the training loop), Preprocess, and FusedModel: base + meta-model behind one input."""

from metaerr_edge.models.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models.registry import available_bases, create_base, register_base
from metaerr_edge.models.training import FitConfig, fit_classifier, predict_probs

__all__ = ["FitConfig", "FusedModel", "Preprocess", "available_bases", "create_base", "fit_classifier", "predict_probs", "register_base"]
