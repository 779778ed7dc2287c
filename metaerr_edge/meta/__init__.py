"""MetaErr: error labels from unseen data, black-box meta-model heads, and the one recipe that fits them (fit_meta)."""

from metaerr_edge.meta.fit import (MentorData, MetaData, MetaFitConfig, MetaFitResult, fit_meta, mentor_outputs, meta_scores,
                                   outlier_rows)
from metaerr_edge.meta.heads import META_MODES, HeadConfig, MetaModel
from metaerr_edge.meta.labels import crossfit_probs, error_labels, fold_ids
from metaerr_edge.meta.metaerr import MetaErr

__all__ = [
    "META_MODES",
    "HeadConfig",
    "MentorData",
    "MetaData",
    "MetaErr",
    "MetaFitConfig",
    "MetaFitResult",
    "MetaModel",
    "crossfit_probs",
    "error_labels",
    "fit_meta",
    "fold_ids",
    "mentor_outputs",
    "meta_scores",
    "outlier_rows",
]
