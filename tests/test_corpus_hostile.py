"""Corpus: what a hostile-but-fair review found after the first round of hardening, one regression
test per case. Output paths that are not regular files (devices, FIFOs, a run's own files, a
trailing slash) are refused, never replaced; readers never block on a FIFO; an option a command
does not use, an empty name or an absurd count is refused while parsing; diverged training, an
image size the architecture cannot take and runtime failures are one line; the API refuses
arguments of the wrong type."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaerr_edge.cli import main
from metaerr_edge.errors import ConfigError, ContractError, DataError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fast legacy exporter, on purpose


@pytest.fixture(scope="module")
def model(digits_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "m.onnx"
    assert main(["export", str(digits_run.path), "--legacy-exporter", "-o", str(out)]) == 0
    return out


@pytest.fixture()
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _fails(argv: list[str], capsys, *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# --------------------------------------------------------------------------- output paths
@pytest.mark.parametrize("command", ["export", "verify", "calibrate"])
def test_a_fifo_as_output_is_refused_and_stays_a_fifo(command, digits_run, model, fifo, capsys):
    argv = {"export": ["export", str(digits_run.path), "--legacy-exporter", "-o", str(fifo)],
            "verify": ["verify", str(model), "--run", str(digits_run.path), "-n", "8", "--json-out", str(fifo)],
            "calibrate": ["calibrate", str(model), "--run", str(digits_run.path), "--coverage", "0.9",
                          "-o", str(fifo)]}[command]
    _fails(argv, capsys, "is not a regular file")
    assert fifo.is_fifo()


@pytest.mark.parametrize("victim", ["base.pt", "config.json", "manifest.json"])
def test_an_output_onto_a_run_file_is_refused(victim, digits_run, tmp_path, capsys):
    from metaerr_edge.pipeline import load_run

    run = tmp_path / "run"
    shutil.copytree(digits_run.path, run)
    before = (run / victim).read_bytes()
    err = _fails(["export", str(run), "--legacy-exporter", "-o", str(run / victim)], capsys)
    assert "run folder" in err or "manifest" in err
    assert (run / victim).read_bytes() == before and load_run(run).base is not None


def test_calibrating_through_a_symlink_writes_its_target(digits_run, model, tmp_path, capsys):
    from metaerr_edge.contract import read_contract

    target = tmp_path / "m.onnx"
    shutil.copy(model, target)
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    assert main(["calibrate", str(link), "--run", str(digits_run.path), "--coverage", "0.8"]) == 0
    assert link.is_symlink() and read_contract(target).threshold.target_coverage == 0.8


def test_a_trailing_slash_names_a_folder(digits_run, tmp_path, capsys):
    _fails(["export", str(digits_run.path), "--legacy-exporter", "-o", f"{tmp_path}/newdir/"], capsys, "ends with a slash")
    assert not (tmp_path / "newdir").exists()


def test_triton_into_a_folder_that_is_not_a_repository_is_refused(digits_run, tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    _fails(["export", str(digits_run.path), "--legacy-exporter", "--format", "triton", "-o", str(folder)], capsys,
           "is not a Triton model repository", "keep.txt")
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_locks_are_removed_when_their_holder_is_done(digits_run, model, tmp_path, capsys):
    out = tmp_path / "c.onnx"
    assert main(["calibrate", str(model), "--run", str(digits_run.path), "--coverage", "0.9", "-o", str(out)]) == 0
    main(["train", "--dataset", "mnist", "--root", str(tmp_path / "none"), "-o", str(tmp_path / "x")])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")]


@pytest.mark.parametrize("where", ["/proc/metaerr-edge-test/out.onnx", "LONG"])
def test_unwritable_output_paths_are_one_line(digits_run, tmp_path, capsys, where):
    target = str(tmp_path / ("a" * 300 + ".onnx")) if where == "LONG" else where
    if where.startswith("/proc") and not Path("/proc").is_dir():
        pytest.skip("needs Linux's /proc")
    _fails(["export", str(digits_run.path), "--legacy-exporter", "-o", target], capsys, "cannot use")


# --------------------------------------------------------------------------- readers never block
@pytest.mark.parametrize("argv", [
    ["inspect", "FIFO"],
    ["verify", "FIFO", "--run", "RUN"],
    ["calibrate", "FIFO", "--run", "RUN", "--coverage", "0.9"],
    ["bench", "FIFO", "--quiet"],
    ["tradeoff", "RUN", "--bench", "FIFO", "--fallback-latency-ms", "40", "--fallback-accuracy", "0.99", "-o", "OUT"],
])
def test_a_fifo_as_input_is_refused_not_read(argv, digits_run, fifo, tmp_path, capsys):
    args = [str({"FIFO": fifo, "RUN": digits_run.path, "OUT": tmp_path / "t"}.get(a, a)) for a in argv]
    _fails(args, capsys, "not a regular file")


# --------------------------------------------------------------------------- run folders
def test_a_run_folder_without_its_manifest_warns(digits_run, tmp_path, caplog):
    from metaerr_edge.pipeline import load_run

    run = tmp_path / "run"
    shutil.copytree(digits_run.path, run)
    (run / "manifest.json").unlink()
    with caplog.at_level("WARNING", logger="metaerr_edge.pipeline"):
        load_run(run)
    assert "has no manifest.json" in caplog.text


def test_an_identical_retraining_is_the_same_run(tmp_path):
    from metaerr_edge.config import BaseConfig, DataConfig, MetaConfig, RunConfig
    from metaerr_edge.pipeline import train_run

    config = RunConfig(DataConfig(max_pool=300), BaseConfig(epochs=1), MetaConfig(epochs=2, folds=2))
    a, b = train_run(config, tmp_path / "a", progress=False), train_run(config, tmp_path / "b", progress=False)
    assert a.identity() == b.identity()  # the weights' tensors, not torch.save's zip bytes


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(("argv", "fragment"), [
    (["ssl", "--selector", "metaerr", "--threshold", "0.9"], "does not use --threshold; it takes --max-score"),
    (["ssl", "--selector", "confidence", "--budget", "5"], "does not use --budget"),
    (["ssl", "--selector", "confidence", "--max-score", "0.3"], "does not use --max-score"),
    (["evaluate", "RUN", "--scores", ""], "argument --scores"),
    (["export", "RUN", "--meta-mode", ""], "argument --meta-mode: expected a name, got an empty string"),
    (["tradeoff", "RUN", "--bench-name", "", "--device-latency-ms", "1", "--fallback-latency-ms", "4",
      "--fallback-accuracy", "0.9"], "argument --bench-name"),
    (["tradeoff", "RUN", "--bench-name", "x", "--device-latency-ms", "1", "--fallback-latency-ms", "4",
      "--fallback-accuracy", "0.9"], "--bench-name picks a result of --bench"),
    (["calibrate", "MODEL", "--run", "RUN", "--coverage", "0.9", "--delta", "0.1"], "--delta belongs to --risk"),
    (["bench", "MODEL", "--device", "cuda"], "--device cuda applies to the torch backend only"),
    (["evaluate", "RUN", "--n-boot", "1000000000"], "argument --n-boot: expected an integer from 1 to 100000"),
    (["bench", "MODEL", "--interleave", "1000000"], "argument --interleave"),
    (["bench", "MODEL", "--batch-sizes", "10000000"], "integers from 1 to 65536"),
    (["bench", "MODEL", "--duration-s", "1e9"], "argument --duration-s"),
    (["ssl", "--rounds", "1000000"], "argument --rounds: expected an integer from 0 to 1000"),
    (["ssl", "--min-steps", "100000000"], "argument --min-steps"),
    (["ssl", "--width", "100000"], "argument --width"),
    (["train", "--seed", "99999999999999999999"], "argument --seed: expected an integer from 0 to 2147483647"),
    (["train", "--epochs", "100000000"], "argument --epochs"),
])
def test_options_a_command_does_not_use_or_cannot_mean_are_refused(argv, fragment, digits_run, model, tmp_path,
                                                                  capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [str({"RUN": digits_run.path, "MODEL": model}.get(a, a)) for a in argv]
    _fails(args, capsys, fragment)
    assert list(tmp_path.iterdir()) == []


def test_tradeoff_refuses_a_bench_without_samples(digits_run, model, tmp_path, capsys):
    bench = tmp_path / "bench"
    assert main(["bench", str(model), "--batch-sizes", "1", "--duration-s", "0.01", "--warmup-s", "0",
                 "--interleave", "1", "--quiet", "-o", str(bench)]) == 0
    doc = json.loads((bench / "bench.json").read_text())
    for result in doc["results"]:
        result["host"]["samples_ms"] = []
    (tmp_path / "nosamples.json").write_text(json.dumps(doc))
    _fails(["tradeoff", str(digits_run.path), "--bench", str(tmp_path / "nosamples.json"), "--fallback-latency-ms", "40",
            "--fallback-accuracy", "0.99", "-o", str(tmp_path / "t")], capsys, "keeps no per-call samples")


# --------------------------------------------------------------------------- training and runtime faults
def test_diverged_training_is_one_line(tmp_path, capsys):
    _fails(["train", "--lr", "1e9", "--epochs", "1", "--meta-epochs", "2", "--folds", "2",
            "--quiet", "-o", str(tmp_path / "run")], capsys, "diverged", "Lower the learning rate")
    assert not (tmp_path / "run").exists()


def test_an_image_size_the_architecture_cannot_take_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", x_train=rng.integers(0, 256, (40, 1, 1), dtype=np.uint8),
             y_train=np.arange(40) % 2)
    _fails(["train", "--dataset", f"npz:{tmp_path / 'tiny.npz'}", "--epochs", "1",
            "--meta-epochs", "2", "--folds", "2", "--quiet", "-o", str(tmp_path / "run")], capsys,
           "cannot take 1x1x1 images")


def test_an_opset_the_converter_cannot_reach_is_one_line(digits_run, tmp_path, capsys):
    out = tmp_path / "m17.onnx"
    rc = main(["export", str(digits_run.path), "--opset", "17", "-o", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (rc == 0 and out.is_file()) or (rc == 2 and "--legacy-exporter" in err and not out.exists()), err


def test_a_runtime_failure_is_one_typed_error(model, monkeypatch):
    from metaerr_edge.errors import BackendUnavailable
    from metaerr_edge.runtime import open_session

    session = open_session(model, backend="onnxruntime")

    class Broken:
        def run(self, *args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")

    monkeypatch.setattr(session._backend, "_sess", Broken())
    with pytest.raises(BackendUnavailable, match="could not run a batch of 2: .*allocate memory.*smaller batch"):
        session.predict(np.zeros((2, 1, 8, 8), np.float32))


def test_predict_reports_a_bad_image_alone(model, tmp_path, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8), "L").save(tmp_path / "big.png")
    err = _fails(["predict", str(model), str(tmp_path / "big.png")], capsys, "is 28x28")
    assert "fallback" not in err


# --------------------------------------------------------------------------- the Python API
@pytest.mark.parametrize(("call", "error", "fragment"), [
    (lambda r: __import__("metaerr_edge.pipeline").pipeline.load_run(None), ConfigError, "opened from its folder path"),
    (lambda r: __import__("metaerr_edge.pipeline").pipeline.load_run(5), ConfigError, "opened from its folder path"),
    (lambda r: __import__("metaerr_edge.data").data.load_dataset(None), ConfigError, "dataset must be a name"),
    (lambda r: __import__("metaerr_edge.data").data.load_dataset(3), ConfigError, "dataset must be a name"),
    (lambda r: _export_run(r, None), ConfigError, "out_path must be a path"),
    (lambda r: _export_run(r, 5), ConfigError, "out_path must be a path"),
    (lambda r: _threshold_for_coverage("abc", coverage=0.9), DataError, "failure_score must be numbers"),
    (lambda r: _threshold_for_coverage(np.linspace(0, 1, 10), 0.9), DataError, "a target goes by name"),
    (lambda r: _sweep(latency=np.array([1.0, math.nan])), DataError, "1 of its 2 value(s) are NaN"),
    (lambda r: _recommend(min_accuracy=math.nan), ConfigError, "min_accuracy must be a number in [0, 1]"),
])
def test_api_arguments_of_the_wrong_kind_are_typed_errors(call, error, fragment, digits_run):
    with pytest.raises(error) as caught:
        call(digits_run)
    assert fragment in str(caught.value)


def test_export_run_takes_a_run_folder_path(digits_run, tmp_path):
    from metaerr_edge.fuse.export import export_run

    report = export_run(str(digits_run.path), tmp_path / "m.onnx", dynamo=False)
    assert report.path.is_file() and report.contract.meta["mode"] == "probs"


def _export_run(run, out):
    from metaerr_edge.fuse.export import export_run

    return export_run(run, out, dynamo=False)


def _threshold_for_coverage(*args, **kwargs):
    from metaerr_edge.decide import threshold_for_coverage

    return threshold_for_coverage(*args, **kwargs)


def _sweep(latency):
    from metaerr_edge.decide import sweep_tradeoff

    rng = np.random.default_rng(0)
    return sweep_tradeoff(rng.random(50), rng.integers(0, 2, 50), latency, 40.0, fallback_accuracy=0.99)


def _recommend(min_accuracy):
    from metaerr_edge.decide import recommend

    return recommend(_sweep(np.array([1.0, 2.0])), min_accuracy=min_accuracy)


def test_contract_errors_for_missing_models_still_name_the_path(tmp_path):
    from metaerr_edge.contract import read_contract

    with pytest.raises(ContractError, match="no such file"):
        read_contract(tmp_path / "none.onnx")
