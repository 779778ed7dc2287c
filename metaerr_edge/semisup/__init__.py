"""Pseudo-labelling semi-supervised learning with a MetaErr selector (and the baselines it is compared to)."""

from metaerr_edge.semisup.pseudo_label import (
    RoundRecord,
    SSLResult,
    pseudo_label_precision,
    run_pseudo_labelling,
    sample_labelled,
    split_for_ssl,
    train_round0,
)
from metaerr_edge.semisup.selectors import (
    SelectContext,
    Selector,
    available_selectors,
    confidence_count,
    create_selector,
    register_selector,
)

__all__ = [
    "RoundRecord",
    "SSLResult",
    "SelectContext",
    "Selector",
    "available_selectors",
    "confidence_count",
    "create_selector",
    "pseudo_label_precision",
    "register_selector",
    "run_pseudo_labelling",
    "sample_labelled",
    "split_for_ssl",
    "train_round0",
]
