"""Metric tests: hand-computed small cases (ties included), scikit-learn agreement, limits."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.metrics import (
    PER_MILLE,
    aupr_error,
    aupr_success,
    aurc,
    augrc,
    auroc,
    bootstrap_ci,
    coverage_at_risk,
    eaurc,
    failure_metrics,
    fpr_at_95tpr,
    risk_at_coverage,
    risk_coverage_curve,
)

DETECTION = [auroc, aupr_error, aupr_success, fpr_at_95tpr]
SCALAR = [*DETECTION, aurc, eaurc, augrc]

# The tied example of the brief.
TIED_SCORE = np.array([0.1, 0.1, 0.5, 0.9])
TIED_ERR = np.array([0, 1, 0, 1])


def _optimal_aurc(r: float) -> float:
    return r + (1 - r) * math.log(1 - r)


def _per_sample_aurc(score: np.ndarray, err: np.ndarray) -> float:
    """The naive version: one point per sample in sort order, so ties depend on order."""
    order = np.argsort(score, kind="stable")
    k = np.arange(1, score.size + 1)
    return float(np.mean(np.cumsum(err[order]) / k))


def _random(n: int, seed: int, error_rate: float = 0.2, decimals: int = 2):
    rng = np.random.default_rng(seed)
    err = (rng.random(n) < error_rate).astype(int)
    score = np.round(rng.random(n) + 0.3 * err, decimals)  # informative, with many ties
    return score, err


# --- risk-coverage: hand-computed ---------------------------------------------------------


def test_curve_groups_ties_hand_computed():
    # Distinct scores 0.9 > 0.5 > 0.1 (the 0.1 group holds one error, one correct).
    #   accept all 4 (t=0.9): coverage 1.00, risk 2/4, generalized 2/4
    #   drop 0.9      (t=0.5): coverage 0.75, risk 1/3, generalized 1/4
    #   drop 0.5      (t=0.1): coverage 0.50, risk 1/2, generalized 1/4
    #   final point:           coverage 0.00, risk 1/2, generalized 0
    rc = risk_coverage_curve(TIED_SCORE, TIED_ERR)
    np.testing.assert_allclose(rc.coverages, [1.0, 0.75, 0.5, 0.0])
    np.testing.assert_allclose(rc.risks, [0.5, 1 / 3, 0.5, 0.5])
    np.testing.assert_allclose(rc.generalized_risks, [0.5, 0.25, 0.25, 0.0])
    np.testing.assert_array_equal(rc.thresholds, [0.9, 0.5, 0.1, -np.inf])


def test_aurc_augrc_eaurc_hand_computed():
    # AURC, trapezoids: 0.25*(1/2+1/3)/2 + 0.25*(1/3+1/2)/2 + 0.5*(1/2+1/2)/2
    #                 = 5/48 + 5/48 + 12/48 = 11/24
    assert aurc(TIED_SCORE, TIED_ERR) == pytest.approx(11 / 24, abs=1e-15)
    # AUGRC: 0.25*(1/2+1/4)/2 + 0.25*(1/4+1/4)/2 + 0.5*(1/4+0)/2 = 3/32 + 2/32 + 2/32 = 7/32
    assert augrc(TIED_SCORE, TIED_ERR) == pytest.approx(7 / 32, abs=1e-15)
    # E-AURC with r = 1/2: 11/24 - (1/2 + 1/2 ln 1/2)
    assert eaurc(TIED_SCORE, TIED_ERR) == pytest.approx(11 / 24 - _optimal_aurc(0.5), abs=1e-15)
    # The per-sample cumulative mean would depend on the tie order: 1/2 or 1/4 first.
    swapped = TIED_ERR[[1, 0, 2, 3]]
    assert _per_sample_aurc(TIED_SCORE, TIED_ERR) != _per_sample_aurc(TIED_SCORE, swapped)


def test_operating_points_hand_computed():
    # Curve points (coverage, risk): (1, 1/2), (0.75, 1/3), (0.5, 1/2), (0, 1/2).
    assert risk_at_coverage(TIED_SCORE, TIED_ERR, 0.80) == 0.5  # smallest coverage >= 0.8 is 1
    assert risk_at_coverage(TIED_SCORE, TIED_ERR, 0.75) == pytest.approx(1 / 3)  # exact hit
    assert risk_at_coverage(TIED_SCORE, TIED_ERR, 0.6) == pytest.approx(1 / 3)
    assert risk_at_coverage(TIED_SCORE, TIED_ERR, 0.25) == 0.5  # ties: 0.5 is the floor
    assert coverage_at_risk(TIED_SCORE, TIED_ERR, 0.5) == 1.0
    assert coverage_at_risk(TIED_SCORE, TIED_ERR, 0.4) == 0.75
    assert coverage_at_risk(TIED_SCORE, TIED_ERR, 0.2) == 0.0  # no point is that safe


def test_operating_points_on_exact_fractions():
    # 20 samples, scores 0.00..0.95, errors at 0.85 and 0.95.
    score = np.arange(20) / 20
    err = np.zeros(20, dtype=int)
    err[[17, 19]] = 1
    assert risk_at_coverage(score, err, 0.9) == pytest.approx(1 / 18)  # 18 accepted: one error
    assert risk_at_coverage(score, err, 0.85) == 0.0  # 17 accepted
    assert risk_at_coverage(score, err, 0.95) == pytest.approx(1 / 19)
    assert coverage_at_risk(score, err, 0.05) == 0.85
    assert coverage_at_risk(score, err, 1 / 19) == 0.95  # risk exactly at the target counts


def test_all_tied_scores_give_a_flat_curve():
    score = np.full(10, 0.3, dtype=np.float32)
    err = np.array([1, 1, 1] + [0] * 7)
    rc = risk_coverage_curve(score, err)
    np.testing.assert_allclose(rc.coverages, [1.0, 0.0])
    assert aurc(score, err) == pytest.approx(0.3)
    assert risk_at_coverage(score, err, 0.5) == pytest.approx(0.3)
    assert coverage_at_risk(score, err, 0.29) == 0.0


def test_aurc_invariant_to_order_of_ties_unlike_per_sample_version():
    score, err = _random(500, seed=3, decimals=1)  # ~13 distinct values: heavy ties
    rng = np.random.default_rng(0)
    grouped, naive = set(), set()
    for _ in range(10):
        perm = rng.permutation(score.size)
        grouped.add(aurc(score[perm], err[perm]))
        grouped.add(augrc(score[perm], err[perm]))
        naive.add(_per_sample_aurc(score[perm], err[perm]))
    assert len(grouped) == 2  # one AURC and one AUGRC value, whatever the order
    assert len(naive) > 1


def test_perfect_ranking_reaches_the_optimum():
    n, r = 20_000, 0.1
    err = np.zeros(n, dtype=int)
    err[: int(n * r)] = 1
    score = err + np.random.default_rng(0).random(n) * 0.5  # every error above every correct
    assert aurc(score, err) == pytest.approx(_optimal_aurc(r), abs=1e-4)
    assert abs(eaurc(score, err)) < 1e-4
    assert augrc(score, err) == pytest.approx(r**2 / 2, abs=1e-12)
    assert auroc(score, err) == 1.0


def test_one_class_risk_coverage_limits():
    score = np.linspace(0, 1, 7)
    assert aurc(score, np.zeros(7)) == 0.0
    assert eaurc(score, np.zeros(7)) == 0.0
    assert aurc(score, np.ones(7)) == pytest.approx(1.0)
    assert eaurc(score, np.ones(7)) == pytest.approx(0.0)
    assert augrc(score, np.ones(7)) == pytest.approx(0.5)


def test_curve_is_frozen():
    rc = risk_coverage_curve(TIED_SCORE, TIED_ERR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rc.risks = np.zeros(4)  # type: ignore[misc]
    with pytest.raises(ValueError):
        rc.risks[0] = 0.0


# --- detection ------------------------------------------------------------------------------


def test_detection_hand_computed():
    # AUROC with a tie: error pairs (0.2 vs correct 0.2: 1/2, vs 0.1: 1), (0.6 vs both: 2) -> 3.5/4
    assert auroc([0.2, 0.2, 0.6, 0.1], [1, 0, 1, 0]) == 0.875
    # Ranked by score: 0.8 err, 0.4 ok, 0.35 err, 0.1 ok -> AP_err = (1/1 + 2/3) / 2
    assert aupr_error([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)
    # Ranked by confidence: 0.1 ok, 0.35 err, 0.4 ok, 0.8 err -> AP_ok = (1/1 + 2/3) / 2
    assert aupr_success([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(5 / 6)


def test_fpr_at_95tpr_hand_computed():
    # 20 correct at 0.00..0.19; TPR >= 0.95 needs 19 of them, i.e. accept score <= 0.18.
    correct, labels = np.arange(20) / 100, np.r_[np.zeros(20), 1, 1, 1, 1]
    assert fpr_at_95tpr(np.r_[correct, 0.05, 0.185, 0.5, 0.9], labels) == 0.25
    assert fpr_at_95tpr(np.r_[correct, 0.05, 0.17, 0.5, 0.9], labels) == 0.5
    # An error tied with the 19th correct sample is accepted with it.
    assert fpr_at_95tpr(np.r_[correct, 0.18, 0.5], np.r_[np.zeros(20), 1, 1]) == 0.5


def test_fpr_at_95tpr_matches_brute_force():
    score, err = _random(400, seed=5)
    best = 1.0
    for t in np.unique(score):
        accepted = score <= t
        if accepted[err == 0].mean() >= 0.95:
            best = min(best, accepted[err == 1].mean())
    assert fpr_at_95tpr(score, err) == pytest.approx(best)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_agrees_with_sklearn(seed):
    score, err = _random(1000, seed=seed)
    assert auroc(score, err) == pytest.approx(roc_auc_score(err, score), abs=1e-12)
    assert aupr_error(score, err) == pytest.approx(average_precision_score(err, score), abs=1e-12)
    assert aupr_success(score, err) == pytest.approx(
        average_precision_score(1 - err, 1 - score), abs=1e-12
    )


def test_random_score_auroc_is_half():
    rng = np.random.default_rng(7)
    score, err = rng.random(50_000), (rng.random(50_000) < 0.2).astype(int)
    assert auroc(score, err) == pytest.approx(0.5, abs=0.01)
    assert aupr_error(score, err) == pytest.approx(err.mean(), abs=0.01)


@pytest.mark.parametrize("fn", DETECTION)
@pytest.mark.parametrize("label", [0, 1])
def test_detection_nan_for_one_class(fn, label):
    result = fn([0.1, 0.5, 0.9], [label] * 3)
    assert math.isnan(result)


def test_bool_labels_and_float32_scores_accepted():
    score = np.array([0.1, 0.4, 0.35, 0.8], dtype=np.float32)
    assert auroc(score, np.array([False, False, True, True])) == 0.75


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("fn", SCALAR)
@pytest.mark.parametrize(
    ("score", "err", "words"),
    [
        ([0.1, 0.2, 0.3], [0, 1], "same length"),
        ([], [], "at least one"),
        ([0.1, np.nan, 0.3], [0, 1, 0], "finite"),
        ([0.1, np.inf, 0.3], [0, 1, 0], "finite"),
        ([0.1, 0.2, 0.3], [0, 2, 1], "0/1"),
        ([0.1, 0.2, 0.3], [0.0, 0.5, 1.0], "0/1"),
        ([[0.1, 0.2]], [[0, 1]], "1-D"),
        (["a", "b"], [0, 1], "numeric"),
    ],
)
def test_bad_input_raises_data_error(fn, score, err, words):
    with pytest.raises(DataError, match=words):
        fn(score, err)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_targets_raise_config_error(bad):
    with pytest.raises(ConfigError):
        risk_at_coverage(TIED_SCORE, TIED_ERR, bad)
    with pytest.raises(ConfigError):
        coverage_at_risk(TIED_SCORE, TIED_ERR, bad)
    with pytest.raises(ConfigError):
        fpr_at_95tpr(TIED_SCORE, TIED_ERR, target_tpr=bad)


# --- failure_metrics ------------------------------------------------------------------------


def test_failure_metrics_keys_and_values():
    score, err = _random(2000, seed=11)
    m = failure_metrics(score, err)
    assert set(m) == {
        "error_rate", "auroc", "aupr_error", "aupr_success", "fpr95tpr", "aurc", "eaurc",
        "augrc", "risk@cov80", "risk@cov90", "risk@cov95", "cov@risk1", "cov@risk2", "cov@risk5",
    }  # fmt: skip
    assert set(PER_MILLE) <= set(m)
    assert m["error_rate"] == pytest.approx(err.mean())
    assert m["auroc"] == auroc(score, err)
    assert m["aurc"] == aurc(score, err) and m["augrc"] == augrc(score, err)
    assert m["risk@cov90"] == risk_at_coverage(score, err, 0.9)
    assert m["cov@risk5"] == coverage_at_risk(score, err, 0.05)
    assert m["risk@cov80"] <= m["risk@cov95"] + 0.02  # an informative score: less risk lower
    assert all(isinstance(v, float) for v in m.values())


def test_failure_metrics_one_class():
    m = failure_metrics([0.1, 0.2, 0.3], [0, 0, 0])
    assert math.isnan(m["auroc"]) and math.isnan(m["fpr95tpr"])
    assert m["aurc"] == 0.0 and m["cov@risk1"] == 1.0 and m["error_rate"] == 0.0


# --- bootstrap ------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [auroc, aurc, augrc])
def test_bootstrap_ci_contains_point_and_narrows(fn):
    small = _random(300, seed=1)
    large = _random(5000, seed=1)
    p_s, lo_s, hi_s = bootstrap_ci(fn, *small, n_boot=200)
    p_l, lo_l, hi_l = bootstrap_ci(fn, *large, n_boot=200)
    assert lo_s <= p_s <= hi_s and lo_l <= p_l <= hi_l
    assert p_s == fn(*small)
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)  # width ~ 1/sqrt(n): about 4x narrower


def test_bootstrap_fast_auroc_equals_generic_path():
    score, err = _random(800, seed=4)
    fast = bootstrap_ci(auroc, score, err, n_boot=100, seed=3)
    generic = bootstrap_ci(lambda s, e: auroc(s, e), score, err, n_boot=100, seed=3)
    np.testing.assert_allclose(fast, generic, atol=1e-12)


def test_bootstrap_is_seeded_and_skips_nan_replicates():
    score, err = np.linspace(0, 1, 8), np.array([0, 0, 0, 0, 0, 0, 0, 1])  # often no error
    a = bootstrap_ci(auroc, score, err, n_boot=300, seed=1)
    assert a == bootstrap_ci(auroc, score, err, n_boot=300, seed=1)
    assert a.point == 1.0 and a.low <= a.high <= 1.0 and not math.isnan(a.low)


def test_bootstrap_all_nan_and_bad_args():
    point, low, high = bootstrap_ci(auroc, [0.1, 0.2], [0, 0], n_boot=20)
    assert math.isnan(point) and math.isnan(low) and math.isnan(high)
    with pytest.raises(ConfigError):
        bootstrap_ci(auroc, TIED_SCORE, TIED_ERR, n_boot=0)
    with pytest.raises(ConfigError):
        bootstrap_ci(auroc, TIED_SCORE, TIED_ERR, alpha=1.0)
    with pytest.raises(DataError):
        bootstrap_ci(auroc, TIED_SCORE, TIED_ERR[:3])
