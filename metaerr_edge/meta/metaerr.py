"""``MetaErr``: give any trained classifier a failure score, without touching the classifier.

Example (a user's own pretrained ``nn.Module``, which MetaErr treats as a black box)::

    metaerr = MetaErr(mode="probs", preprocess=Preprocess(mean=[0.5], std=[0.5]))
    metaerr.fit(my_model, heldout_images, heldout_labels)   # data my_model did not train on
    scores = metaerr.score(test_images)                     # higher = more likely wrong
    fused = metaerr.fuse(threshold=0.3)                     # one nn.Module, ready for export
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from metaerr_edge.errors import ConfigError
from metaerr_edge.models.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.meta.fit import MentorData, MetaData, MetaFitConfig, MetaFitResult, fit_meta, meta_scores, outlier_rows
from metaerr_edge.meta.heads import HeadConfig, MetaModel
from metaerr_edge.models.training import FitConfig, predict_probs


class MetaErr:
    """Fit a black-box meta-model to a frozen base classifier on held-out labelled images.

    Args:
        mode: meta-model input mode, one of ``heads.META_MODES``.
        preprocess: how uint8 images become the base model's input (the base's own normalisation).
        head: the meta-model's shape (``mode`` here overrides ``head.mode``).
        fit: meta-training settings.
    """

    def __init__(
        self,
        mode: str = "probs",
        preprocess: Preprocess | None = None,
        head: HeadConfig | None = None,
        fit: MetaFitConfig | None = None,
        progress: bool = True,
    ) -> None:
        base_head = head or HeadConfig()
        self.head = HeadConfig(**{**base_head.to_dict(), "mode": mode})
        self.preprocess = preprocess
        self.fit_config = fit or MetaFitConfig()
        self.progress = progress
        self.base: nn.Module | None = None
        self.meta: MetaModel | None = None
        self.result: MetaFitResult | None = None

    def fit(
        self,
        base: nn.Module,
        images: np.ndarray,
        labels: np.ndarray,
        mentor_train: tuple[np.ndarray, np.ndarray] | None = None,
        mentor_fit: FitConfig | None = None,
        *,
        shift_views: int = 0,
        outliers: float = 0.0,
    ) -> MetaFitResult:
        """Label the base's errors on ``images`` (which it must not have trained on) and fit the meta-model.

        ``mentor_train`` (images, labels the base may have trained on) is required for the mentor modes.
        A ``target="tcp"`` head regresses the base's probability of the true label on ``images``.
        ``shift_views``: also learn from that many corrupted copies of each image (validation
        corruption families, :func:`metaerr_edge.data.shift_views`), labelled by calling the base;
        ``outliers``: also learn from that many synthetic outliers per image (training outlier
        families, :func:`metaerr_edge.data.outlier_views`), each a failure. The robust preset of
        ``metaerr-edge train`` is ``mode="mentor-features"`` with ``shift_views=2``.
        """
        from metaerr_edge.data import shift_views as make_views

        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ConfigError(f"images must be uint8 N x C x H x W, got {got}")
        pre = self.preprocess or Preprocess([0.0] * images.shape[1], [1.0] * images.shape[1])
        self.preprocess = pre
        self.base = base.eval()
        device, seed = self.fit_config.device, self.fit_config.seed
        data = MetaData(images, predict_probs(base, images, pre, device=device), np.asarray(labels))
        views = None
        if shift_views:
            x = make_views(images, shift_views, seed)
            views = MetaData(x, predict_probs(base, x, pre, device=device), np.tile(data.labels, shift_views))
        odd = outlier_rows(base, images, outliers, pre, seed, device=device)
        meta = MetaModel(self.head, images.shape[1], data.probs.shape[1], images.shape[2:])
        mentor = None
        if meta.mentor is not None:
            if mentor_train is None:
                raise ConfigError(f"mode={self.head.mode!r} needs mentor_train=(images, labels) to train the mentor network")
            mentor = MentorData(*mentor_train, fit=mentor_fit or FitConfig(seed=self.fit_config.seed))
        self.result = fit_meta(meta, data, pre, self.fit_config, mentor=mentor, views=views, outliers=odd,
                               progress=self.progress)
        self.meta = meta
        return self.result

    def _check_fitted(self) -> None:
        if self.meta is None or self.base is None:
            raise ConfigError("call MetaErr.fit(base, images, labels) before score() or fuse()")

    def score(self, images: np.ndarray) -> np.ndarray:
        """Failure scores in [0, 1] for uint8 images (higher = more likely wrong)."""
        self._check_fitted()
        probs = predict_probs(self.base, images, self.preprocess, device=self.fit_config.device)
        return meta_scores(self.meta, images, probs, self.preprocess, device=self.fit_config.device)

    def fuse(self, threshold: float = 0.5, layout: str = "NCHW") -> FusedModel:
        """The base and meta-model behind one input, ready for :func:`metaerr_edge.fuse.export.export_onnx`."""
        self._check_fitted()
        pre = Preprocess(self.preprocess.mean.flatten().tolist(), self.preprocess.std.flatten().tolist(), layout)
        return FusedModel(self.base, self.meta, pre, threshold).eval().to(torch.device("cpu"))
