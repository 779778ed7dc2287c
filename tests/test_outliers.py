"""Synthetic outliers (metaerr_edge.data.outliers): what each family makes, determinism, the
training / validation groups, meta-training on them as failures, and the validation group of
evaluate_shift, which scores them and never a reported OOD set."""

from __future__ import annotations

import numpy as np
import pytest

import metaerr_edge.data.outliers as outliers_mod
import metaerr_edge.shift_eval as shift_eval_mod
from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
from metaerr_edge.data import (OUTLIERS, TRAIN_OUTLIERS, VALIDATION_OUTLIERS, load_dataset, make_outliers, outlier_sets,
                               outlier_views)
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.meta import HeadConfig, MetaData, MetaFitConfig, MetaModel, fit_meta
from metaerr_edge.models import predict_probs
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.pipeline import train_run
from metaerr_edge.shift_eval import evaluate_shift


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_dataset("digits").train.images[:40]


def _rgb(n: int = 6, h: int = 30, w: int = 30) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 3, h, w), dtype=np.uint8)


@pytest.mark.parametrize("family", OUTLIERS.available())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_family_keeps_uint8_and_shape_is_seeded_and_leaves_the_input_alone(family, channels, digits):
    x = digits if channels == 1 else _rgb()
    before = x.copy()
    y = make_outliers(x, family, seed=0)
    assert y.shape == x.shape and y.dtype == np.uint8
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(y, make_outliers(x, family, seed=0))
    assert not np.array_equal(y, make_outliers(x, family, seed=1))
    assert not np.array_equal(y, x)
    assert make_outliers(x[:0], family).shape == (0, *x.shape[1:])


def test_pixel_shuffle_keeps_each_images_pixels_and_moves_channels_together():
    x = _rgb()
    y = make_outliers(x, "pixel_shuffle", seed=0)
    for a, b in zip(x, y):
        pixels = lambda im: sorted(map(tuple, im.reshape(3, -1).T))  # noqa: E731  (RGB triples, channels together)
        assert pixels(a) == pixels(b)
    assert (y != x).mean() > 0.9


def test_tile_shuffle_moves_whole_tiles_and_leaves_the_rows_past_the_grid():
    x = _rgb(h=30, w=30)  # 4 x 4 tiles of 7 px; rows and columns 28-29 are past the grid
    y = make_outliers(x, "tile_shuffle", seed=0)
    np.testing.assert_array_equal(y[:, :, 28:], x[:, :, 28:])
    np.testing.assert_array_equal(y[:, :, :, 28:], x[:, :, :, 28:])
    tiles = lambda im: sorted(im[:, r:r + 7, c:c + 7].tobytes() for r in range(0, 28, 7) for c in range(0, 28, 7))  # noqa: E731
    for a, b in zip(x, y):
        assert tiles(a) == tiles(b)  # the same tiles, elsewhere
        assert not np.array_equal(a, b)  # never all in place
    tiny = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)  # smaller than 4 px: 1-px tiles
    assert sorted(make_outliers(tiny, "tile_shuffle")[0].ravel()) == sorted(tiny[0].ravel())


def test_smooth_noise_spans_0_to_255_is_smooth_and_ignores_the_content(digits):
    y = make_outliers(digits, "smooth_noise", seed=0)
    assert (y.reshape(len(y), -1).min(1) == 0).all() and (y.reshape(len(y), -1).max(1) == 255).all()
    np.testing.assert_array_equal(y, make_outliers(255 - digits, "smooth_noise", seed=0))
    big = make_outliers(_rgb(h=32, w=32), "smooth_noise", seed=0).astype(float)
    uniform = np.random.default_rng(0).integers(0, 256, big.shape).astype(float)
    step = lambda a: np.abs(np.diff(a, axis=3)).mean()  # noqa: E731
    assert step(big) < 0.25 * step(uniform)


