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
from metaerr_edge.models import FitConfig, available_bases


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


def test_crossfit_extra_rows_train_every_fold_and_are_never_scored(monkeypatch):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 1, 4, 4), dtype=np.uint8)
    extra = rng.integers(0, 256, (5, 1, 4, 4), dtype=np.uint8)
    trained_on: list[int] = []

    def fake_fit(model, x, y, pre, config, progress=True, desc="", sample_weight=None):
        trained_on.append(len(x))
        seen = {row.tobytes() for row in x}
        assert all(row.tobytes() in seen for row in extra)  # every fold model saw every extra row
        return model

    monkeypatch.setattr(labels_mod, "fit_classifier", fake_fit)
    oof, folds = crossfit_probs(_Memorizer, images, np.zeros(12, np.int64), Preprocess([0.0], [1.0]), FitConfig(epochs=1),
                                k=3, progress=False, extra=(extra, np.ones(5, np.int64)))
    assert oof.shape == (12, 2) and trained_on == [8 + 5] * 3


def test_error_labels_take_probabilities_or_predicted_labels():
    from metaerr_edge.data import error_labels as data_error_labels

    assert data_error_labels is error_labels  # one definition, re-exported by meta
    np.testing.assert_array_equal(error_labels(np.array([2, 0, 1]), np.array([2, 1, 1])), [0, 1, 0])
    with pytest.raises(DataError, match="3 predictions but 2 labels"):
        error_labels(np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(DataError, match=r"got shapes \(2, 2, 2\)"):
        error_labels(np.zeros((2, 2, 2)), np.zeros(2, np.int64))


def test_meta_data_is_checked_and_derives_error_labels_and_tcp():
    from metaerr_edge.meta import MetaData

    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]], np.float32)
    data = MetaData(np.zeros((3, 1, 2, 2), np.uint8), probs, np.array([0, 0, 1]))
    np.testing.assert_array_equal(data.is_error, [0, 1, 1])
    np.testing.assert_allclose(data.tcp, [0.7, 0.2, 0.4])
    with pytest.raises(ConfigError, match="uint8 N x C x H x W"):
        MetaData(np.zeros((3, 2, 2), np.uint8), probs, np.array([0, 0, 1]))
    with pytest.raises(DataError, match="3 images, probabilities of shape \\(2, 2\\) and 3 labels"):
        MetaData(np.zeros((3, 1, 2, 2), np.uint8), probs[:2], np.array([0, 0, 1]))


def test_mentor_modes_need_mentor_data():
    from metaerr_edge.meta import MetaData, fit_meta

    rng = np.random.default_rng(0)
    meta = MetaModel(HeadConfig("mentor", mentor_kwargs={"width": 4}), 1, 3, (8, 8))
    data = MetaData(rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), rng.dirichlet(np.ones(3), 40).astype(np.float32),
                    rng.integers(0, 3, 40))
    with pytest.raises(ConfigError, match="needs mentor=MentorData"):
        fit_meta(meta, data, Preprocess([0.5], [0.5]), progress=False)


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
    from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
    from metaerr_edge.pipeline import train_run

    cfg = RunConfig(base=BaseConfig(epochs=1), meta=MetaConfig(modes=("probs",), folds=2, epochs=2))
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
    from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
    from metaerr_edge.pipeline import train_run

    run = train_run(RunConfig(base=BaseConfig(epochs=2), meta=MetaConfig(modes=("mentor-features",), labels="heldout", epochs=3)), tmp_path / "run", progress=False)
    meta = run.meta()
    assert meta.config.target == "tcp" and meta.feature_dim == 4 * 32  # small_cnn mentor, width 32
    assert float(meta.feature_std.min()) > 0 and float(meta.feature_mean.abs().sum()) > 0  # stats were fitted
    assert run.summary["meta"]["mentor-features"]["n_train"] > run.summary["split_sizes"]["meta_train"]  # + base rows
    export_run(run, tmp_path / "m.onnx", dynamo=False)
    report = verify_run(tmp_path / "m.onnx", run, n=32, batch_sizes=(1, 32))
    assert report.passed and report.max_abs_score_diff <= 1e-5


