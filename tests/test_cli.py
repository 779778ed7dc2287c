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


def test_train_resume_goes_on_after_an_interruption_and_says_where_the_state_is(tmp_path, capsys, monkeypatch):
    from metaerr_edge import pipeline

    out = tmp_path / "r"
    argv = ["train", "--epochs", "2", "--meta-epochs", "2", "--meta-modes", "probs", "--error-labels", "heldout", "--quiet",
            "--resume", "-o", str(out)]
    real = pipeline.fit_meta_mode

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "fit_meta_mode", interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"training state is kept in {tmp_path / '.r.resume'}" in err and "interrupted" in err
    monkeypatch.setattr(pipeline, "fit_meta_mode", real)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["run"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # the state went with the written run
    assert main([*argv, "--nproc", "2"]) == 2
    assert "--resume keeps one process's training state" in capsys.readouterr().err