def test_blend_is_the_rounded_mean_with_another_image_never_itself():
    a = np.full((1, 1, 2, 2), 10, np.uint8)
    b = np.full((1, 1, 2, 2), 21, np.uint8)
    np.testing.assert_array_equal(make_outliers(np.concatenate([a, b]), "blend"), np.full((2, 1, 2, 2), 16, np.uint8))
    x = np.arange(5, dtype=np.uint8)[:, None, None, None] * 40  # distinct images: the partner can be read back
    y = make_outliers(x, "blend", seed=7)
    partner = [(2 * int(v) - int(x[i, 0, 0, 0])) // 40 for i, v in enumerate(y[:, 0, 0, 0])]
    assert sorted(partner) == list(range(5)) and all(p != i for i, p in enumerate(partner))
    with pytest.raises(DataError, match="at least 2"):
        make_outliers(x[:1], "blend")


def test_groups_are_disjoint_cover_every_family_and_pick_their_own(digits, monkeypatch):
    assert not set(TRAIN_OUTLIERS) & set(VALIDATION_OUTLIERS)
    assert set(TRAIN_OUTLIERS) | set(VALIDATION_OUTLIERS) == set(OUTLIERS.available())
    assert {e.name: e.meta["group"] for e in OUTLIERS.entries()} == {
        **{n: "train" for n in TRAIN_OUTLIERS}, **{n: "validation" for n in VALIDATION_OUTLIERS}}
    assert list(outlier_sets(digits)) == list(VALIDATION_OUTLIERS)
    assert list(outlier_sets(digits, "train")) == list(TRAIN_OUTLIERS)
    calls: list[tuple[str, int]] = []
    real = outliers_mod.make_outliers
    monkeypatch.setattr(outliers_mod, "make_outliers", lambda x, f, seed=0: calls.append((f, len(x))) or real(x, f, seed))
    views = outlier_views(digits, 0.5, seed=2)
    assert views.shape == (20, *digits.shape[1:]) and views.dtype == np.uint8
    assert {f for f, _ in calls} == set(TRAIN_OUTLIERS) and sum(n for _, n in calls) == 20
    np.testing.assert_array_equal(views, outlier_views(digits, 0.5, seed=2))
    assert outlier_views(digits, 0.0).shape == (0, *digits.shape[1:])


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True, "0.1", float("nan")])
def test_a_bad_fraction_or_group_is_one_line(digits, fraction):
    with pytest.raises(ConfigError, match=r"outlier fraction must be a number in \[0, 1\]"):
        outlier_views(digits, fraction)
    with pytest.raises(ConfigError, match=r"outliers must be a number in \[0, 1\]"):
        MetaConfig(outliers=fraction)


def test_unknown_family_or_group_lists_the_choices(digits):
    with pytest.raises(ConfigError, match="pixel_shuffle"):
        make_outliers(digits, "salt")
    with pytest.raises(ConfigError, match="validation"):
        outlier_sets(digits, "test")


def _meta_data(n: int, seed: int = 0) -> MetaData:
    rng = np.random.default_rng(seed)
    return MetaData(rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8), rng.dirichlet(np.ones(3), n).astype(np.float32),
                    rng.integers(0, 3, n))


def test_outlier_rows_are_failures_with_tcp_zero_fitted_and_never_validated():
    data = _meta_data(60)
    odd = MetaData(make_outliers(data.images[:15], "pixel_shuffle"), data.probs[:15], np.full(15, -1))
    assert odd.is_error.tolist() == [1] * 15 and odd.tcp.tolist() == [0.0] * 15
    pre = Preprocess([0.5], [0.5])
    clean = fit_meta(MetaModel(HeadConfig("probs"), 1, 3, (8, 8)), data, pre, MetaFitConfig(epochs=2), progress=False)
    more = fit_meta(MetaModel(HeadConfig("probs"), 1, 3, (8, 8)), data, pre, MetaFitConfig(epochs=2), outliers=odd,
                    progress=False)
    assert (more.n_train, more.n_val) == (clean.n_train + 15, clean.n_val)
    with pytest.raises(DataError, match="every label -1"):
        fit_meta(MetaModel(HeadConfig("probs"), 1, 3, (8, 8)), data, pre, MetaFitConfig(epochs=1),
                 outliers=MetaData(odd.images, odd.probs, np.zeros(15, np.int64)), progress=False)


def test_a_run_learns_its_outliers_as_failures_and_validation_scores_them_without_ood_files(tmp_path, monkeypatch):
    meta = MetaConfig(modes=("probs",), labels="heldout", epochs=15, skip="none")
    plain = train_run(RunConfig(base=BaseConfig(epochs=3), meta=meta), tmp_path / "plain", progress=False)
    run = train_run(RunConfig(base=BaseConfig(epochs=3), meta=MetaConfig(**{**meta.__dict__, "outliers": 1.0})),
                    tmp_path / "oe", progress=False, base_from=plain.path)
    meta_x, _ = run.split("meta_train")
    made = outlier_views(meta_x, 1.0, run.config.seed)
    assert run.summary["outlier_n"] == len(meta_x) == len(made)
    assert run.summary["outlier_base_confidence"] == pytest.approx(float(predict_probs(run.base, made, run.preprocess).max(1).mean()), abs=1e-5)

    def no_ood(*args, **kwargs):
        raise AssertionError("the validation group must not read a reported OOD set")

    monkeypatch.setattr(shift_eval_mod, "ood_sets", no_ood)
    reports = [evaluate_shift(r, ["msp", "metaerr[probs]"], group="validation", split="calib", severities=(1,),
                              progress=False) for r in (plain, run)]
    names = [s["set"] for s in reports[0].sets if s["kind"] == "ood"]
    assert names == [f"ood:{n}" for n in VALIDATION_OUTLIERS]
    n_calib = len(run.split("calib")[1])
    for s in (s for s in reports[0].sets if s["kind"] == "ood"):
        assert s["n"] == 2 * n_calib and s["error_rate"] >= 0.5  # clean calib + one outlier each, all failures
    # the head that learned outliers (training families) ranks unseen ones (validation families) higher
    ood = [np.mean([s["scores"]["metaerr[probs]"]["auroc"] for s in r.sets if s["kind"] == "ood"]) for r in reports]
    assert ood[1] > ood[0]


