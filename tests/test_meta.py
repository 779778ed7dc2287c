"""MetaErr: out-of-fold labels, black-box heads, and quality on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import metaerr_edge.meta.labels as labels_mod
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.meta import META_MODES, HeadConfig, MetaErr, MetaModel, crossfit_probs, error_labels, fold_ids
from metaerr_edge.metrics import auroc
from metaerr_edge.models import FitConfig


def test_error_labels_and_folds():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    np.testing.assert_array_equal(error_labels(probs, np.array([0, 0, 1])), [0, 1, 1])
    f = fold_ids(10, 3, seed=0)
    assert sorted(np.bincount(f)) == [3, 3, 4]
    with pytest.raises(DataError, match="folds"):
        fold_ids(2, 5, seed=0)


class _Memorizer(nn.Module):
    """A 'classifier' that is right exactly on the images it was trained on (a lookup table)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen: dict[bytes, int] = {}

    def forward(self, x):
        rows = [self.seen.get(xi.numpy().tobytes(), -1) for xi in x.detach()]
        out = torch.zeros(len(x), 2)
        for i, r in enumerate(rows):
            out[i, r if r >= 0 else 1] = 10.0  # unseen images: always class 1
        return out + 0 * self.w


def test_crossfit_labels_come_from_models_that_did_not_see_the_sample(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 1, 4, 4), dtype=np.uint8)
    labels = np.zeros(30, np.int64)  # class 0 everywhere: a memorizer is right only on what it saw

    def fake_fit(model, x, y, pre, config, progress=True, desc="", sample_weight=None):
        for xi, yi in zip(pre(torch.from_numpy(x).float() / 255), y):
            model.seen[xi.numpy().tobytes()] = int(yi)
        return model

    monkeypatch.setattr(labels_mod, "fit_classifier", fake_fit)
    pre = Preprocess([0.0], [1.0])
    oof, folds = crossfit_probs(_Memorizer, images, labels, pre, FitConfig(epochs=1), k=3, progress=False)
    # Training-set correctness would be 100%; out-of-fold every sample is unseen, hence wrong.
    assert error_labels(oof, labels).tolist() == [1] * 30
    assert sorted(np.bincount(folds)) == [10, 10, 10]


@pytest.mark.parametrize("mode", META_MODES)
def test_heads_score_in_unit_interval_and_ignore_class_identity(mode):
    torch.manual_seed(0)
    meta = MetaModel(HeadConfig(mode, mentor_kwargs={"width": 8}), in_channels=1, num_classes=5, image_size=(8, 8)).eval()
    x = torch.randn(6, 1, 8, 8)
    p = torch.softmax(torch.randn(6, 5) * 3, 1)
    s = meta(x, p)
    assert s.shape == (6,) and bool(((s >= 0) & (s <= 1)).all())
    if mode == "probs":  # permuting classes must not change a sorted-probability head
        torch.testing.assert_close(meta(x, p[:, torch.randperm(5)]), s)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown meta-model mode 'weights'"):
        HeadConfig("weights")


def test_digits_run_metaerr_beats_random_by_a_clear_margin(digits_run):
    p = digits_run.predictions
    is_error = (p["test_probs"].argmax(1) != p["test_labels"]).astype(int)
    assert 2 <= is_error.sum() < len(is_error) // 4
    random_auroc = np.mean([auroc(np.random.default_rng(i).random(len(is_error)), is_error) for i in range(200)])
    assert abs(random_auroc - 0.5) < 0.05
    assert auroc(p["test_score_probs"], is_error) > 0.85  # the deployed head
    assert auroc(p["test_score_image+probs"], is_error) > 0.65  # image branch: few errors to learn from
    # meta-train labels are out-of-fold: the deployed base is near-perfect on its own training pool, the folds are not
    assert digits_run.summary["meta_train_errors"] >= 10


