"""Pseudo-labelling: selector registry and contract, precision, the rounds loop, out-of-fold meta labels."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from metaerr_edge.data import load_dataset
from metaerr_edge.errors import ConfigError
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.models import FitConfig, create_base, fit_classifier, predict_probs
from metaerr_edge.semisup import (
    SelectContext,
    available_selectors,
    confidence_count,
    create_selector,
    pseudo_label_precision,
    run_pseudo_labelling,
    sample_labelled,
    split_for_ssl,
)
from metaerr_edge.semisup import selectors as selectors_mod

FIT = FitConfig(epochs=2, batch_size=32, augment="none")
TINY = {"width": 8}
FAST_OPTIONS = {"metaerr": {"meta_epochs": 3, "folds": 2}, "metaerr-topk": {"meta_epochs": 3, "folds": 2},
                "metaerr-balanced": {"meta_epochs": 3, "folds": 2}, "metaerr-perclass": {"meta_epochs": 3, "folds": 2},
                "mc-dropout": {"passes": 3}, "mc-dropout-topk": {"passes": 3}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ssl_setup(digits):
    """A tiny base trained on 100 labelled digits, its pool (indices into train) and a context maker."""
    torch.manual_seed(0)
    labelled_idx = sample_labelled(digits.train.labels, 100, seed=0)
    labelled, pool, _, pool_idx = split_for_ssl(digits, labelled_idx, seed=0, pool_size=300)
    pre = Preprocess(*digits.channel_stats())

    def factory():
        return create_base("small_cnn", 1, 10, (8, 8), **TINY)

    model = fit_classifier(factory(), labelled.images, labelled.labels, pre, FIT, progress=False)
    probs = predict_probs(model, pool.images, pre)

    def make_ctx(budget=None):
        return SelectContext(
            model=model, probs=probs, pool_images=pool.images, labelled_images=labelled.images,
            labelled_labels=labelled.labels, preprocess=pre, round=1, budget=budget, fit=FIT, factory=factory,
        )  # fmt: skip

    return labelled_idx, pool_idx, pool, make_ctx


def test_registry_is_the_one_list():
    assert available_selectors() == sorted(["confidence", "topk", "mc-dropout", "mc-dropout-topk", "metaerr", "metaerr-topk",
                                            "metaerr-balanced", "metaerr-perclass"])
    for name in available_selectors():
        assert create_selector(name).name == name


def test_unknown_selector_and_option_raise_config_error():
    with pytest.raises(ConfigError, match="unknown selector 'nope'.*confidence"):
        create_selector("nope")
    with pytest.raises(ConfigError, match="unknown \\['bogus'\\]"):
        create_selector("confidence", bogus=1)
    with pytest.raises(ConfigError, match="threshold must lie in"):
        create_selector("confidence", threshold=1.5)


@pytest.mark.parametrize("name", available_selectors())
def test_selector_returns_valid_unique_pool_indices(name, ssl_setup):
    labelled_idx, pool_idx, pool, make_ctx = ssl_setup
    ctx = make_ctx(budget=40)
    opts = dict(FAST_OPTIONS.get(name, {}))
    if name in ("confidence", "mc-dropout"):  # the tiny base is not confident: keep its more confident half
        opts["threshold"] = float(np.quantile(ctx.probs.max(1), 0.5))
    if name == "mc-dropout":
        opts["max_std"] = 1.0
    if name == "metaerr":  # a meta-model on 100 samples may call every pool prediction a failure
        opts["max_score"] = 1.0
    idx, labels = create_selector(name, **opts).select(ctx)
    assert idx.dtype == np.int64 and labels.dtype == np.int64 and len(idx) == len(labels)
    assert len(idx) > 0 and len(np.unique(idx)) == len(idx)
    assert idx.min() >= 0 and idx.max() < len(pool)
    assert np.intersect1d(pool_idx[idx], labelled_idx).size == 0  # never a labelled sample
    assert np.array_equal(labels, ctx.probs[idx].argmax(1)) or name.startswith("mc-dropout")
    if name in ("topk", "mc-dropout-topk", "metaerr-topk", "metaerr-balanced", "metaerr-perclass"):
        assert len(idx) == 40  # count-matched to the budget


def test_topk_is_class_balanced_and_defaults_to_the_confidence_count(ssl_setup):
    *_, make_ctx = ssl_setup
    ctx = make_ctx(budget=30)
    _, labels = create_selector("topk").select(ctx)
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == 30 and counts.max() - counts.min() <= 3 or (counts == 0).any()
    ctx = make_ctx(budget=None)
    t = float(np.quantile(ctx.probs.max(1), 0.7))
    idx, _ = create_selector("topk", threshold=t).select(ctx)
    assert len(idx) == confidence_count(ctx.probs, t) > 0


def test_precision_against_hand_data():
    assert pseudo_label_precision(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == pytest.approx(0.75)
    assert pseudo_label_precision(np.array([0, 0]), np.array([0, 0])) == 1.0
    assert math.isnan(pseudo_label_precision(np.array([], np.int64), np.array([], np.int64)))


def test_metaerr_meta_model_trains_on_out_of_fold_labelled_errors(ssl_setup, monkeypatch):
    *_, make_ctx = ssl_setup
    seen = {}
    real_crossfit, real_fit_meta = selectors_mod.crossfit_probs, selectors_mod.fit_meta

    def spy_crossfit(factory, images, labels, preprocess, fit, k=5, **kw):
        out = real_crossfit(factory, images, labels, preprocess, fit, k=k, **kw)
        seen["crossfit"], seen["extra"] = (images, labels, k, out[0]), kw.get("extra")
        return out

    def spy_fit_meta(meta, data, preprocess, config, **kw):
        seen["fit_meta"] = (data.images, data.probs, data.is_error)
        return real_fit_meta(meta, data, preprocess, config, **kw)

    monkeypatch.setattr(selectors_mod, "crossfit_probs", spy_crossfit)
    monkeypatch.setattr(selectors_mod, "fit_meta", spy_fit_meta)
    ctx = make_ctx(budget=20)
    create_selector("metaerr-topk", folds=2, meta_epochs=2).select(ctx)
    images, labels, k, oof = seen["crossfit"]
    assert k == 2 and np.array_equal(images, ctx.labelled_images) and np.array_equal(labels, ctx.labelled_labels)
    m_images, m_probs, m_err = seen["fit_meta"]
    assert np.array_equal(m_images, ctx.labelled_images)
    assert np.array_equal(m_probs, oof)  # out-of-fold, not the base's in-sample probabilities
    assert np.array_equal(m_err, (oof.argmax(1) != ctx.labelled_labels).astype(np.int64))
    assert ctx.info["meta_train"] == len(ctx.labelled_labels)
    assert seen["extra"] is None  # without oof_pseudo the fold models see the labelled set only


def test_metaerr_oof_pseudo_trains_the_fold_models_on_the_pseudo_labels_too(ssl_setup, monkeypatch):
    *_, make_ctx = ssl_setup
    seen = {}
    real_crossfit = selectors_mod.crossfit_probs

    def spy_crossfit(factory, images, labels, preprocess, fit, k=5, extra=None, **kw):
        seen["extra"] = extra
        return real_crossfit(factory, images, labels, preprocess, fit, k=k, extra=extra, **kw)

    monkeypatch.setattr(selectors_mod, "crossfit_probs", spy_crossfit)
    base = make_ctx(budget=5)
    pseudo_x, pseudo_y = base.pool_images[:7], base.probs[:7].argmax(1)
    ctx = dataclasses.replace(base, pseudo_images=pseudo_x, pseudo_labels=pseudo_y)
    data, views = create_selector("metaerr-topk", folds=2, oof_pseudo=True).meta_data(ctx)
    assert data.probs.shape == (len(ctx.labelled_labels), ctx.num_classes) and views is None
    assert seen["extra"][0] is pseudo_x and seen["extra"][1] is pseudo_y


def test_one_round_on_digits_returns_per_round_records(digits):
    labelled_idx = sample_labelled(digits.train.labels, 100, seed=1)
    res = run_pseudo_labelling(
        digits, labelled_idx, create_selector("topk"), rounds=1, fit=FIT, seed=1,
        arch_kwargs=TINY, pool_size=100, budgets=[30], min_steps=10,
    )  # fmt: skip
    assert [r.round for r in res.rounds] == [0, 1]
    r0, r1 = res.rounds
    assert r0.kept == 0 and math.isnan(r0.precision) and r0.n_train == 100
    assert r1.kept == 30 and 0.0 <= r1.precision <= 1.0 and r1.n_train == 130
    assert 0.0 <= r1.test_acc <= 1.0 and res.final_test_acc == r1.test_acc
    assert res.n_pool == 100 and res.to_dict()["rounds"][1]["kept"] == 30
    torch.manual_seed(12345)  # whatever the process's RNG state before: the seed decides the run
    again = run_pseudo_labelling(
        digits, labelled_idx, create_selector("topk"), rounds=1, fit=FIT, seed=1,
        arch_kwargs=TINY, pool_size=100, budgets=[30], min_steps=10,
    )  # fmt: skip
    assert [(r.kept, r.precision, r.test_acc) for r in again.rounds][1:] == [(r.kept, r.precision, r.test_acc) for r in res.rounds][1:]
    assert again.rounds[0].test_acc == r0.test_acc


def test_bad_inputs_raise_config_error(digits):
    with pytest.raises(ConfigError, match="unknown selector"):
        run_pseudo_labelling(digits, np.arange(100), "nope", rounds=1)
    with pytest.raises(ConfigError, match="asked for 5000 labelled samples from a training pool of 1797"):
        sample_labelled(digits.train.labels, 5000, seed=0)
    with pytest.raises(ConfigError, match="leave an unlabelled pool"):
        split_for_ssl(digits, np.arange(len(digits.train)), seed=0)
    with pytest.raises(ConfigError, match="budgets has 1 entries for 2 rounds"):
        run_pseudo_labelling(digits, np.arange(100), "topk", rounds=2, budgets=[5])


def test_metaerr_mentor_selector_gets_a_second_network_and_selects_the_budget(ssl_setup):
    """mode='mentor': a second network of the base's architecture gives the head a second opinion."""
    from metaerr_edge.semisup import create_selector

    _, _, pool, make_ctx = ssl_setup
    ctx = make_ctx(budget=25)
    idx, labels = create_selector("metaerr-topk", mode="mentor", folds=2, meta_epochs=2).select(ctx)
    assert len(idx) == 25 == len(np.unique(idx)) and idx.max() < len(pool)
    np.testing.assert_array_equal(labels, ctx.probs[idx].argmax(1))
    assert "meta_val_auroc" in ctx.info or ctx.info.get("meta_fallback") == "msp"