def test_only_the_reporting_path_reads_a_reported_ood_set():
    """``ood_sets`` (other datasets, uniform noise) is called by ``evaluate_shift``'s test group
    alone; every other module that wants OOD images for a choice or for training uses the outlier
    families (the mirror of the test-family guard in test_shift.py)."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    callers = []
    for path in sorted([*(repo / "metaerr_edge").rglob("*.py"), *(repo / "benchmarks").glob("*.py"),
                        *(repo / "examples").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if name == "ood_sets":
                callers.append(path.relative_to(repo).as_posix())
    assert callers == ["metaerr_edge/shift_eval.py"]


def test_metaerr_for_a_users_model_learns_from_views_and_outliers(digits_run):
    from metaerr_edge.meta import MetaErr

    images, labels = digits_run.split("meta_train")
    plain = MetaErr("probs", preprocess=digits_run.preprocess, fit=MetaFitConfig(epochs=2), progress=False)
    both = MetaErr("probs", preprocess=digits_run.preprocess, fit=MetaFitConfig(epochs=2), progress=False)
    a = plain.fit(digits_run.base, images, labels)
    b = both.fit(digits_run.base, images, labels, shift_views=2, outliers=0.5)
    # the views double the clean rows on each side of the split; the outliers are fitted on only
    assert (b.n_train, b.n_val) == (3 * a.n_train + round(0.5 * len(images)), 3 * a.n_val)
    assert b.n_errors > a.n_errors + round(0.5 * len(images)) - 1
    with pytest.raises(ConfigError, match="outlier fraction"):
        both.fit(digits_run.base, images, labels, outliers=2.0)


def test_the_validation_ood_dataset_is_never_a_reported_ood_set_and_comes_from_a_training_split(monkeypatch):
    import metaerr_edge.data.sources as sources_mod
    from metaerr_edge.data import DatasetArrays, ImageArrays
    from metaerr_edge.data.outliers import VALIDATION_OOD_SOURCES
    from metaerr_edge.data.shift import OOD_SOURCES

    for dataset, names in VALIDATION_OOD_SOURCES.items():
        assert not set(names) & set(OOD_SOURCES.get(dataset, ())) and dataset not in names
    rng = np.random.default_rng(0)
    train = rng.integers(0, 128, (300, 3, 32, 32), dtype=np.uint8)  # train and test told apart by their values
    test = rng.integers(128, 256, (100, 3, 32, 32), dtype=np.uint8)
    fake = DatasetArrays("cifar10", ImageArrays(train, np.zeros(300, np.int64)), ImageArrays(test, np.zeros(100, np.int64)),
                         tuple("abcdefghij"))
    loaded: list[tuple[str, str]] = []
    monkeypatch.setattr(sources_mod, "load_dataset", lambda name, root=None: loaded.append((name, root)) or fake)
    x = load_dataset("digits").train.images[:50]
    sets = outlier_sets(x, seed=3, dataset="mnist", root="data")
    assert loaded == [("cifar10", "data")] and list(sets) == [*VALIDATION_OUTLIERS, "cifar10"]
    assert sets["cifar10"].shape == x.shape and sets["cifar10"].max() < 128  # resized gray training images only
    assert len({im.tobytes() for im in sets["cifar10"]}) == 50  # drawn without replacement
    np.testing.assert_array_equal(sets["cifar10"], outlier_sets(x, seed=3, dataset="mnist", root="data")["cifar10"])
    assert list(outlier_sets(x, seed=3, dataset="mnist")) == list(VALIDATION_OUTLIERS)  # no root: synthetic only
    assert list(outlier_sets(x, seed=3, dataset="cifar10", root="data")) == list(VALIDATION_OUTLIERS)
