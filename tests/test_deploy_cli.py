"""The deployment commands end to end on a real (digits) run: export, verify, calibrate, predict, tradeoff.

Plus the SGR guarantee on real data: over 100 random calibration/test splits of the run's held-out
scores, the test selective risk exceeds r* no more often than delta allows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom

from metaerr_edge.cli import main
from metaerr_edge.decide import threshold_for_risk
from metaerr_edge.contract import read_contract


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "model.onnx"
    assert main(["export", str(digits_run.path), "-o", str(out)]) == 0
    return out


def test_export_carries_the_contract(exported, digits_run):
    contract = read_contract(exported)
    assert contract.classes == digits_run.classes
    assert contract.input.shape == ("batch", 1, 8, 8)
    assert contract.meta["mode"] == "probs" and contract.threshold.method == "coverage"
    assert contract.versions["opset"]


def test_verify_passes_and_reports_parity(exported, digits_run, tmp_path, capsys):
    rc = main(["verify", str(exported), "--run", str(digits_run.path), "-n", "64", "--json-out", str(tmp_path / "p.json")])
    assert rc == 0
    assert "Parity PASSED" in capsys.readouterr().out
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["label_mismatches"] == 0 and report["max_abs_score_diff"] <= 1e-5


def test_calibrate_for_coverage_then_predict(exported, digits_run, tmp_path, capsys):
    out = tmp_path / "calibrated.onnx"
    assert main(["calibrate", str(exported), "--run", str(digits_run.path), "--coverage", "0.8", "-o", str(out)]) == 0
    spec = read_contract(out).threshold
    assert spec.method == "coverage" and spec.target_coverage == 0.8
    assert 0.7 <= spec.achieved_coverage <= 0.8
    capsys.readouterr()
    from PIL import Image

    images, _ = digits_run.split("test")
    for i in range(6):
        Image.fromarray(images[i, 0]).save(tmp_path / f"frame{i}.png")
    assert main(["predict", str(out), str(tmp_path), "--backend", "onnxruntime"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 6 and {ln["decision"] for ln in lines} <= {"ACCEPT", "DEFER"}
    assert all(ln["class"] == str(ln["label"]) for ln in lines)


def test_calibrate_rejects_bad_targets(exported, digits_run, capsys):
    assert main(["calibrate", str(exported), "--run", str(digits_run.path), "--coverage", "1.5"]) == 2
    assert "coverage" in capsys.readouterr().err


def test_tradeoff_writes_table_and_plot(digits_run, tmp_path, capsys):
    rc = main(["tradeoff", str(digits_run.path), "--device-latency-ms", "1", "--fallback-latency-ms", "40",
               "--fallback-accuracy", "0.99", "--deadline-ms", "30", "-o", str(tmp_path)])  # fmt: skip
    assert rc == 0
    result = json.loads((tmp_path / "tradeoff.json").read_text())
    assert result["recommended"]["p99_latency_ms"] <= 30
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def test_sgr_guarantee_holds_over_100_random_splits_of_real_scores(digits_run):
    """Digits scores of the deployed meta-model on data neither model trained on (calib + test)."""
    p = digits_run.predictions
    scores = np.concatenate([p["calib_score_probs"], p["test_score_probs"]])
    errors = np.concatenate([p["calib_probs"].argmax(1) != p["calib_labels"], p["test_probs"].argmax(1) != p["test_labels"]])
    target, delta, trials = 0.05, 0.1, 100  # base error rate here is about 7%
    rng = np.random.default_rng(0)
    exceed, coverages = 0, []
    for _ in range(trials):
        perm = rng.permutation(len(scores))
        cal, test = perm[: len(perm) // 2], perm[len(perm) // 2 :]
        choice = threshold_for_risk(scores[cal], errors[cal], target, delta)
        accepted = scores[test] <= choice.value
        if choice.feasible and accepted.any():
            coverages.append(accepted.mean())
            exceed += errors[test][accepted].mean() > target
    # The guarantee bounds P(risk > r*) by delta per split; allow the binomial spread of 100 splits.
    assert exceed <= binom.ppf(0.999, trials, delta), exceed
    assert len(coverages) > 50 and np.mean(coverages) > 0.3  # the bound is not vacuous on this data


def test_every_backend_that_runs_here_agrees_on_a_real_run(exported, digits_run):
    """ONNX Runtime CPU on the exported file and PyTorch on the run folder: same answers."""
    from metaerr_edge.runtime import open_session

    images = digits_run.split("test")[0][:64].astype(np.float32) / 255.0
    with open_session(exported, backend="onnxruntime") as ort, open_session(digits_run.path, backend="torch") as ref:
        assert (ort.backend, ref.backend) == ("onnxruntime", "torch")
        a, b = ort.predict(images), ref.predict(images)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_allclose(a.failure_score, b.failure_score, atol=1e-5)
    np.testing.assert_array_equal(a.defer, b.defer)