def _fixed_ctx(probs: np.ndarray, budget=None, **kw) -> SelectContext:
    n = len(probs)
    return SelectContext(model=None, probs=probs, pool_images=np.zeros((n, 1, 8, 8), np.uint8),
                         labelled_images=np.zeros((6, 1, 8, 8), np.uint8), labelled_labels=np.arange(6) % 2,
                         preprocess=None, round=1, budget=budget, fit=FIT, factory=None, **kw)


# Eight pool samples, two classes: predicted class 0 for rows 0-4 (confidences .99 .95 .9 .8 .7), class 1
# for rows 5-7 (.97 .6 .55); a fixed failure score that disagrees with confidence inside each class.
FIXED_PROBS = np.array([[.99, .01], [.95, .05], [.9, .1], [.8, .2], [.7, .3], [.03, .97], [.4, .6], [.45, .55]], np.float32)
FIXED_FAIL = np.array([.5, .1, .4, .2, .3, .9, .05, .6])


@pytest.mark.parametrize(("name", "budget", "kept"), [
    ("confidence", None, [0, 1, 5]),            # max prob >= 0.95
    ("topk", 4, [0, 1, 5, 6]),                  # 2 per class, most confident first
    ("metaerr-topk", 3, [1, 3, 6]),             # the 3 lowest failure scores, any class
    ("metaerr-topk", None, [1, 3, 6]),          # default count: what confidence keeps (3)
    ("metaerr-balanced", 4, [1, 3, 6, 7]),      # 2 lowest failure scores per predicted class
    ("metaerr-perclass", None, [1, 3, 6]),      # confidence's mix (2 of class 0, 1 of class 1), MetaErr inside each
    ("metaerr-perclass", 6, [1, 3, 4, 2, 6, 7]),  # the mix scaled to 6 (4 + 2), the lowest scores of each class
])
def test_each_selector_keeps_what_its_rule_says_on_fixed_inputs(name, budget, kept, monkeypatch):
    monkeypatch.setattr(selectors_mod._MetaErrBase, "failure_scores", lambda self, ctx: FIXED_FAIL)
    idx, labels = create_selector(name, threshold=0.95).select(_fixed_ctx(FIXED_PROBS, budget))
    assert idx.tolist() == sorted(kept)
    assert labels.tolist() == FIXED_PROBS[idx].argmax(1).tolist()  # the label is always the model's argmax