def test_metaerr_wraps_a_users_own_module_without_touching_it(digits_run):
    images, labels = digits_run.split("meta_train")
    base = digits_run.base
    before = {k: v.clone() for k, v in base.state_dict().items()}
    metaerr = MetaErr("probs", preprocess=digits_run.preprocess, progress=False)
    metaerr.fit(base, np.concatenate([images, digits_run.split("calib")[0]]), np.concatenate([labels, digits_run.split("calib")[1]]))
    for k, v in base.state_dict().items():
        torch.testing.assert_close(v, before[k])
    s = metaerr.score(digits_run.split("test")[0])
    assert s.shape == (len(digits_run.split("test")[1]),) and 0 <= s.min() <= s.max() <= 1
    fused = metaerr.fuse(threshold=0.5)
    label, probs, score, defer = fused(torch.rand(3, 1, 8, 8))
    assert label.dtype == torch.int64 and defer.dtype == torch.bool


def test_training_is_deterministic_for_a_seed(tmp_path):
    from metaerr_edge.pipeline import RunConfig, train_run

    cfg = RunConfig(meta_modes=("probs",), folds=2, epochs=1, meta_epochs=2)
    a, b = train_run(cfg, tmp_path / "a", progress=False), train_run(cfg, tmp_path / "b", progress=False)
    np.testing.assert_array_equal(a.predictions["test_probs"], b.predictions["test_probs"])
    np.testing.assert_array_equal(a.predictions["test_score_probs"], b.predictions["test_score_probs"])


def test_tcp_head_scores_one_minus_predicted_true_class_probability():
    torch.manual_seed(0)
    meta = MetaModel(HeadConfig("probs", target="tcp"), in_channels=1, num_classes=4).eval()
    p = torch.softmax(torch.randn(5, 4), 1)
    torch.testing.assert_close(meta(None, p), 1 - torch.sigmoid(meta.logit(None, p)))
    with pytest.raises(ConfigError, match="target"):
        HeadConfig("probs", target="margin")


def test_mentor_features_mode_trains_exports_and_keeps_parity(tmp_path):
    """The benchmark's strongest recipe is a real mode: trained by train_run, fused, exported, verified."""
    from metaerr_edge.fuse.export import export_run
    from metaerr_edge.fuse.verify import verify_run
    from metaerr_edge.pipeline import RunConfig, train_run

    run = train_run(RunConfig(meta_modes=("mentor-features",), labels="heldout", epochs=2, meta_epochs=3), tmp_path / "run", progress=False)
    meta = run.meta()
    assert meta.config.target == "tcp" and meta.feature_dim == 4 * 32  # small_cnn mentor, width 32
    assert float(meta.feature_std.min()) > 0 and float(meta.feature_mean.abs().sum()) > 0  # stats were fitted
    assert run.summary["meta"]["mentor-features"]["n_train"] > run.summary["split_sizes"]["meta_train"]  # + base rows
    export_run(run, tmp_path / "m.onnx", dynamo=False)
    report = verify_run(tmp_path / "m.onnx", run, n=32, batch_sizes=(1, 32))
    assert report.passed and report.max_abs_score_diff <= 1e-5


def test_mentor_features_needs_a_mentor_with_feature_seams():
    with pytest.raises(ConfigError, match="forward_features"):
        MetaModel(HeadConfig("mentor-features", mentor_arch="resnet18"), in_channels=1, num_classes=10, image_size=(8, 8))


@pytest.mark.parametrize("mode", META_MODES)
def test_for_export_folds_the_log_scale_without_changing_scores(mode):
    torch.manual_seed(1)
    meta = MetaModel(HeadConfig(mode, mentor_kwargs={"width": 8}), in_channels=1, num_classes=5, image_size=(8, 8)).eval()
    folded = meta.for_export().eval()
    x, p = torch.randn(6, 1, 8, 8), torch.softmax(torch.randn(6, 5) * 4, 1)
    torch.testing.assert_close(folded(x, p), meta(x, p), atol=1e-6, rtol=1e-5)
    assert folded.log_scale == (meta.log_scale if mode == "image" else 1.0)
    assert meta.log_scale != 1.0  # the original is untouched
