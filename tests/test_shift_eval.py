"""evaluate_shift and `metaerr-edge evaluate --shift`: every score on corrupted and OOD copies of the test split."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metaerr_edge.cli import main
from metaerr_edge.data import TEST_FAMILIES, VALIDATION_FAMILIES, corrupt, error_labels
from metaerr_edge.decide import threshold_for_coverage
from metaerr_edge.errors import ConfigError, DataError
from metaerr_edge.evaluate import evaluate_run
from metaerr_edge.metrics import augrc, auroc, aurc
from metaerr_edge.models import predict_probs
from metaerr_edge.shift_eval import calibration_threshold, evaluate_shift, write_shift_report

SCORES = ["msp", "metaerr[probs]", "entropy"]


@pytest.fixture(scope="module")
def report(digits_run):
    return evaluate_shift(digits_run, SCORES, group="test", severities=(1, 5), max_n=200, progress=False)


def test_the_sets_are_clean_then_each_test_family_and_severity_then_ood(report, digits_run):
    sets = [(s["set"], s["kind"], s["severity"]) for s in report.sets]
    assert sets[0] == ("clean", "clean", None)
    assert sets[1:-1] == [(f, "corruption", s) for f in TEST_FAMILIES for s in (1, 5)]
    assert sets[-1] == ("ood:uniform_noise", "ood", None)  # digits without a data root: the noise set only,
    assert "ood:fashion-mnist" in report.skipped  # and the report says so
    assert report.group == "test" and report.scores == SCORES
    assert all(s["n"] == 200 for s in report.sets[:-1]) and report.sets[-1]["n"] == 400  # clean + as many OOD images


def test_max_n_takes_a_seeded_random_subset_not_the_first_images(report, digits_run):
    idx = report.test_indices
    assert len(idx) == 200 and len(set(idx.tolist())) == 200 and (np.diff(idx) > 0).all()
    assert idx.max() > 200  # spread over the whole split (which may be ordered by class)
    n = len(digits_run.split("test")[1])
    assert np.array_equal(idx, np.sort(np.random.default_rng(0).choice(n, size=200, replace=False)))


def test_the_clean_row_is_what_evaluate_reports(report, digits_run):
    clean = evaluate_run(digits_run, SCORES, n_boot=10, progress=False)
    images, labels = digits_run.split("test")
    idx = report.test_indices
    err = error_labels(digits_run.predictions["test_probs"][idx], labels[idx])
    for name in SCORES:
        s = clean.scores[name][idx]
        row = report.sets[0]["scores"][name]
        assert row["auroc"] == pytest.approx(auroc(s, err)) and row["aurc"] == pytest.approx(aurc(s, err))
        assert row["augrc"] == pytest.approx(augrc(s, err))


def test_a_corrupted_set_is_scored_on_the_corrupted_images(report, digits_run):
    images, labels = digits_run.split("test")
    x = corrupt(images[report.test_indices], "jpeg", 5, seed=0)
    probs = predict_probs(digits_run.base, x, digits_run.preprocess)
    err = error_labels(probs, labels[report.test_indices])
    row = next(s for s in report.sets if s["set"] == "jpeg" and s["severity"] == 5)
    assert row["error_rate"] == pytest.approx(err.mean())
    assert row["scores"]["msp"]["auroc"] == pytest.approx(auroc(1 - probs.max(1), err))


def test_ood_images_all_count_as_failures(report):
    clean, ood = report.sets[0], report.sets[-1]
    assert ood["error_rate"] == pytest.approx((clean["error_rate"] * 200 + 200) / 400)


def test_each_threshold_is_fitted_on_calib_and_applied_to_every_set(report, digits_run):
    calib = 1 - digits_run.predictions["calib_probs"].max(1)
    t = threshold_for_coverage(calib, coverage=0.9).value
    assert report.thresholds["msp"] == pytest.approx(t)
    assert report.thresholds["entropy"] is None  # entropy is not in [0, 1]: no deployable threshold
    idx = report.test_indices
    s = 1 - digits_run.predictions["test_probs"][idx].max(1)
    err = error_labels(digits_run.predictions["test_probs"][idx], digits_run.split("test")[1][idx])
    row = report.sets[0]["scores"]["msp"]
    assert row["coverage"] == pytest.approx(np.mean(s <= t)) and row["risk"] == pytest.approx(err[s <= t].mean())
    assert "coverage" not in report.sets[0]["scores"]["entropy"]
    summary = report.summary()["msp"]
    rises = [c["scores"]["msp"]["risk"] - row["risk"] for c in report.sets if c["kind"] == "corruption"]
    assert summary["risk_rise_max"] == pytest.approx(max(rises))
    assert summary["shift_auroc_mean"] == pytest.approx(np.mean([c["scores"]["msp"]["auroc"] for c in report.sets
                                                                 if c["kind"] == "corruption"]))


def test_calibration_threshold_refuses_scores_outside_the_unit_interval():
    assert calibration_threshold(np.array([0.1, 0.2, 0.3, 0.9]), 0.5) == pytest.approx(0.2)
    assert calibration_threshold(np.array([0.1, 1.7]), 0.5) is None


def test_the_same_call_gives_the_same_report_and_validation_families_are_another_group(report, digits_run):
    again = evaluate_shift(digits_run, SCORES, group="test", severities=(1, 5), max_n=200, progress=False)
    assert json.dumps(again.to_dict(), default=str) == json.dumps(report.to_dict(), default=str)
    val = evaluate_shift(digits_run, ["msp"], group="validation", severities=(3,), ood=False, max_n=50, progress=False)
    assert [s["set"] for s in val.sets] == ["clean", *VALIDATION_FAMILIES]


@pytest.mark.parametrize("kwargs, message", [
    ({"group": "train"}, "unknown family group 'train'"),
    ({"severities": (0, 3)}, "severities must be a non-empty subset of [1, 2, 3, 4, 5]"),
    ({"severities": ()}, "severities must be a non-empty subset"),
    ({"coverage": 0.0}, "coverage must lie in (0, 1]"),
    ({"max_n": 0}, "max_n must be None (the whole test split) or an integer >= 1, got 0"),
    ({"max_n": -1}, "got -1"),
    ({"severities": (5, "x")}, "severities must be a non-empty subset"),
])  # fmt: skip
def test_bad_arguments_are_one_line(digits_run, kwargs, message):
    with pytest.raises(ConfigError) as info:
        evaluate_shift(digits_run, ["msp"], progress=False, **{"group": "test", **kwargs})
    assert message in str(info.value)


def test_the_report_files_are_written_as_one_set(report, tmp_path):
    paths = write_shift_report(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shift.json", "shift.md", "shift.png"]
    doc = json.loads(paths["json"].read_text())
    assert doc["family_group"] == "test" and len(doc["sets"]) == len(report.sets)
    assert doc["thresholds"]["entropy"] is None and doc["summary"]["msp"]["clean_auroc"] == pytest.approx(
        report.sets[0]["scores"]["msp"]["auroc"])
    md = paths["md"].read_text()
    assert "| jpeg | 5 |" in md and "### Summary" in md and "| ood:uniform_noise | - |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = type(report).from_dict(doc)  # a report read back from its JSON tabulates the same
    assert back.scores == report.scores and back.to_markdown().replace("nan", "-") == report.to_markdown().replace("nan", "-")
    assert not math.isnan(doc["summary"]["metaerr[probs]"]["shift_auroc_mean"])


def test_the_cli_writes_the_shift_report_and_refuses_shift_options_without_shift(digits_run, tmp_path, capsys):
    out = tmp_path / "shift"
    assert main(["evaluate", str(digits_run.path), "--shift", "--scores", "msp", "--severities", "2",
                 "--max-n", "60", "--no-ood", "--quiet", "-o", str(out)]) == 0
    assert "| shot_noise | 2 | 60 |" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["shift.json", "shift.md", "shift.png"]
    assert main(["evaluate", str(digits_run.path), "--no-ood", "--severities", "1", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--severities, --no-ood only apply with --shift" in err
    assert main(["evaluate", str(digits_run.path), "--shift", "--severities", "7"]) == 2
    assert "expected comma-separated severities from 1 to 5" in capsys.readouterr().err


def test_fitting_never_reads_the_test_split_or_an_added_set(digits_run):
    from metaerr_edge.scores import ScoreContext, Scorer

    class Peeking(Scorer):
        name = "peeking"

        def __init__(self, split: str) -> None:
            super().__init__()
            self.split = split

        def fit(self, ctx):
            ctx.probs(self.split)
            return self

        def score(self, ctx, split):
            return 1 - ctx.probs(split).max(1)

    ctx = ScoreContext(digits_run)
    images, labels = digits_run.split("test")
    ctx.add_split("shift/jpeg", images[:20], labels[:20])
    for split in ("test", "shift/jpeg"):
        with pytest.raises(ConfigError, match=f"failure score 'peeking' read split '{split}' while fitting"):
            ctx.fit(Peeking(split))
    scorer = ctx.fit(Peeking("calib"))  # calibration data is what fitting may read
    assert scorer.score(ctx, "shift/jpeg").shape == (20,) and ctx._fitting is None
    for taken in ("test", "base_train", "pool", "shift/jpeg"):  # a run split cannot be shadowed
        with pytest.raises(ConfigError, match=f"split '{taken}' exists already"):
            ctx.add_split(taken, images[:2], labels[:2])
    with pytest.raises(DataError, match="labels must be class indices 0..9 or -1"):
        ctx.add_split("shift/bad", images[:2], np.array([3, 10]))


def test_a_missing_ood_dataset_fails_before_any_corruption(digits_run, tmp_path, monkeypatch):
    from metaerr_edge import shift_eval

    calls = []
    monkeypatch.setattr(shift_eval, "corrupt", lambda *a, **k: calls.append(a) or a[0])
    with pytest.raises(DataError, match="FashionMNIST"):
        evaluate_shift(digits_run, ["msp"], group="test", root=str(tmp_path), progress=False)  # an empty root
    assert calls == []


def test_coverage_one_thresholds_at_the_largest_calibration_score(digits_run):
    rep = evaluate_shift(digits_run, ["msp"], group="validation", severities=(1,), ood=False, max_n=40, coverage=1.0,
                         progress=False)
    calib = 1 - digits_run.predictions["calib_probs"].max(1)
    test = 1 - digits_run.predictions["test_probs"][rep.test_indices].max(1)
    assert rep.thresholds["msp"] == pytest.approx(calib.max())
    assert rep.sets[0]["scores"]["msp"]["coverage"] == pytest.approx(np.mean(test <= calib.max()))