FIXED_STD = np.array([.02, .05, .01, .01, .2, .03, .05, .3])  # MC-Dropout std of the predicted class


@pytest.mark.parametrize(("name", "budget", "kept"), [
    ("mc-dropout", None, [0, 1, 5]),            # MC mean >= 0.95 and std <= 0.05
    ("mc-dropout-topk", 4, [2, 3, 0, 5]),       # lowest std; the tie at .01 broken by the higher confidence
    ("mc-dropout-topk", 5, [2, 3, 0, 5, 1]),    # the tie at .05: row 1 (.95) before row 6 (.6)
    ("mc-dropout-topk", None, [2, 3, 0]),       # default count: what confidence keeps from the mean (3)
])
def test_mc_dropout_selectors_keep_what_their_rule_says_on_fixed_inputs(name, budget, kept, monkeypatch):
    monkeypatch.setattr(selectors_mod.MCDropoutSelector, "mc_stats", lambda self, ctx: (FIXED_PROBS, FIXED_STD))
    idx, labels = create_selector(name, threshold=0.95).select(_fixed_ctx(FIXED_PROBS, budget))
    assert idx.tolist() == sorted(kept)
    assert labels.tolist() == FIXED_PROBS[idx].argmax(1).tolist()  # the MC-mean argmax


