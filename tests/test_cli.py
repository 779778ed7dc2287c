"""The CLI: demo end to end on digits, and clear errors on bad input."""

from __future__ import annotations

import json

from metaerr_edge.cli import main


def test_train_then_evaluate_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--epochs", "2", "--meta-epochs", "3", "--folds", "2", "--meta-modes", "probs", "--quiet", "-o", str(out)])
    assert rc == 0
    assert json.loads((out / "config.json").read_text())["config"]["meta"]["folds"] == 2
    rc = main(["evaluate", str(out), "--scores", "metaerr[probs],msp,entropy", "--n-boot", "50", "--quiet"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "| metaerr[probs] |" in table and "| msp |" in table and "| entropy |" in table
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"metaerr[probs]", "msp", "entropy"}
    assert 0.5 < metrics["metrics"]["msp"]["auroc"] <= 1.0
    assert (out / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_gets_a_clear_error_and_exit_code_2(tmp_path, capsys):
    assert main(["train", "--dataset", "imagenet", "-o", str(tmp_path / "x"), "--quiet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["train", "--dataset", "mnist", "--root", str(tmp_path), "-o", str(tmp_path / "y"), "--quiet"]) == 2
    assert "MNIST/raw" in capsys.readouterr().err
    assert main(["train", "--meta-modes", "weights", "-o", str(tmp_path / "z"), "--quiet"]) == 2
    assert "meta modes ['weights']: each must be one of" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
