"""The benchmarks' --resume across sessions: a finished seed is kept, a candidate added since is
computed alone from the seed's run folder, a seed whose folder is gone is run anew; and the shift
benchmark merges an added candidate's scores into the kept seed's very sets."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
fp = pytest.importorskip("failure_prediction")
shift = pytest.importorskip("shift")

from metaerr_edge._fileio import dumps_json, loads_json  # noqa: E402
from metaerr_edge.shift_report import ShiftReport  # noqa: E402


def _row(auroc: float) -> dict:
    return {k: auroc if k == "auroc" else 0.1 for k in fp.SUMMARY_KEYS}


def _seed(seed: int, candidates: list[str]) -> dict:
    rows = {"msp": _row(0.9), **{f"metaerr[probs@{c}]": {**_row(0.91), "calib_auroc": 0.9} for c in candidates}}
    return {"seed": seed, "test_accuracy": 0.99, "n_test": 100, "rows": rows, "candidates": sorted(candidates),
            "costs": {"base": {"params": 1, "flops": 1}}, "selected": "x", "seconds": {"train": 1.0}}


def test_failure_prediction_keeps_adds_or_reruns_each_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "RESULTS", tmp_path)
    monkeypatch.setattr(fp, "CANDIDATES", {"a": {}, "b": {}})
    args = fp.parse_args(["--datasets", "mnist", "--resume", "--quiet"])
    old = fp.results_doc("mnist", fp.run_config(args, "mnist", 0), [_seed(0, ["a", "b"]), _seed(1, ["a"]), _seed(2, ["a"])], 5.0)
    (tmp_path / "failure_prediction_mnist.json").write_text(dumps_json(old))
    calls: list[tuple] = []
    monkeypatch.setattr(fp, "reusable", lambda folder, config: config.seed == 1)  # seed 2's run folder is gone
    monkeypatch.setattr(fp, "BASELINES", ["msp", "rel-u"])  # rel-u added since the seeds ran

    def add(a, config, kept, names, progress, baselines=()):
        calls.append(("add", config.seed, names, list(baselines)))
        return {**kept, "candidates": sorted(set(kept["candidates"]) | set(names)),
                "rows": {**kept["rows"], **{b: _row(0.5) for b in baselines}}}

    monkeypatch.setattr(fp, "add_candidates", add)
    monkeypatch.setattr(fp, "one_seed", lambda a, config, specs, variants, progress: calls.append(("anew", config.seed))
                        or (_seed(config.seed, ["a", "b"]), {}, np.zeros(0)))
    monkeypatch.setattr(fp, "plot_risk_coverage", lambda *a, **k: None)
    doc = fp.run_dataset(args, "mnist", False)
    # seed 0 kept whole (its folder is gone: without rel-u), seed 1 gets candidate b and rel-u from its folder
    assert calls == [("add", 1, ["b"], ["rel-u"]), ("anew", 2)]
    assert [s["candidates"] for s in doc["seeds"]] == [["a", "b"]] * 3
    saved = loads_json((tmp_path / "failure_prediction_mnist.json").read_text())
    assert saved["aggregate"]["scores"]["metaerr[probs@b]"]["auroc"]["n"] == 2  # seeds 0 and 2 carry it (the add is a stub)
    assert saved["aggregate"]["scores"]["rel-u"]["auroc"]["n"] == 1  # seed 1's, added (seed 2's stub run has none)
    # every seed kept: nothing runs, and the results come back (no unbound document)
    calls.clear()
    again = fp.run_dataset(args, "mnist", False)
    assert calls == [] and [s["seed"] for s in again["seeds"]] == [0, 1, 2]
    # seeds not asked for stay in the file: --seeds 3 adds seed 3 to 0, 1 and 2 (and leaves seed 0's plot alone)
    plots: list = []
    monkeypatch.setattr(fp, "plot_risk_coverage", lambda *a, **k: plots.append(a))
    doc = fp.run_dataset(fp.parse_args(["--datasets", "mnist", "--resume", "--quiet", "--seeds", "3"]), "mnist", False)
    assert calls == [("anew", 3)] and plots == []
    saved = loads_json((tmp_path / "failure_prediction_mnist.json").read_text())
    assert [s["seed"] for s in saved["seeds"]] == [s["seed"] for s in doc["seeds"]] == [0, 1, 2, 3]
    assert saved["aggregate"]["scores"]["msp"]["auroc"]["n"] == 4
    # --retrain-for-baselines: seed 0 (its folder gone, rel-u missing) is trained again to score it; the rest kept
    calls.clear()
    fp.run_dataset(fp.parse_args(["--datasets", "mnist", "--resume", "--quiet", "--seeds", "0", "2",
                                  "--retrain-for-baselines"]), "mnist", False)
    assert calls == [("add", 0, [], ["rel-u"]), ("add", 2, [], ["rel-u"])]


def test_select_best_never_picks_the_selected_row_and_prefers_the_cheaper_tie():
    rows = {"metaerr[a]": {"calib_auroc": 0.90001}, "metaerr[b]": {"calib_auroc": 0.9}, "metaerr[selected]": {"calib_auroc": 1.0},
            "msp": {"calib_auroc": 0.99}}
    best = fp.select_best(rows, {"metaerr[a]": {"flops": 10}, "metaerr[b]": {"flops": 1}})
    assert best == "metaerr[b]" and rows["metaerr[selected]"]["selected"] == "metaerr[b]"


def _sets(scores: dict[str, float]) -> list[dict]:
    def row(name, kind, severity, err):
        return {"set": name, "kind": kind, "severity": severity, "n": 10, "error_rate": err,
                "scores": {s: {"auroc": v, "aurc": 0.1, "augrc": 0.05, "coverage": 0.9, "risk": err / 2} for s, v in scores.items()}}

    return [row("clean", "clean", None, 0.1), row("jpeg", "corruption", 1, 0.2), row("ood:mnist", "ood", None, 0.5)]


def _report(scores: dict[str, float]) -> ShiftReport:
    return ShiftReport("run", "fashion-mnist", "resnet9", "test", 0.9, {s: 0.5 for s in scores}, _sets(scores))


def test_shift_merges_an_added_candidate_into_the_kept_sets(monkeypatch):
    kept = {**_report({"msp": 0.8}).to_dict(), "test_accuracy": 0.9, "seconds": {"train": 1.0},
            "selection": {"summary": {"msp": {"clean_auroc": 0.7}}}}
    monkeypatch.setattr(shift, "CANDIDATES", {"new": {}})
    monkeypatch.setattr(shift, "get_run", lambda config, folder, progress: (SimpleNamespace(path="runs/f_s0"), 0.0))
    monkeypatch.setattr(shift, "candidate_runs", lambda run, progress, cands: dict(cands))
    monkeypatch.setattr(shift, "selection_pass", lambda *a: _report({"msp": 0.71, "metaerr[probs@new]": 0.75}))
    monkeypatch.setattr(shift, "evaluate_shift", lambda run, specs, **kw: _report({"metaerr[probs@new]": 0.6}))
    monkeypatch.setattr(shift, "candidate_specs", lambda cands: ["metaerr[probs@new]"])
    args = shift.parse_args(["--quiet"])
    config = shift.run_config(args.fp, "fashion-mnist", 0)
    merged = shift.add_candidates(args, config, kept, ["new"])
    assert set(merged["summary"]) == {"msp", "metaerr[probs@new]"}
    assert merged["summary"]["metaerr[probs@new]"]["clean_auroc"] == 0.6 and merged["summary"]["msp"]["clean_auroc"] == 0.8
    assert merged["selection"]["summary"]["msp"]["clean_auroc"] == 0.71 and "metaerr[probs@new]" in merged["selection"]["summary"]
    assert all(set(s["scores"]) == {"msp", "metaerr[probs@new]"} for s in merged["sets"])
    # other sets (another base or test subset) are refused, not merged
    monkeypatch.setattr(shift, "evaluate_shift", lambda run, specs, **kw: ShiftReport(
        "run", "fashion-mnist", "resnet9", "test", 0.9, {"metaerr[probs@new]": 0.5}, _sets({"metaerr[probs@new]": 0.6})[:2]))
    with pytest.raises(SystemExit, match="not the kept seed's"):
        shift.add_candidates(args, config, {**_report({"msp": 0.8}).to_dict(), "selection": {"summary": {}},
                                            "seconds": {}}, ["new"])


def test_failure_prediction_scores_an_added_baseline_from_the_run_folder(digits_run, monkeypatch):
    """A baseline added since a seed ran is scored on that seed's own test split, its rows merged,
    the kept rows and the selected head untouched; another base's folder is refused."""
    from metaerr_edge.evaluate import evaluate_run

    run = digits_run
    monkeypatch.setattr(fp, "get_run", lambda config, folder, progress: (run, 0.0))
    args = fp.parse_args(["--quiet", "--n-boot", "50"])
    first = evaluate_run(run, ["msp"], n_boot=50, seed=0, progress=False)
    kept = {"seed": 0, "test_accuracy": first.test_accuracy, "n_test": first.n_test, "candidates": [], "seconds": {"train": 1.0},
            "rows": {"msp": first.rows["msp"], "metaerr[probs]": {**first.rows["msp"], "calib_auroc": 0.8}},
            "costs": {"metaerr[probs]": {"params": 1, "flops": 1}}, "selected": "metaerr[probs]"}
    added = fp.add_candidates(args, run.config, kept, [], False, ["rel-u", "maxlogit-pnorm"])
    direct = evaluate_run(run, ["rel-u", "maxlogit-pnorm"], n_boot=50, seed=0, progress=False)
    assert added["rows"]["rel-u"]["auroc"] == pytest.approx(direct.rows["rel-u"]["auroc"])
    assert added["rows"]["maxlogit-pnorm"]["aurc"] == pytest.approx(direct.rows["maxlogit-pnorm"]["aurc"])
    assert added["rows"]["msp"] == kept["rows"]["msp"] and added["selected"] == "metaerr[probs]"
    with pytest.raises(SystemExit, match="not the kept seed's"):
        fp.add_candidates(args, run.config, {**kept, "test_accuracy": kept["test_accuracy"] - 0.01}, [], False, ["rel-u"])