def test_selectors_on_one_context_share_their_work_and_a_changed_context_does_not(ssl_setup, monkeypatch):
    *_, make_ctx = ssl_setup
    calls = []
    real = selectors_mod.crossfit_probs
    monkeypatch.setattr(selectors_mod, "crossfit_probs", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    ctx = make_ctx(budget=20)
    opts = {"folds": 2, "meta_epochs": 2}
    a = create_selector("metaerr-topk", **opts).select(ctx)
    b = create_selector("metaerr-balanced", **opts).select(dataclasses.replace(ctx, budget=10, info={}))
    assert len(calls) == 1  # the same rows and head: fitted once, used twice
    assert np.array_equal(a[0], create_selector("metaerr-topk", **opts).select(dataclasses.replace(ctx, cache={}))[0])
    assert len(calls) == 2 and len(b[0]) == 10
    create_selector("metaerr-topk", **opts, skip="auto").select(ctx)  # another head on the same rows: no new folds
    assert len(calls) == 2
    n = len(ctx.labelled_labels)
    more = create_selector("metaerr-topk", **opts, meta_rows="labelled+pseudo")
    nine = dataclasses.replace(ctx, pseudo_images=ctx.pool_images[:9], pseudo_labels=ctx.probs[:9].argmax(1))
    more.select(nine)
    more.select(dataclasses.replace(nine, pseudo_images=ctx.pool_images[9:18], pseudo_labels=ctx.probs[9:18].argmax(1)))
    more.select(dataclasses.replace(nine, info={}))  # the same arrays: served
    assert calls[2:] == [n + 9, n + 9]  # only the pseudo-labels differ, and the rows are computed anew
    create_selector("metaerr-topk", **opts).select(dataclasses.replace(ctx, round=2))
    create_selector("metaerr-topk", **opts).select(dataclasses.replace(ctx, probs=ctx.probs.copy()))
    assert calls[4:] == [n, n]  # another round, other probabilities: computed anew, not served from the shared cache


def test_a_metaerr_head_scores_the_same_alone_or_after_another_head_on_the_same_context(ssl_setup):
    *_, make_ctx = ssl_setup
    opts = {"folds": 2, "meta_epochs": 3}
    alone = create_selector("metaerr-topk", **opts).failure_scores(make_ctx(budget=20))
    shared = make_ctx(budget=20)
    create_selector("metaerr-topk", **opts, skip="auto").failure_scores(shared)  # fits a head, leaves the RNG moved
    torch.randn(1000)
    np.testing.assert_array_equal(create_selector("metaerr-topk", **opts).failure_scores(dataclasses.replace(shared, info={})),
                                  alone)


def test_shadow_selectors_record_their_choice_on_the_main_trajectory_without_training_on_it(digits, monkeypatch):
    import metaerr_edge.semisup.pseudo_label as loop_mod

    labelled_idx = sample_labelled(digits.train.labels, 100, seed=5)
    trained = []
    real_fit = loop_mod.fit_classifier
    monkeypatch.setattr(loop_mod, "fit_classifier", lambda net, x, y, *a, **k: trained.append(y) or real_fit(net, x, y, *a, **k))
    contexts = []

    class Spy(selectors_mod.TopKSelector):
        def select(self, ctx):
            contexts.append(ctx)
            return super().select(ctx)

    shadows = {"conf-by-topk": create_selector("topk", threshold=0.5), "mcd": create_selector("mc-dropout-topk", passes=3)}
    res = run_pseudo_labelling(digits, labelled_idx, Spy(), rounds=2, fit=FIT, seed=5, arch_kwargs=TINY, pool_size=200,
                               budgets=[30, 50], min_steps=10, shadows=shadows)
    _, pool, _, _ = split_for_ssl(digits, labelled_idx, seed=5, pool_size=200)
    assert [len(y) for y in trained] == [100, 130, 150]  # only the main selection is trained on
    for r, ctx in zip((1, 2), contexts):
        rec = res.rounds[r].shadows
        assert set(rec) == {"conf-by-topk", "mcd"}
        for name, sel in shadows.items():
            idx, labels = sel.select(dataclasses.replace(ctx, budget=res.rounds[r].kept, info={}, cache={}))
            assert rec[name]["kept"] == len(idx) == res.rounds[r].kept  # the main selector's count
            assert rec[name]["precision"] == pytest.approx(float(np.mean(labels == pool.labels[idx])))
            assert rec[name]["class_counts"] == np.bincount(labels, minlength=10).tolist()
    assert res.to_dict()["rounds"][1]["shadows"]["mcd"]["kept"] == 30
    alone = run_pseudo_labelling(digits, labelled_idx, Spy(), rounds=2, fit=FIT, seed=5, arch_kwargs=TINY, pool_size=200,
                                 budgets=[30, 50], min_steps=10)
    # the shadows changed nothing of the trajectory: the same pseudo-labels, the same bases
    assert [(r.kept, r.test_acc, r.class_counts) for r in alone.rounds] == [(r.kept, r.test_acc, r.class_counts) for r in res.rounds]
    assert [r.precision for r in alone.rounds[1:]] == [r.precision for r in res.rounds[1:]]
    assert all(s["seconds"] >= 0 for r in res.rounds[1:] for s in r.shadows.values())


def test_per_class_pick_orders_within_classes_then_fills_and_quotas_scale():
    pred, score = np.array([0, 0, 0, 1, 2, 2]), np.array([.3, .1, .2, .9, .5, .4])
    # class 1 has one candidate for a quota of 2: the rest is filled by the lowest remaining scores
    assert selectors_mod.per_class_pick(pred, score, np.array([1, 2, 1]), 4).tolist() == [1, 3, 5, 2]
    assert selectors_mod.scaled_quotas(np.array([6, 3, 1]), 5).tolist() == [3, 2, 0]
    assert selectors_mod.scaled_quotas(np.array([0, 0, 0]), 4).tolist() == [2, 1, 1]
    assert selectors_mod.scaled_quotas(np.array([1, 1]), 0).tolist() == [0, 0]


def test_metaerr_on_labelled_and_pseudo_rows_cross_fits_over_both(ssl_setup, monkeypatch):
    *_, make_ctx = ssl_setup
    seen = {}
    real = selectors_mod.crossfit_probs

    def spy(factory, images, labels, preprocess, fit, k=5, **kw):
        seen["n"], seen["labels"], seen["extra"] = len(images), labels, kw.get("extra")
        return real(factory, images, labels, preprocess, fit, k=k, **kw)

    monkeypatch.setattr(selectors_mod, "crossfit_probs", spy)
    base = make_ctx(budget=5)
    ctx = dataclasses.replace(base, pseudo_images=base.pool_images[:30], pseudo_labels=base.probs[:30].argmax(1))
    sel = create_selector("metaerr-topk", folds=2, meta_epochs=2, meta_rows="labelled+pseudo")
    data, _ = sel.meta_data(ctx)
    assert seen["n"] == len(base.labelled_labels) + 30 and seen["extra"] is None
    assert np.array_equal(data.labels[-30:], ctx.pseudo_labels) and len(data.labels) == len(base.labelled_labels) + 30
    calls: list[int] = []
    monkeypatch.setattr(selectors_mod, "crossfit_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    sel.failure_scores(ctx)  # the fit reports its rows, and is served the folds meta_data cached
    assert ctx.info["meta_pseudo_rows"] == 30 and ctx.info["meta_train"] == len(data.labels) and calls == []
    assert len(sel.meta_data(base)[0].labels) == len(base.labelled_labels)  # round 1: no pseudo-labels yet
    with pytest.raises(ConfigError, match="meta_rows must be one of"):
        create_selector("metaerr", meta_rows="pool")
    with pytest.raises(ConfigError, match="unknown head skip"):
        create_selector("metaerr-topk", skip="bogus")


def test_the_cheap_preset_head_starts_as_the_free_score_it_stacks_on(ssl_setup, monkeypatch):
    *_, make_ctx = ssl_setup
    heads = []
    real = selectors_mod.fit_meta
    monkeypatch.setattr(selectors_mod, "fit_meta", lambda meta, *a, **k: heads.append(meta) or real(meta, *a, **k))
    ctx = make_ctx(budget=20)
    idx, _ = create_selector("metaerr-topk", folds=2, meta_epochs=2, skip="auto").select(ctx)
    assert len(idx) == 20 and heads[0].config.skip in ("msp", "margin", "gini", "entropy")


def test_the_round_loop_trains_on_the_models_labels_never_the_true_ones(digits, monkeypatch):
    import metaerr_edge.semisup.pseudo_label as loop_mod

    labelled_idx = sample_labelled(digits.train.labels, 100, seed=2)
    trained: list[tuple[np.ndarray, np.ndarray]] = []
    real_fit = loop_mod.fit_classifier
    monkeypatch.setattr(loop_mod, "fit_classifier", lambda net, x, y, *a, **k: trained.append((x, y)) or real_fit(net, x, y, *a, **k))
    seen: list[SelectContext] = []

    class Spy(selectors_mod.ConfidenceSelector):
        def select(self, ctx):
            seen.append(ctx)
            return selectors_mod.TopKSelector().select(dataclasses.replace(ctx, budget=40))

    res = run_pseudo_labelling(digits, labelled_idx, Spy(), rounds=2, fit=FIT, seed=2, arch_kwargs=TINY, pool_size=200,
                               min_steps=10)
    _, pool, _, _ = split_for_ssl(digits, labelled_idx, seed=2, pool_size=200)
    assert [len(y) for _, y in trained] == [100, 140, 140]
    for r, ctx in enumerate(seen, start=1):
        assert not any(f.name in ("labels", "pool_labels") for f in dataclasses.fields(ctx))  # no true pool labels in sight
        idx, plabels = selectors_mod.TopKSelector().select(dataclasses.replace(ctx, budget=40))
        x, y = trained[r]
        assert np.array_equal(y[100:], ctx.probs[idx].argmax(1))  # the round's base learns the model's labels
        assert np.array_equal(x[100:], pool.images[idx])
        wrong = ctx.probs[idx].argmax(1) != pool.labels[idx]
        assert res.rounds[r].precision == pytest.approx(1 - wrong.mean())
        assert sum(res.rounds[r].class_counts) == 40 and res.rounds[r].imbalance >= 1.0


def test_a_rounds_base_does_not_depend_on_the_random_numbers_its_selector_drew(digits):
    class Nothing(selectors_mod.ConfidenceSelector):
        def select(self, ctx):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)

    class HungryNothing(Nothing):  # e.g. a selector that trains fold models before it decides
        def select(self, ctx):
            torch.randn(10_000)
            create_base("small_cnn", 1, 10, (8, 8), **TINY)
            return super().select(ctx)

    labelled_idx = sample_labelled(digits.train.labels, 100, seed=3)
    runs = [run_pseudo_labelling(digits, labelled_idx, sel, rounds=1, fit=FIT, seed=3, arch_kwargs=TINY, pool_size=100,
                                 min_steps=10) for sel in (Nothing(), HungryNothing())]
    assert runs[0].rounds[1].test_acc == runs[1].rounds[1].test_acc


def test_the_robust_preset_selector_learns_from_views_scored_out_of_fold(ssl_setup, monkeypatch):
    *_, make_ctx = ssl_setup
    fits, folds = [], []
    real_fit, real_crossfit = selectors_mod.fit_meta, selectors_mod.crossfit_probs
    monkeypatch.setattr(selectors_mod, "fit_meta", lambda meta, data, *a, **k: fits.append((meta, data, k["views"]))
                        or real_fit(meta, data, *a, **k))

    def spy_crossfit(*a, on_fold=None, **k):  # record which view rows each fold model scores
        def record(model, held):
            folds.append(held)
            on_fold(model, held)
        return real_crossfit(*a, on_fold=record if on_fold else None, **k)

    monkeypatch.setattr(selectors_mod, "crossfit_probs", spy_crossfit)
    ctx = make_ctx(budget=15)
    idx, _ = create_selector("metaerr-topk", mode="mentor-features", shift_views=2, folds=2, meta_epochs=2).select(ctx)
    meta, data, views = fits[0]
    n = len(ctx.labelled_labels)
    assert len(idx) == 15 and meta.config.target == "tcp" and meta.feature_dim > 0
    assert len(views.labels) == 2 * n and np.array_equal(views.labels, np.tile(data.labels, 2))
    assert sorted(np.concatenate(folds).tolist()) == list(range(n))  # every row's views scored by one fold model
    assert (views.probs.sum(1) > 0.99).all()  # every view got probabilities
    with pytest.raises(ConfigError, match="shift_views must be"):
        create_selector("metaerr-topk", shift_views=-1)


@pytest.mark.parametrize("mode", ["probs", "mentor", "mentor-features"])
def test_models_a_selector_trains_get_the_steps_of_their_own_rows_every_round(digits, monkeypatch, mode):
    """Round 2's base trains on labelled + pseudo-labels, so its epochs are few; a fold model (or
    mentor) on the labelled set alone must still get ``min_steps`` steps, not those few epochs."""
    import metaerr_edge.meta.fit as fit_mod
    from metaerr_edge.meta import labels as labels_mod

    steps: list[tuple[str, int, int]] = []  # (who, round, optimiser steps)
    rnd = {"r": 0}
    real_fit = labels_mod.fit_classifier

    def spy(net, x, y, pre, config, *a, **k):
        steps.append((k.get("desc", a[1] if len(a) > 1 else ""), rnd["r"], config.epochs * math.ceil(len(x) / config.batch_size)))
        return real_fit(net, x, y, pre, config, *a, **k)

    monkeypatch.setattr(labels_mod, "fit_classifier", spy)
    monkeypatch.setattr(fit_mod, "fit_classifier", spy)

    class Counting(selectors_mod.MetaErrTopKSelector):
        def select(self, ctx):
            rnd["r"] = ctx.round
            return super().select(ctx)

    labelled_idx = sample_labelled(digits.train.labels, 60, seed=4)
    fit = FitConfig(epochs=1, batch_size=32, augment="none")
    res = run_pseudo_labelling(digits, labelled_idx, Counting(mode=mode, folds=2, meta_epochs=2), rounds=2, fit=fit, seed=4,
                               arch_kwargs=TINY, pool_size=600, budgets=[500, 500], min_steps=40)
    assert res.rounds[2].n_train == 560  # round 2's base: 18 steps a epoch, so 3 epochs (54 steps >= 40)
    trained = [s for s in steps if s[1] == 2]
    assert trained, "no model was trained by the selector in round 2"
    assert ("mentor" in {who for who, _, _ in trained}) == (mode != "probs")
    assert any(who.startswith("mentor fold") for who, _, _ in trained) == (mode == "mentor")  # out-of-fold mentors too
    assert all(n >= 40 for _, _, n in trained), trained  # 30 labelled rows a fold at 1 step an epoch: 40 epochs, not 3


def test_the_ssl_command_scores_compared_selectors_at_the_selectors_count(tmp_path, capsys):
    import json

    from metaerr_edge.cli import main

    out = tmp_path / "ssl.json"
    argv = ["ssl", "--dataset", "digits", "--labelled", "100", "--rounds", "1", "--selector", "topk", "--budget", "40",
            "--compare", "confidence", "mc-dropout-topk", "--epochs", "1", "--batch-size", "32", "--max-pool", "200",
            "--width", "8", "--min-steps", "10", "--quiet", "-o", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    header = next(line for line in table if line.startswith("round"))
    assert [c.strip() for c in header.split("|")][-2:] == ["confidence", "mc-dropout-topk"]
    round1 = next(line for line in table if line.startswith("    1 |"))
    assert round1.endswith("% (40)") and len(round1) == len(header)  # precision (kept) at the main count; aligned
    doc = json.loads(out.read_text())
    shadows = doc["rounds"][1]["shadows"]
    assert shadows["mc-dropout-topk"]["kept"] == 40 == doc["rounds"][1]["kept"]  # the main selector's count
    assert 0 <= shadows["confidence"]["kept"] <= 200  # a threshold selector keeps what its threshold says
    assert main(["ssl", "--dataset", "digits", "--compare", "nope", "-o", str(tmp_path / "x.json")]) == 2
    assert "unknown selector 'nope'" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def _trajectory(res) -> list[tuple]:
    """A result without its wall times: what a resumed run must reproduce."""
    def plain(d: dict) -> dict:
        return {k: plain(v) if isinstance(v, dict) else v for k, v in d.items() if k != "seconds" and "seconds" not in k}

    return [(r.round, r.kept, None if math.isnan(r.precision) else r.precision, r.test_acc, r.n_train, r.class_counts,
             plain(r.info), plain(r.shadows)) for r in res.rounds]


def test_pseudo_labelling_killed_mid_round_resumes_from_its_checkpoint_to_the_same_result(digits, tmp_path, monkeypatch):
    """Killed while retraining round 2 of 3, the same call with the checkpoint goes on after round 1
    (MetaErr's folds and heads and MC-Dropout's masks drawing random numbers along the way) and returns
    the uninterrupted result; fewer rounds come from the checkpoint, other budgets are not its run."""
    import metaerr_edge.semisup.pseudo_label as loop_mod

    labelled_idx = sample_labelled(digits.train.labels, 100, seed=6)
    kw = dict(rounds=3, fit=FIT, seed=6, arch_kwargs=TINY, pool_size=200, budgets=[30, 40, 50], min_steps=10)

    def selectors():
        return create_selector("metaerr-topk", meta_epochs=2, folds=2), {"mcd": create_selector("mc-dropout-topk", passes=3)}

    sel, shadows = selectors()
    want = run_pseudo_labelling(digits, labelled_idx, sel, shadows=shadows, **kw)
    real_fit, trained = loop_mod.fit_classifier, []

    def dies_in_round_2(net, x, y, pre, fit, progress=False, desc="", *a, **k):
        if desc == "round 2":
            raise KeyboardInterrupt
        return real_fit(net, x, y, pre, fit, progress, desc, *a, **k)

    ckpt = tmp_path / "ssl" / "seed6.pt"
    monkeypatch.setattr(loop_mod, "fit_classifier", dies_in_round_2)
    sel, shadows = selectors()
    with pytest.raises(KeyboardInterrupt):
        run_pseudo_labelling(digits, labelled_idx, sel, shadows=shadows, checkpoint=ckpt, **kw)
    monkeypatch.setattr(loop_mod, "fit_classifier", lambda net, x, y, pre, fit, progress=False, desc="", *a, **k:
                        trained.append(desc) or real_fit(net, x, y, pre, fit, progress, desc, *a, **k))
    sel, shadows = selectors()
    got = run_pseudo_labelling(digits, labelled_idx, sel, shadows=shadows, checkpoint=ckpt, **kw)
    assert trained == ["round 2", "round 3"]  # rounds 0 and 1 came from the checkpoint
    assert _trajectory(got) == _trajectory(want)
    trained.clear()
    sel, shadows = selectors()
    fewer = run_pseudo_labelling(digits, labelled_idx, sel, shadows=shadows, checkpoint=ckpt, **{**kw, "rounds": 2, "budgets": [30, 40]})
    assert trained == [] and _trajectory(fewer) == _trajectory(want)[:3]
    sel, shadows = selectors()
    run_pseudo_labelling(digits, labelled_idx, sel, shadows=shadows, checkpoint=ckpt, **{**kw, "budgets": [30, 41, 50]})
    assert trained == ["round 0", "round 1", "round 2", "round 3"]  # another budget: another run, from the start
