"""Meta-training on failure under shift: corrupted views of the meta rows (validation families only),
labelled by calling the base, fitted beside the clean rows; and runs that reuse another run's base."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import metaerr_edge.data.shift as shift_mod
import metaerr_edge.meta.labels as labels_mod
from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
from metaerr_edge.data import VALIDATION_FAMILIES, error_labels, load_dataset, shift_views
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.meta import HeadConfig, MetaData, MetaFitConfig, MetaModel, crossfit_probs, fit_meta
from metaerr_edge.models import FitConfig, predict_probs
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.pipeline import train_run

HELDOUT = MetaConfig(modes=("probs", "mentor"), labels="heldout", epochs=4)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_dataset("digits").train.images[:40]


def test_shift_views_are_copy_major_seeded_and_use_validation_families_only(digits, monkeypatch):
    calls: list[tuple[str, int, int]] = []
    real = shift_mod.corrupt

    def spy(images, family, severity, seed=0):
        calls.append((family, severity, len(images)))
        return real(images, family, severity, seed)

    monkeypatch.setattr(shift_mod, "corrupt", spy)
    views = shift_views(digits, 3, seed=5)
    assert views.shape == (3 * len(digits), *digits.shape[1:]) and views.dtype == np.uint8
    assert {f for f, _, _ in calls} <= set(VALIDATION_FAMILIES) and len({f for f, _, _ in calls}) >= 3
    assert {s for _, s, _ in calls} <= {1, 2, 3, 4, 5}
    assert sum(n for _, _, n in calls) == 3 * len(digits)  # every view is written once
    np.testing.assert_array_equal(views, shift_views(digits, 3, seed=5))
    assert not np.array_equal(views, shift_views(digits, 3, seed=6))
    # copy-major: view v of image i is row v * N + i, so it stays close to image i (pixelate, blur, contrast, noise)
    n = len(digits)
    dist = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    own = np.mean([dist(views[v * n + i], digits[i]) for v in range(3) for i in range(n)])
    other = np.mean([dist(views[v * n + i], digits[(i + 1) % n]) for v in range(3) for i in range(n)])
    assert own < other
    rgb = np.repeat(digits, 3, axis=1)
    assert shift_views(rgb, 1).shape == rgb.shape


@pytest.mark.parametrize("copies", [0, -1, 1.5, True])
def test_shift_views_refuse_a_bad_count(digits, copies):
    with pytest.raises(ConfigError, match="copies"):
        shift_views(digits, copies)


def test_crossfit_on_fold_sees_each_fold_model_with_the_rows_it_did_not_train_on(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (15, 1, 4, 4), dtype=np.uint8)
    trained: dict[int, set[bytes]] = {}

    def fake_fit(model, x, y, pre, config, progress=True, desc="", sample_weight=None):
        trained[id(model)] = {row.tobytes() for row in x}
        return model

    monkeypatch.setattr(labels_mod, "fit_classifier", fake_fit)
    held_seen: list[np.ndarray] = []

    def on_fold(model, held):
        assert not any(images[i].tobytes() in trained[id(model)] for i in held)  # out of fold
        held_seen.append(held)

    _, folds = crossfit_probs(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)), images,
                              np.zeros(15, np.int64), Preprocess([0.0], [1.0]), FitConfig(epochs=1), k=3,
                              progress=False, on_fold=on_fold)  # fmt: skip
    assert len(held_seen) == 3
    np.testing.assert_array_equal(np.sort(np.concatenate(held_seen)), np.arange(15))
    for f, held in enumerate(held_seen):
        np.testing.assert_array_equal(held, np.flatnonzero(folds == f))


def _meta_data(n: int = 60, k: int = 3, seed: int = 0) -> MetaData:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(k), n).astype(np.float32)
    labels = rng.integers(0, k, n)
    return MetaData(rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8), probs, labels)


def test_fit_meta_validates_views_with_their_source_rows_and_refuses_ragged_views():
    data, views = _meta_data(60), _meta_data(120, seed=1)
    pre = Preprocess([0.5], [0.5])
    meta = MetaModel(HeadConfig("probs"), 1, 3, (8, 8))
    clean = fit_meta(meta, data, pre, MetaFitConfig(epochs=2), progress=False)
    both = fit_meta(MetaModel(HeadConfig("probs"), 1, 3, (8, 8)), data, pre, MetaFitConfig(epochs=2), views=views,
                    progress=False)
    # two views per row, each on its source row's side of the split: train and validation both triple
    assert (both.n_train, both.n_val) == (3 * clean.n_train, 3 * clean.n_val)
    assert both.n_errors == int(data.is_error.sum() + views.is_error.sum())
    with pytest.raises(DataError, match="whole number of views"):
        fit_meta(MetaModel(HeadConfig("probs"), 1, 3, (8, 8)), data, pre, MetaFitConfig(epochs=1), views=_meta_data(61),
                 progress=False)


def test_heldout_run_labels_its_views_by_calling_the_deployed_base(tmp_path):
    run = train_run(RunConfig(base=BaseConfig(epochs=2), meta=MetaConfig(**{**HELDOUT.__dict__, "shift_views": 2})),
                    tmp_path / "r", progress=False)
    meta_x, meta_y = run.split("meta_train")
    views = shift_views(meta_x, 2, run.config.seed)
    expected = error_labels(predict_probs(run.base, views, run.preprocess), np.tile(meta_y, 2))
    assert run.summary["shift_view_n"] == 2 * len(meta_x)
    assert run.summary["shift_view_errors"] == int(expected.sum())
    # corrupted views fail more often than the clean rows they come from
    assert expected.mean() > run.summary["meta_train_errors"] / run.summary["meta_train_n"]
    np.testing.assert_allclose(run.predictions["meta_train_probs"], predict_probs(run.base, meta_x, run.preprocess), atol=1e-6)


def test_crossfit_run_scores_views_out_of_fold(tmp_path, monkeypatch):
    scored: list[int] = []
    real = labels_mod.crossfit_probs

    def spy(*args, on_fold=None, **kwargs):
        def record(model, held):
            scored.append(len(held))
            on_fold(model, held)
        return real(*args, on_fold=record, **kwargs)

    import metaerr_edge.pipeline as pipeline

    monkeypatch.setattr(pipeline, "crossfit_probs", spy)
    run = train_run(RunConfig(base=BaseConfig(epochs=1), meta=MetaConfig(folds=2, epochs=2, shift_views=1)),
                    tmp_path / "c", progress=False)
    pool = run.summary["split_sizes"]["base_train"] + run.summary["split_sizes"]["meta_train"]
    assert run.summary["shift_view_n"] == run.summary["meta_train_n"] == pool == sum(scored) and len(scored) == 2


def test_base_from_reuses_base_and_mentor_and_trains_only_new_meta_models(tmp_path):
    cfg = RunConfig(base=BaseConfig(epochs=2), meta=HELDOUT)
    first = train_run(cfg, tmp_path / "a", progress=False)
    second = train_run(RunConfig(base=cfg.base, meta=MetaConfig(**{**HELDOUT.__dict__, "shift_views": 1,
                                                                   "modes": ("mentor-features", "probs")})),
                       tmp_path / "b", progress=False, base_from=tmp_path / "a")  # fmt: skip
    assert second.identity("probs")["splits_sha256"] == first.identity("probs")["splits_sha256"]
    for key, tensor in first.base.state_dict().items():
        assert torch.equal(tensor, second.base.state_dict()[key]), key
    for key, tensor in first.meta("mentor").mentor.state_dict().items():
        assert torch.equal(tensor, second.meta("mentor-features").mentor.state_dict()[key]), key
    np.testing.assert_array_equal(second.predictions["test_probs"], first.predictions["test_probs"])
    assert second.summary["base_from"] == str(tmp_path / "a") and second.summary["shift_view_n"] > 0
    assert not np.array_equal(second.predictions["test_score_probs"], first.predictions["test_score_probs"])


def test_base_from_refuses_another_recipe_itself_and_crossfit_views(tmp_path):
    cfg = RunConfig(base=BaseConfig(epochs=1), meta=MetaConfig(modes=("probs",), labels="heldout", epochs=1))
    train_run(cfg, tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="base settings differ"):
        train_run(RunConfig(base=BaseConfig(epochs=2), meta=cfg.meta), tmp_path / "b", progress=False, base_from=tmp_path / "a")
    with pytest.raises(ConfigError, match="seed settings differ"):
        train_run(RunConfig(base=cfg.base, meta=cfg.meta, seed=1), tmp_path / "b", progress=False, base_from=tmp_path / "a")
    with pytest.raises(ConfigError, match="output folder itself"):
        train_run(cfg, tmp_path / "a", progress=False, base_from=tmp_path / "a")
    with pytest.raises(DataError, match="not a run folder"):
        train_run(cfg, tmp_path / "b", progress=False, base_from=tmp_path / "nothing")
    assert not (tmp_path / "b").exists()
    crossfit = RunConfig(base=BaseConfig(epochs=1), meta=MetaConfig(modes=("probs",), folds=2, epochs=1))
    train_run(crossfit, tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="fold model"):
        train_run(RunConfig(base=crossfit.base, meta=MetaConfig(modes=("probs",), folds=2, epochs=1, shift_views=1)),
                  tmp_path / "d", progress=False, base_from=tmp_path / "c")


def test_cli_train_takes_shift_views_and_base_from(tmp_path):
    common = [sys.executable, "-m", "metaerr_edge", "train", "--epochs", "1", "--meta-epochs", "1", "--error-labels",
              "heldout", "--quiet"]  # fmt: skip
    subprocess.run(common + ["-o", str(tmp_path / "a")], check=True, capture_output=True)
    out = subprocess.run(common + ["--shift-views", "1", "--base-from", str(tmp_path / "a"), "-o", str(tmp_path / "b")],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["base_from"] == str(tmp_path / "a") and summary["shift_view_n"] == summary["meta_train_n"]
    bad = subprocess.run(common + ["--shift-views", "17", "-o", str(tmp_path / "c")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--shift-views" in bad.stderr and "0 to 16" in bad.stderr and "Traceback" not in bad.stderr


def test_feature_statistics_leave_a_loaded_mentors_batchnorm_alone():
    """A trained mentor loaded into a fresh meta-model (training mode) kept its running statistics:
    computing the feature standardisation once updated them from the batch (fixed bug)."""
    meta = MetaModel(HeadConfig("mentor-features"), 1, 3, (8, 8))
    before = {k: v.clone() for k, v in meta.mentor.state_dict().items()}
    meta.train()
    meta.mentor.train()  # as constructed: nn.Module starts in training mode
    meta.set_feature_stats(torch.randn(16, 1, 8, 8) * 3 + 1)
    for key, tensor in meta.mentor.state_dict().items():
        assert torch.equal(tensor, before[key]), key
    assert float(meta.feature_std.min()) > 0


def test_meta_runs_score_another_runs_meta_models_on_this_runs_base(tmp_path):
    from metaerr_edge.evaluate import evaluate_run
    from metaerr_edge.meta import meta_scores
    from metaerr_edge.shift_eval import evaluate_shift

    cfg = RunConfig(base=BaseConfig(epochs=2), meta=MetaConfig(modes=("probs",), labels="heldout", epochs=2))
    anchor = train_run(cfg, tmp_path / "a", progress=False)
    other = train_run(RunConfig(base=cfg.base, meta=MetaConfig(modes=("probs",), labels="heldout", epochs=2, shift_views=1)),
                      tmp_path / "b", progress=False, base_from=tmp_path / "a")  # fmt: skip
    report = evaluate_run(anchor, ["metaerr[probs]", "metaerr[probs@v]"], n_boot=10, progress=False, meta_runs={"v": other})
    np.testing.assert_array_equal(report.scores["metaerr[probs@v]"], other.predictions["test_score_probs"].astype(np.float64))
    assert not np.array_equal(report.scores["metaerr[probs@v]"], report.scores["metaerr[probs]"])
    # on added sets, the other run's meta-model reads this context's base probabilities
    shifted = evaluate_shift(anchor, ["metaerr[probs@v]"], group="validation", split="calib", severities=(2,), ood=False,
                             max_n=50, progress=False, meta_runs={"v": other})  # fmt: skip
    assert shifted.split == "calib" and shifted.to_dict()["split"] == "calib" and len(shifted.test_indices) == 50
    images = anchor.split("calib")[0][shifted.test_indices]
    expected = meta_scores(other.meta("probs"), images, anchor.predictions["calib_probs"][shifted.test_indices], other.preprocess)
    clean = shifted.sets[0]
    is_error = error_labels(anchor.predictions["calib_probs"][shifted.test_indices], anchor.split("calib")[1][shifted.test_indices])
    from metaerr_edge.metrics import auroc

    assert clean["scores"]["metaerr[probs@v]"]["auroc"] == pytest.approx(auroc(expected.astype(np.float64), is_error))
    with pytest.raises(ConfigError, match="no meta run named 'w'"):
        evaluate_run(anchor, ["metaerr[probs@w]"], progress=False, meta_runs={"v": other})
    stranger = train_run(RunConfig(base=cfg.base, meta=cfg.meta, seed=3), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="another base or other data"):
        evaluate_run(anchor, ["metaerr[probs@s]"], progress=False, meta_runs={"s": stranger})
    with pytest.raises(ConfigError, match="split must be 'test' or 'calib'"):
        evaluate_shift(anchor, ["msp"], group="validation", split="meta_train", ood=False, progress=False)
