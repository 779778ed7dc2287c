"""Tests for metaerr_edge.decide: coverage / SGR thresholds, the defer rule, the latency trade-off."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, fields

import numpy as np
import pytest
from scipy import stats

from metaerr_edge.decide import (
    ThresholdChoice,
    TradeoffTable,
    clopper_pearson_upper,
    decide,
    recommend,
    sweep_tradeoff,
    threshold_for_coverage,
    threshold_for_risk,
)
from metaerr_edge.errors import ConfigError, DataError

# Ten calibration samples; ties at 0.2 (x3), 0.7 (x2) and 0.9 (x2).
TIED_SCORES = np.array([0.1, 0.2, 0.2, 0.2, 0.5, 0.7, 0.7, 0.9, 0.9, 1.0])
TIED_ERRORS = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 1])


# --------------------------------------------------------------------------- coverage
@pytest.mark.parametrize(
    ("coverage", "value", "achieved", "risk"),
    [
        (0.5, 0.5, 0.5, 1 / 5),  # exactly 5 accepted: 0.1, 0.2 x3, 0.5
        (0.6, 0.5, 0.5, 1 / 5),  # 6 would split the 0.7 tie: stay at 5
        (0.3, 0.1, 0.1, 0.0),  # 3 would split the 0.2 tie: only 0.1 fits
        (0.4, 0.2, 0.4, 1 / 4),  # the 0.2 tie ends exactly at 4
        (0.85, 0.7, 0.7, 2 / 7),
        (1.0, 1.0, 1.0, 5 / 10),
    ],
)
def test_coverage_threshold_with_ties(coverage, value, achieved, risk):
    choice = threshold_for_coverage(TIED_SCORES, TIED_ERRORS, coverage=coverage)
    assert choice.value == value
    assert choice.achieved_coverage == achieved
    assert choice.achieved_risk == pytest.approx(risk)
    assert choice.method == "coverage" and choice.feasible
    assert choice.target_coverage == coverage and choice.calibration_n == 10
    # the reported coverage is what the defer rule does on the same data
    assert np.count_nonzero(~decide(TIED_SCORES, choice)) == round(achieved * 10)


def test_coverage_below_first_group_accepts_nothing():
    choice = threshold_for_coverage(TIED_SCORES, TIED_ERRORS, coverage=0.05)
    assert (choice.value, choice.achieved_coverage, choice.achieved_risk) == (0.0, 0.0, None)
    assert choice.feasible


def test_coverage_float_floor_does_not_lose_a_sample():
    # 0.29 * 100 == 28.999999999999996 in floating point; 29 samples must still be accepted.
    scores = np.arange(100) / 100
    choice = threshold_for_coverage(scores, coverage=0.29)
    assert choice.value == 0.28 and choice.achieved_coverage == 0.29 and choice.achieved_risk is None


def test_coverage_infeasible_when_zero_scores_exceed_target():
    choice = threshold_for_coverage([0.0, 0.0, 0.5, 0.6], [0, 1, 0, 0], coverage=0.25)
    assert choice.method == "coverage-infeasible" and not choice.feasible
    assert (choice.value, choice.achieved_coverage, choice.achieved_risk) == (0.0, 0.5, 0.5)


# --------------------------------------------------------------------------- Clopper-Pearson
def test_clopper_pearson_known_values():
    assert clopper_pearson_upper(0, 10, 0.05) == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-12)
    assert clopper_pearson_upper(0, 10, 0.05) == pytest.approx(0.2589, abs=1e-4)
    assert clopper_pearson_upper(1, 10, 0.05) == pytest.approx(0.3942, abs=1e-4)  # textbook table
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0
    assert clopper_pearson_upper(0, 0, 0.05) == 1.0


@pytest.mark.parametrize(("k", "n", "delta"), [(0, 10, 0.05), (3, 20, 0.1), (7, 50, 0.01), (49, 50, 0.2), (12, 1000, 0.05)])
def test_clopper_pearson_matches_scipy_binomtest(k, n, delta):
    one_sided = stats.binomtest(k, n, alternative="less").proportion_ci(confidence_level=1 - delta, method="exact")
    two_sided = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * delta, method="exact")
    ours = clopper_pearson_upper(k, n, delta)
    assert ours == pytest.approx(one_sided.high, rel=1e-8)
    assert ours == pytest.approx(two_sided.high, rel=1e-8)


@pytest.mark.parametrize(("k", "n", "delta"), [(3, 2, 0.05), (-1, 5, 0.05), (1.5, 5, 0.05), (1, 5, 0.0), (1, 5, 1.0)])
def test_clopper_pearson_rejects_bad_arguments(k, n, delta):
    with pytest.raises(ConfigError):
        clopper_pearson_upper(k, n, delta)


# --------------------------------------------------------------------------- SGR
# 40 distinct scores i/40; errors at ranks 13, 31, 34, 36..40 (1-based).
SGR_SCORES = np.arange(1, 41) / 40
SGR_ERRORS = np.zeros(40, int)
SGR_ERRORS[[12, 30, 33, 35, 36, 37, 38, 39]] = 1


def test_sgr_binary_search_hand_case():
    # d = 40 distinct scores -> k = ceil(log2 41) = 6 probes at delta/6. Probes accept
    # m = 20 (UB .267, pass), 30 (.185, pass), 35 (.244, pass), 38 (.326, fail),
    # 36 (.274, pass), 37 (.301, fail): the largest passing is m = 36 with 4 errors.
    choice = threshold_for_risk(SGR_SCORES, SGR_ERRORS, target_risk=0.3, delta=0.1)
    assert choice.method == "risk" and choice.feasible
    assert choice.value == 36 / 40
    assert choice.achieved_coverage == 36 / 40
    assert choice.achieved_risk == pytest.approx(4 / 36)
    assert choice.risk_upper_bound == pytest.approx(stats.beta.ppf(1 - 0.1 / 6, 5, 32), rel=1e-12)
    assert (choice.target_risk, choice.delta, choice.calibration_n) == (0.3, 0.1, 40)


def test_sgr_exhaustive_pays_a_looser_union_bound():
    # all 40 thresholds at delta/40: m = 35 (3 errors) has UB .2992 <= .3, m = 36 has .3296.
    choice = threshold_for_risk(SGR_SCORES, SGR_ERRORS, target_risk=0.3, delta=0.1, search="exhaustive")
    assert choice.value == 35 / 40 and choice.achieved_risk == pytest.approx(3 / 35)
    assert choice.risk_upper_bound == pytest.approx(stats.beta.ppf(1 - 0.1 / 40, 4, 32), rel=1e-12)


def test_sgr_infeasible_defers_all_it_can():
    choice = threshold_for_risk(SGR_SCORES, np.ones(40), target_risk=0.1, delta=0.1)
    assert choice.method == "risk-infeasible" and not choice.feasible
    assert (choice.value, choice.achieved_coverage, choice.achieved_risk, choice.risk_upper_bound) == (0.0, 0.0, None, 1.0)
    # scores of exactly 0 cannot be deferred by a threshold in [0, 1]: reported, not hidden
    scores = np.concatenate([[0.0, 0.0], SGR_SCORES[2:]])
    choice = threshold_for_risk(scores, np.ones(40), target_risk=0.1, delta=0.1)
    assert choice.achieved_coverage == 2 / 40 and choice.achieved_risk == 1.0 and choice.risk_upper_bound == 1.0


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """score ~ U(0, 1), P(error | score) = 0.02 + 0.6 score^2: true selective risk 0.02 + 0.2 t^2."""
    score = rng.random(n)
    return score, rng.random(n) < 0.02 + 0.6 * score**2


def test_sgr_guarantee_holds_in_simulation():
    target, delta, draws = 0.1, 0.1, 200
    rng = np.random.default_rng(2017)
    test_violation = pop_violation = 0
    coverages = []
    for _ in range(draws):
        choice = threshold_for_risk(*_synthetic(rng, 1000), target_risk=target, delta=delta)
        t = choice.value
        test_score, test_error = _synthetic(rng, 5000)
        accepted = test_score <= t
        test_risk = test_error[accepted].mean() if accepted.any() else 0.0
        test_violation += test_risk > target
        pop_violation += (0.02 + 0.2 * t * t) > target  # the risk on an infinite test set
        coverages.append(choice.achieved_coverage)
    # SGR promises P(risk > target) <= delta per draw, so the violation count is at most
    # Binomial(200, 0.1); its 99.9 % quantile (~0.165 as a fraction) is the slack that a correct
    # method exceeds by chance once in a thousand seeds (the seed is fixed, so this is deterministic).
    allowed = stats.binom.ppf(0.999, draws, delta) / draws
    assert pop_violation / draws <= allowed
    assert test_violation / draws <= allowed
    # and the guarantee is not bought by deferring everything: the ideal coverage is sqrt(0.4) = 0.63
    assert 0.35 < np.mean(coverages) < math.sqrt(0.4)


# --------------------------------------------------------------------------- decide / spec
def test_decide_rule_and_types():
    assert decide([0.1, 0.5, 0.9], 0.5).tolist() == [False, False, True]  # equal -> accept
    choice = threshold_for_coverage(TIED_SCORES, coverage=0.5)
    grid = TIED_SCORES.reshape(2, 5)
    assert decide(grid, choice).shape == (2, 5)
    assert decide(TIED_SCORES, choice.to_spec()).tolist() == decide(TIED_SCORES, 0.5).tolist()
    assert decide([0.0, 1.0], -np.inf).tolist() == [True, True]
    with pytest.raises(DataError):
        decide([0.1, np.nan], 0.5)
    with pytest.raises(ConfigError):
        decide([0.1], float("nan"))


def test_choice_mirrors_contract_threshold_spec():
    from metaerr_edge.contract.spec import ThresholdSpec

    assert [f.name for f in fields(ThresholdChoice)] == [f.name for f in fields(ThresholdSpec)]
    choice = threshold_for_risk(SGR_SCORES, SGR_ERRORS, target_risk=0.3, delta=0.1)
    spec = choice.to_spec()
    assert isinstance(spec, ThresholdSpec) and asdict(spec) == asdict(choice)
    json.dumps(asdict(threshold_for_coverage(TIED_SCORES, coverage=0.05).to_spec()), allow_nan=False)


def test_decide_does_not_import_torch():
    code = ("import sys, metaerr_edge.decide as d; "
            "d.decide([0.2], d.threshold_for_risk([0.1, 0.9] * 50, [0, 1] * 50, 0.5, 0.1)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


# --------------------------------------------------------------------------- trade-off
HAND_SCORES = np.arange(1, 11) / 10
HAND_ERRORS = np.array([0, 0, 0, 0, 1, 0, 1, 1, 0, 1])  # device accuracy 0.6


def test_tradeoff_endpoints_and_middle_by_hand():
    table = sweep_tradeoff(HAND_SCORES, HAND_ERRORS, 5.0, 20.0, fallback_accuracy=0.9, thresholds=[1.0, 0.4, -np.inf])
    rows = table.rows()
    assert [r["threshold"] for r in rows] == [1.0, 0.4, -np.inf]
    device, middle, fallback = rows
    assert device["deferral_rate"] == 0.0 and device["system_accuracy"] == pytest.approx(0.6)
    assert device["selective_risk"] == pytest.approx(0.4)
    assert device["mean_latency_ms"] == 5.0 and device["p99_latency_ms"] == 5.0
    assert fallback["deferral_rate"] == 1.0 and fallback["system_accuracy"] == pytest.approx(0.9)
    assert math.isnan(fallback["selective_risk"])
    assert fallback["mean_latency_ms"] == 25.0 and fallback["p99_latency_ms"] == 25.0
    # 4 accepted, all right, + 6 deferred * 0.9
    assert middle["system_accuracy"] == pytest.approx(0.94)
    assert middle["mean_latency_ms"] == pytest.approx(5.0 + 0.6 * 20.0) and middle["p99_latency_ms"] == 25.0
    # per-sample fallback correctness instead of an accuracy: it misses sample 10 only
    fb = np.ones(10)
    fb[9] = 0
    table = sweep_tradeoff(HAND_SCORES, HAND_ERRORS, 5.0, 20.0, fallback_correct=fb, thresholds=[1.0, 0.4, -np.inf])
    assert table.system_accuracy.tolist() == pytest.approx([0.6, 0.9, 0.9])


def test_default_grid_has_both_extremes_and_is_ordered():
    table = sweep_tradeoff(HAND_SCORES, HAND_ERRORS, 5.0, 20.0, fallback_accuracy=0.9)
    assert table.threshold[0] == 1.0 and table.threshold[-1] == -np.inf
    assert table.coverage.tolist() == [i / 10 for i in range(10, -1, -1)]  # merged duplicates
    assert np.all(np.diff(table.deferral_rate) > 0)
    with pytest.raises(ValueError):
        table.coverage[0] = 0.5  # columns are read-only


def test_p99_is_the_mixture_quantile():
    # 100 samples, 1 deferred: the deferred mass 1 % sits above p99, which stays device-only.
    scores = np.arange(1, 101) / 100
    table = sweep_tradeoff(scores, np.zeros(100), 5.0, 20.0, fallback_accuracy=1.0, thresholds=[0.99, 0.98])
    assert table.p99_latency_ms.tolist() == [5.0, 25.0]
    # measured device latencies 1..100 ms, fallback 1000 ms, half deferred: 200 atoms of equal
    # mass 1..100 and 1001..1100; the 0.99 inverted-CDF quantile is the 198th: 1098.
    table = sweep_tradeoff(HAND_SCORES, HAND_ERRORS, np.arange(1.0, 101.0), 1000.0, 0.9, thresholds=[1.0, 0.5])
    assert table.p99_latency_ms.tolist() == [99.0, 1098.0]
    assert table.mean_latency_ms.tolist() == pytest.approx([50.5, 550.5])


def test_p99_summary_path_is_close_to_brute_force():
    rng = np.random.default_rng(3)
    device, fallback = rng.gamma(5.0, 1.0, 2000), rng.gamma(20.0, 2.0, 1000)  # 2e6 pairs: summarised
    table = sweep_tradeoff(HAND_SCORES, HAND_ERRORS, device, fallback, 0.9, thresholds=[0.5])
    sums = (device[:, None] + fallback[None, :]).ravel()
    # half deferred: equal total mass on D and D + F, i.e. each device sample len(fallback) times
    mixture = np.concatenate([np.repeat(device, fallback.size), sums])
    exact = np.quantile(mixture, 0.99, method="inverted_cdf")
    assert table.p99_latency_ms[0] == pytest.approx(exact, rel=5e-3)


def _realistic_table(deadline_ms=None):
    rng = np.random.default_rng(7)
    scores, errors = _synthetic(rng, 2000)
    return sweep_tradeoff(scores, errors, rng.gamma(5.0, 1.0, 500), rng.gamma(20.0, 2.0, 500),
                          fallback_correct=rng.random(2000) < 0.95, deadline_ms=deadline_ms)


def test_latency_monotone_in_deferral_rate():
    table = _realistic_table()
    order = np.argsort(table.deferral_rate)
    assert np.all(np.diff(table.mean_latency_ms[order]) >= 0)
    assert np.all(np.diff(table.p99_latency_ms[order]) >= 0)


def test_recommend_respects_deadline():
    table = _realistic_table(deadline_ms=60.0)
    row = recommend(table)
    assert row["p99_latency_ms"] <= 60.0 and row["meets_deadline"]
    feasible = table.p99_latency_ms <= 60.0
    assert row["system_accuracy"] == table.system_accuracy[feasible].max()
    assert 0.0 < row["deferral_rate"] < 1.0  # a real trade-off, not an endpoint
    unconstrained = recommend(table, deadline_ms=1e9)
    assert unconstrained["system_accuracy"] >= row["system_accuracy"]
    with pytest.raises(ConfigError, match="p99"):
        recommend(table, deadline_ms=1.0)


def test_recommend_tie_break_and_min_accuracy():
    # a perfect device model and a perfect fallback: every row has accuracy 1 -> defer least
    table = sweep_tradeoff(HAND_SCORES, np.zeros(10), 5.0, 20.0, fallback_accuracy=1.0)
    assert recommend(table)["deferral_rate"] == 0.0
    table = sweep_tradeoff(HAND_SCORES, HAND_ERRORS, 5.0, 20.0, fallback_accuracy=0.9)
    row = recommend(table, min_accuracy=0.9)  # cheapest good-enough point
    good = table.system_accuracy >= 0.9
    assert row["system_accuracy"] >= 0.9 and row["mean_latency_ms"] == table.mean_latency_ms[good].min()
    assert row["threshold"] == 0.4  # 4 right + 6 * 0.9 = 0.94; also accepting 0.5 (an error) gives 0.85
    with pytest.raises(ConfigError):
        recommend(table, min_accuracy=0.99)


def test_table_markdown_rows_and_plot(tmp_path):
    table = _realistic_table(deadline_ms=60.0)
    text = table.to_markdown(max_rows=10)
    assert text.startswith("| threshold |") and "defer all" in text and f"of {len(table)} rows" in text
    assert len(table.rows()) == len(table) and isinstance(table, TradeoffTable)
    pytest.importorskip("matplotlib")
    out = table.plot(tmp_path / "tradeoff.png")
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["tradeoff.png"]  # no temp file left behind


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("coverage", [0.0, -0.1, 1.5, "a"])
def test_bad_coverage(coverage):
    with pytest.raises(ConfigError):
        threshold_for_coverage(TIED_SCORES, coverage=coverage)


@pytest.mark.parametrize(("target_risk", "delta"), [(0.0, 0.1), (1.0, 0.1), (-0.2, 0.1), (0.1, 0.0), (0.1, 1.0), (0.1, 2.0)])
def test_bad_risk_or_delta(target_risk, delta):
    with pytest.raises(ConfigError):
        threshold_for_risk(SGR_SCORES, SGR_ERRORS, target_risk=target_risk, delta=delta)


@pytest.mark.parametrize(
    ("scores", "errors"),
    [
        ([0.1, 0.2, 0.3], [0, 1]),  # length mismatch
        ([], []),  # empty
        ([0.1, np.nan], [0, 1]),  # NaN
        ([0.1, 1.5], [0, 1]),  # outside [0, 1]
        ([[0.1, 0.2]], [0, 1]),  # not 1-D
        ([0.1, 0.2], [0, 2]),  # not 0/1
    ],
)
def test_bad_data(scores, errors):
    with pytest.raises(DataError):
        threshold_for_risk(scores, errors, target_risk=0.1)
    with pytest.raises(DataError):
        threshold_for_coverage(scores, errors, coverage=0.5)
    with pytest.raises(DataError):
        sweep_tradeoff(scores, errors, 5.0, 20.0, fallback_accuracy=0.9)


def test_bad_tradeoff_arguments():
    args = (HAND_SCORES, HAND_ERRORS, 5.0, 20.0)
    with pytest.raises(ConfigError):
        sweep_tradeoff(*args)  # neither fallback_accuracy nor fallback_correct
    with pytest.raises(ConfigError):
        sweep_tradeoff(*args, fallback_accuracy=0.9, fallback_correct=np.ones(10))
    with pytest.raises(ConfigError):
        sweep_tradeoff(*args, fallback_accuracy=1.5)
    with pytest.raises(ConfigError):
        sweep_tradeoff(*args, fallback_accuracy=0.9, deadline_ms=0)
    with pytest.raises(ConfigError):
        sweep_tradeoff(*args, fallback_accuracy=0.9, thresholds=0)
    with pytest.raises(ConfigError):
        sweep_tradeoff(*args, fallback_accuracy=0.9, thresholds=[0.5, np.nan])
    with pytest.raises(DataError):
        sweep_tradeoff(HAND_SCORES, HAND_ERRORS, [], 20.0, fallback_accuracy=0.9)
    with pytest.raises(DataError):
        sweep_tradeoff(HAND_SCORES, HAND_ERRORS, 5.0, -1.0, fallback_accuracy=0.9)
    with pytest.raises(DataError):
        sweep_tradeoff(*args, fallback_correct=np.ones(9))
    with pytest.raises(ConfigError):
        threshold_for_risk(SGR_SCORES, SGR_ERRORS, 0.3, search="linear")
