"""The shift benchmark's generated Targets table: each verdict from the numbers it shows, the best
free score taken over every free score the clean benchmark scored, and the ones it did not, said."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
shift = pytest.importorskip("shift")

from metaerr_edge._fileio import dumps_json  # noqa: E402


def _clean(aurocs: dict[str, float]) -> dict:
    return {"aggregate": {"scores": {n: {"auroc": {"mean": a}, "aurc": {"mean": (1 - a) / 10}} for n, a in aurocs.items()}}}


def _summary(shift_mean: float, worst: float, rise: float, ood: float) -> dict:
    return {"shift_auroc_mean": shift_mean, "shift_auroc_min": worst, "risk_rise_max": rise, "ood_auroc_mean": ood}


def test_targets_table_verdicts_and_unscored_free_scores(tmp_path, monkeypatch):
    monkeypatch.setattr(shift, "RESULTS", tmp_path)
    cheap, robust = shift.PRESET_LABELS["cheap"], shift.PRESET_LABELS["robust"]
    free = {n: 0.80 for n in shift.FREE if n not in ("maxlogit-pnorm", "rel-u")}
    (tmp_path / "failure_prediction_mnist.json").write_text(dumps_json(_clean(
        {**free, "entropy": 0.85, cheap: 0.85, robust: 0.90, "mc-dropout": 0.91, "trustscore": 0.7, "confidnet": 0.7})))
    (tmp_path / "failure_prediction_cifar10.json").write_text(dumps_json(_clean(
        {**free, "maxlogit-pnorm": 0.86, "rel-u": 0.7, cheap: 0.85, robust: 0.92, "mc-dropout": 0.91, "trustscore": 0.7,
         "confidnet": 0.7})))
    seed = {"summary": {cheap: _summary(0.80, 0.6, 0.1, 0.9), robust: _summary(0.70, 0.4, 0.3, 0.95),
                        "msp": _summary(0.75, 0.5, 0.2, 0.93)}}
    table = shift.targets_table([{"dataset": "mnist", "seeds": {"0": seed, "1": seed}}, {"dataset": "cifar10", "seeds": {"0": seed}}])
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in table.splitlines() if line.startswith("| ")}
    assert "mnist (2 seed(s))" in table and "cifar10 (1 seed(s))" in table
    clean = rows["clean: cheap >= best free score (AUROC, AURC)"]
    # mnist: a tie with entropy holds, and the two free scores it never scored are named
    assert clean[0].startswith("**held**: 0.8500 vs 0.8500 (entropy)") and "not scored on the clean test split: maxlogit-pnorm, rel-u" in clean[0]
    # cifar10: MaxLogit-pNorm is the best free score there, and beats the cheap preset
    assert clean[1].startswith("not held: 0.8500 vs 0.8600 (maxlogit-pnorm)") and "not scored" not in clean[1]
    assert rows["clean: robust >= best white-box score (AUROC, AURC)"][0].startswith("not held: 0.9000 vs 0.9100 (mc-dropout)")
    assert rows["clean: robust >= best white-box score (AUROC, AURC)"][1].startswith("**held**: 0.9200 vs 0.9100")
    assert rows["test shift: cheap >= MSP (mean AUROC)"][0].startswith("**held**: 0.8000 vs 0.7500")
    assert rows["test shift: robust >= MSP (mean AUROC)"][0].startswith("not held: 0.7000 vs 0.7500")
    assert rows["test shift: no cell of robust below 0.5 (worst seed)"][0].startswith("not held: 0.4000 (MSP 0.5000)")
    assert rows["90% threshold: cheap's largest risk rise <= MSP's"][0].startswith("**held**: 0.100 vs 0.200")
    assert rows["OOD: robust >= MSP (mean AUROC)"][1].startswith("**held**: 0.9500 vs 0.9300")