@pytest.mark.parametrize("arch", available_bases())
def test_mentor_features_takes_any_registered_base_as_mentor(arch):
    torch.manual_seed(0)
    meta = MetaModel(HeadConfig("mentor-features", mentor_arch=arch), 3, 10, (32, 32)).eval()
    x = torch.randn(4, 3, 32, 32)
    meta.set_feature_stats(x)
    out = meta(x, torch.softmax(torch.randn(4, 10), 1))
    assert out.shape == (4,) and bool(((out > 0) & (out < 1)).all())
    assert meta.feature_dim == meta.mentor.num_features
    with torch.no_grad():
        read, f = meta.mentor_outputs(x), meta.mentor.forward_features(x)
        torch.testing.assert_close(read[:, : meta.feature_dim], (f - f.mean(0)) / (f.std(0) + 1e-6))
        torch.testing.assert_close(read[:, meta.feature_dim :], torch.softmax(meta.mentor(x), 1))


def test_mentor_features_refuses_a_mentor_without_seams_in_one_line(monkeypatch):
    import metaerr_edge.models.registry as registry

    monkeypatch.setattr(registry, "create_base", lambda *args, **kwargs: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    with pytest.raises(ConfigError, match=r"^mode 'mentor-features' \(mentor_arch='small_cnn'\) reads hidden features, "
                                          r"but Sequential has no forward_features\(x\) method"):
        MetaModel(HeadConfig("mentor-features"), 1, 10, (8, 8))
    meta = MetaModel(HeadConfig("mentor"), 1, 10, (8, 8)).eval()  # the probabilities-only mode needs no seams
    assert meta(torch.randn(3, 1, 8, 8), torch.softmax(torch.randn(3, 10), 1)).shape == (3,)


@pytest.mark.parametrize("mode", META_MODES)
def test_for_export_folds_the_log_scale_without_changing_scores(mode):
    torch.manual_seed(1)
    meta = MetaModel(HeadConfig(mode, mentor_kwargs={"width": 8}), in_channels=1, num_classes=5, image_size=(8, 8)).eval()
    folded = meta.for_export().eval()
    x, p = torch.randn(6, 1, 8, 8), torch.softmax(torch.randn(6, 5) * 4, 1)
    torch.testing.assert_close(folded(x, p), meta(x, p), atol=1e-6, rtol=1e-5)
    assert folded.log_scale == (meta.log_scale if mode == "image" else 1.0)
    assert meta.log_scale != 1.0  # the original is untouched


def test_mentor_data_and_fit_meta_refuse_what_would_be_silently_ignored():
    from metaerr_edge.meta import MentorData, MetaData, fit_meta

    x, y = np.zeros((6, 1, 8, 8), np.uint8), np.zeros(6, np.int64)
    with pytest.raises(ConfigError, match="oof_folds must be 0 .* or >= 2, got 1"):
        MentorData(x, y, oof_folds=1)
    with pytest.raises(DataError, match="6 images but 5 labels"):
        MentorData(x, y[:5])
    with pytest.raises(ConfigError, match="is not built again"):
        MentorData(x, y, trained=True, factory=lambda: nn.Linear(1, 1))
    probs = np.tile(np.float32([[0.6, 0.4, 0.0]]), (40, 1))
    labels = np.array([0, 1] * 20)
    data = MetaData(np.zeros((40, 1, 8, 8), np.uint8), probs, labels)
    with pytest.raises(ConfigError, match="meta mode 'probs' has no mentor; pass mentor=None"):
        fit_meta(MetaModel(HeadConfig("probs"), 1, 3, (8, 8)), data, Preprocess([0.5], [0.5]), mentor=MentorData(x, y))


def test_error_labels_refuse_float_predictions_of_one_dimension():
    with pytest.raises(DataError, match="1-D predictions must be predicted labels"):
        error_labels(np.array([0.9, 0.2, 0.7]), np.array([0, 1, 1]))
