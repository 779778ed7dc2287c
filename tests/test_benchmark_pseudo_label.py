"""The pseudo-labelling benchmark's tables: precision at equal count on the confidence run's models
(the shadow selectors), pooled per seed against confidence's on the same rounds, and the targets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pl = pytest.importorskip("pseudo_label")


def _round(r: int, kept: int, precision: float, shadows: dict, acc: float = 0.9) -> dict:
    return {"round": r, "kept": kept, "precision": precision, "test_acc": acc, "info": {}, "imbalance": 1.0,
            "shadows": {n: {"kept": k, "precision": p, "imbalance": 1.2, "class_counts": []} for n, (k, p) in shadows.items()}}


def _conf(seed: int, cells: list[tuple[int, float, dict]], final: float) -> dict:
    rounds = [_round(0, 0, float("nan"), {}, 0.8)] + [_round(i + 1, *c) for i, c in enumerate(cells)]
    rounds[-1]["test_acc"] = final
    return {"selector": "confidence", "seed": seed, "rounds": rounds, "final_test_acc": final, "seconds": 1.0}


CHEAP = "metaerr-cheap-topk"
RUNS = [  # seed 0: cheap wins both rounds; seed 1: loses round 2 by more than it wins round 1
    _conf(0, [(100, 0.90, {CHEAP: (100, 0.92), "mc-dropout": (50, 0.99)}), (300, 0.80, {CHEAP: (300, 0.81), "mc-dropout": (60, 0.95)})], 0.91),
    _conf(1, [(100, 0.95, {CHEAP: (100, 0.96), "mc-dropout": (40, 1.0)}), (100, 0.90, {CHEAP: (100, 0.85), "mc-dropout": (45, 0.9)})], 0.93),
]


def test_shadow_gaps_are_pooled_per_seed_then_averaged_over_seeds():
    s = pl.shadow_summary(RUNS)
    assert list(s) == ["mc-dropout", CHEAP]  # in the benchmark's selector order
    cheap = s[CHEAP]
    # seed 0: (92 + 243) / 400 - (90 + 240) / 400 = 0.0125; seed 1: (96 + 85) / 200 - (95 + 90) / 200 = -0.02
    assert cheap["gap"][0] == pytest.approx((0.0125 - 0.02) / 2)
    assert cheap["seeds_at_or_above"] == 1 and cheap["seeds"] == 2 and cheap["equal_count"]
    assert cheap["precision"][0] == pytest.approx(((92 + 243) / 400 + (96 + 85) / 200) / 2)  # per seed, then the mean
    assert cheap["confidence_precision"][0] == pytest.approx(((90 + 240) / 400 + (95 + 90) / 200) / 2)
    assert not s["mc-dropout"]["equal_count"] and s["mc-dropout"]["kept"][0] == pytest.approx(48.75)


def test_targets_say_held_or_not_with_the_numbers():
    res = {"setting": "mnist-100", "runs": RUNS + [{**RUNS[0], "selector": CHEAP, "final_test_acc": 0.95},
                                                   {**RUNS[1], "selector": CHEAP, "final_test_acc": 0.91}]}
    lines = pl.targets([res])
    precision = next(line for line in lines if line.startswith(f"| cheap (`{CHEAP}`): precision"))
    assert "not held: 87.13% vs 87.50% (-0.37 ± 2.30 pts, 1/2 seeds)" in precision  # means over seeds: consistent
    accuracy = next(line for line in lines if line.startswith(f"| cheap (`{CHEAP}`): final"))
    assert "**at or above**: 93.0 ± 2.8 vs 92.0 ± 1.4 (2 seeds)" in accuracy
    assert next(line for line in lines if line.startswith("| robust")).endswith("| not run |")


def test_a_confidence_run_compared_only_some_rounds_counts_the_shadows_of_every_round():
    run = _conf(0, [(10, 0.9, {CHEAP: (10, 0.9)}), (10, 0.9, {})], 0.9)
    assert pl.shadow_names(run) == set()
    assert pl.shadow_names(RUNS[0]) == {CHEAP, "mc-dropout"}


def test_the_realistic_protocol_runs_end_to_end_resumes_and_leaves_no_checkpoint(shared_datasets, tmp_path, monkeypatch):
    """A toy-sized realistic run on MNIST: the trajectories and the shadow at confidence's count land in
    the results JSON, the per-round checkpoints are gone once a run is saved, and --resume trains nothing
    that is saved."""
    from metaerr_edge._fileio import loads_json

    out = tmp_path / "results"
    argv = ["--protocol", "realistic", "--root", str(shared_datasets), "--settings", "mnist-100", "--seeds", "0", "--rounds", "1",
            "--max-pool", "300", "--max-test", "200", "--epochs", "1", "--min-steps", "10", "--width", "8", "--meta-epochs", "2",
            "--folds", "2", "--mc-passes", "2", "--selectors", "confidence", "topk", "--shadows", "metaerr-cheap-topk",
            "--out", str(out), "--readme", str(tmp_path / "README.md")]
    assert pl.main(argv) == 0
    doc = loads_json((out / "pseudo_label_realistic_mnist-100.json").read_text())
    assert doc["complete"] and sorted(r["selector"] for r in doc["runs"]) == ["confidence", "topk"]
    conf = next(r for r in doc["runs"] if r["selector"] == "confidence")
    topk = next(r for r in doc["runs"] if r["selector"] == "topk")
    assert conf["rounds"][1]["shadows"]["metaerr-cheap-topk"]["kept"] == conf["rounds"][1]["kept"] == topk["rounds"][1]["kept"]
    assert list((tmp_path / "runs" / "pseudo_label").glob("*.pt")) == []
    monkeypatch.setattr("metaerr_edge.semisup.run_pseudo_labelling", lambda *a, **k: pytest.fail("--resume retrained a saved run"))
    assert pl.main([*argv, "--resume"]) == 0
    assert loads_json((out / "pseudo_label_realistic_mnist-100.json").read_text())["runs"] == doc["runs"]
    assert "## Pseudo-labelling" in (tmp_path / "README.md").read_text()
