"""MetaErr as a scorer: the run's trained meta-model of a given input mode."""

from __future__ import annotations

import numpy as np

from metaerr_edge.scores.base import Scorer, ScoreContext, register_score


@register_score("metaerr")
class MetaErrScore(Scorer):
    """The meta-model's failure probability. Params: ``mode`` (default None: the run's deployed mode);
    ``"MODE@NAME"`` reads the meta-model of the run ``NAME`` of the context's ``meta_runs`` (a run
    trained on the same base, ``train_run(base_from=...)``), scored on this run's splits."""

    PARAMS = {"mode": None}

    def score(self, ctx: ScoreContext, split: str) -> np.ndarray:
        run, mode = ctx.meta_run(self.params["mode"])
        key = f"{split}_score_{mode}"
        if key in run.predictions:
            return run.predictions[key].astype(np.float64)
        from metaerr_edge.meta import meta_scores

        if getattr(self, "_meta", (None, None))[0] != (run.path, mode):  # loaded once, not once per split
            self._meta = ((run.path, mode), run.meta(mode))
        images, _ = ctx.split(split)
        return meta_scores(self._meta[1], images, ctx.probs(split), ctx.preprocess).astype(np.float64)
