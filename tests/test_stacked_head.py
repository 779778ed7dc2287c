"""Stacked heads (``HeadConfig.skip``): logit(free score) + MLP, the untrained head being the free score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaerr_edge.errors import ConfigError
from metaerr_edge.meta import HeadConfig, MetaData, MetaFitConfig, MetaModel, fit_meta
from metaerr_edge.meta.fit import choose_skip
from metaerr_edge.meta.heads import SKIP_SCORES, skip_score
from metaerr_edge.models.preprocess import Preprocess

P = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0]])


def test_skip_scores_on_fixed_probabilities_match_hand_computed_values():
    np.testing.assert_allclose(skip_score(P, "msp"), [0.3, 0.6, 0.0], atol=1e-6)
    np.testing.assert_allclose(skip_score(P, "margin"), [0.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(skip_score(P, "gini"), [1 - 0.54, 1 - 0.36, 0.0], atol=1e-6)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    np.testing.assert_allclose(skip_score(P, "entropy"), [h, -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)) / math.log(3), 0.0],
                               atol=1e-6)  # fmt: skip
    with pytest.raises(ConfigError, match="unknown skip score"):
        skip_score(P, "doctor")


@pytest.mark.parametrize("name", SKIP_SCORES)
@pytest.mark.parametrize("mode, target", [("probs", "error"), ("mentor", "error"), ("mentor-features", "tcp")])
def test_an_untrained_stacked_head_is_its_free_score(name, mode, target):
    torch.manual_seed(0)
    meta = MetaModel(HeadConfig(mode, skip=name, target=target), 1, 3, (8, 8)).eval()
    probs = torch.softmax(torch.randn(64, 3) * 3, dim=1)
    out = meta(torch.rand(64, 1, 8, 8), probs)
    np.testing.assert_allclose(out.detach().numpy(), skip_score(probs, name).clamp(1e-6, 1 - 1e-6).numpy(), atol=2e-6)


def test_skip_is_checked():
    with pytest.raises(ConfigError, match="unknown head skip"):
        HeadConfig("probs", skip="doctor")
    with pytest.raises(ConfigError, match="no free score"):
        HeadConfig("image", skip="msp")


def _rows(n=400, seed=0):
    """Errors where the top-2 margin is small but the top probability is not (margin beats MSP)."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.4, 0.6, n)
    second = np.where(rng.random(n) < 0.3, top - rng.uniform(0.0, 0.05, n), rng.uniform(0.0, 0.2, n))
    probs = np.stack([top, second, 1 - top - second], 1).clip(1e-4)
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    wrong = (top - second < 0.05) & (rng.random(n) < 0.8)
    labels = np.where(wrong, 1, 0)
    return MetaData(rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8), probs, labels)


def test_auto_chooses_the_best_free_score_on_the_training_rows_and_keeps_it_when_training_does_not_help():
    data = _rows()
    assert choose_skip(data.probs, data.is_error) == "margin"
    meta = MetaModel(HeadConfig("probs", skip="auto"), 1, 3, (8, 8))
    result = fit_meta(meta, data, Preprocess([0.5], [0.5]), MetaFitConfig(epochs=3, lr=1e-12), progress=False)
    assert meta.config.skip == "margin"  # resolved, and saved with the checkpoint as such
    assert result.best_epoch == -1  # a learning rate of 1e-12 cannot beat epoch 0, which is kept
    out = meta(None, torch.from_numpy(data.probs)).detach().numpy()
    np.testing.assert_allclose(out, skip_score(torch.from_numpy(data.probs), "margin").clamp(1e-6, 1 - 1e-6).numpy(), atol=2e-6)


@pytest.mark.parametrize("mode", ["probs", "mentor", "mentor-features"])
def test_a_stacked_run_trains_exports_and_verifies(tmp_path, mode):
    """A stacked head is a real run option: saved resolved, loaded back the same, fused, exported, verified."""
    from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
    from metaerr_edge.fuse.export import export_run
    from metaerr_edge.fuse.verify import verify_run
    from metaerr_edge.pipeline import load_run, train_run

    run = train_run(RunConfig(base=BaseConfig(epochs=2), meta=MetaConfig(modes=(mode,), labels="heldout", epochs=3,
                                                                         skip="auto", shift_views=1)),
                    tmp_path / "run", progress=False)  # fmt: skip
    again = load_run(tmp_path / "run").meta()
    assert again.config.skip in SKIP_SCORES  # "auto" resolved at fit time, stored as the chosen score
    images, _ = run.split("test")
    from metaerr_edge.meta import meta_scores

    np.testing.assert_allclose(meta_scores(again, images, run.predictions["test_probs"], run.preprocess),
                               run.predictions[f"test_score_{mode}"], atol=1e-6)  # fmt: skip
    export_run(run, tmp_path / "m.onnx", dynamo=False)
    report = verify_run(tmp_path / "m.onnx", run, n=32, batch_sizes=(1, 32))
    assert report.passed and report.max_abs_score_diff <= 1e-5
