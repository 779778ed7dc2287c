"""Regressions of what a new user hit at the door: export and verify tell the truth, bad input gets a
clear error, degenerate results are flagged, output a person (and a log file) can read.

Every test here failed (or could not be written) before the fix it guards.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn

from metaerr_edge.cli import COMMANDS, build_parser, main
from metaerr_edge.errors import ContractError
from metaerr_edge.contract.spec import THRESHOLD_INITIALIZER, Contract, InputSpec, ThresholdSpec
from metaerr_edge.fuse.export import default_opset, export_onnx
from metaerr_edge.models.fused import FusedModel
from metaerr_edge.models.preprocess import Preprocess
from metaerr_edge.fuse.modelfile import set_threshold
from metaerr_edge.contract import read_contract
from metaerr_edge.contract.spec import random_inputs
from metaerr_edge.fuse.verify import verify_parity

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fast legacy exporter, on purpose
REPO = Path(__file__).resolve().parents[1]


def _calib_coverage(model: Path, run) -> float:
    """Fraction of the run's calibration split the exported graph accepts (ONNX Runtime)."""
    images, _ = run.split("calib")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    defer = sess.run(["defer"], {"image": images.astype(np.float32) / 255.0})[0]
    return float(1.0 - defer.mean())


# --------------------------------------------------------------------------- export tells the truth
@pytest.fixture(scope="module")
def evaluated_run(digits_run, tmp_path_factory):
    """A copy of the shared digits run (probs, image+probs) with metrics.json from `evaluate`."""
    from metaerr_edge.pipeline import load_run

    path = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(digits_run.path, path)
    assert main(["evaluate", str(path), "--scores", "metaerr[probs],metaerr[image+probs],msp", "--n-boot", "20",
                 "--quiet"]) == 0
    return load_run(path)


@pytest.mark.parametrize("mode", ["probs", "image+probs"])
def test_export_meta_mode_carries_that_modes_threshold_and_metrics(evaluated_run, tmp_path, mode):
    out = tmp_path / "model.onnx"
    assert main(["export", str(evaluated_run.path), "--meta-mode", mode, "--legacy-exporter", "-o", str(out)]) == 0
    contract = read_contract(out)
    assert contract.meta["mode"] == mode
    assert contract.threshold == evaluated_run.default_threshold(mode)
    # The coverage the contract claims is the coverage the file gives on the calibration split.
    n = contract.threshold.calibration_n
    # (one sample may sit exactly at the threshold and flip between runtimes: a boundary case)
    assert abs(_calib_coverage(out, evaluated_run) - contract.threshold.achieved_coverage) <= 1.5 / n
    rows = json.loads((evaluated_run.path / "metrics.json").read_text())["metrics"]
    assert contract.metrics[f"metaerr[{mode}].auroc"] == rows[f"metaerr[{mode}]"]["auroc"]
    other = "probs" if mode != "probs" else "image+probs"
    assert not any(k.startswith(f"metaerr[{other}]") for k in contract.metrics)


def test_verify_reads_the_mode_from_the_contract(evaluated_run, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(evaluated_run.path), "--meta-mode", "image+probs", "--legacy-exporter", "-o", str(out)]) == 0
    assert main(["verify", str(out), "--run", str(evaluated_run.path), "-n", "64", "--batch-sizes", "1,64"]) == 0
    assert "Parity PASSED" in capsys.readouterr().out


def test_export_refuses_a_mode_the_run_did_not_train(evaluated_run, tmp_path, capsys):
    assert main(["export", str(evaluated_run.path), "--meta-mode", "mentor", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "trained meta modes ['probs', 'image+probs'], not 'mentor'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_export_opset_is_what_the_file_holds_or_is_refused(evaluated_run, tmp_path, capsys, legacy):
    out = tmp_path / "m13.onnx"
    rc = main(["export", str(evaluated_run.path), "--opset", "13", "-o", str(out)] + (["--legacy-exporter"] if legacy else []))
    captured = capsys.readouterr()
    if rc == 0:
        report = json.loads(captured.out)
        assert report["opset"] == 13 == default_opset(onnx.load(str(out)))
        assert read_contract(out).versions["opset"] == "13"
    else:
        assert not legacy, captured.err  # the TorchScript exporter writes 13 itself
        assert rc == 2 and "--legacy-exporter" in captured.err and not out.exists()


def test_export_opset_below_13_is_refused_while_parsing(evaluated_run, tmp_path, capsys):
    assert main(["export", str(evaluated_run.path), "--opset", "7", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "opset 7 is too old" in capsys.readouterr().err


class _GeluBase(nn.Module):
    """A base whose graph holds constants equal to common thresholds: GELU's 0.5, and an explicit 0.37."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.conv(x)) * 0.37
        return self.fc(h.mean(dim=(2, 3)))


class _Meta(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(probs) * 0.5)


@pytest.mark.parametrize("threshold", [0.5, 0.37, 1.0])
@pytest.mark.parametrize("dynamo", [False, True])
def test_threshold_stays_private_when_the_model_holds_an_equal_constant(tmp_path, threshold, dynamo):
    torch.manual_seed(0)
    fused = FusedModel(_GeluBase(), _Meta(), Preprocess([0.5], [0.5]), threshold=threshold).eval()
    contract = Contract(input=InputSpec(channels=1, height=8, width=8), classes=("a", "b", "c"),
                        threshold=ThresholdSpec(threshold))
    path = tmp_path / "gelu.onnx"
    export_onnx(fused, contract, path, dynamo=dynamo)
    graph = onnx.load(str(path)).graph
    consumers = [n for n in graph.node if THRESHOLD_INITIALIZER in n.input]
    assert [n.op_type for n in consumers] == ["Greater"] and consumers[0].output[0] == "defer"
    assert [t.name for t in graph.initializer].count(THRESHOLD_INITIALIZER) == 1
    images = random_inputs(contract.input, 32, seed=1)
    assert verify_parity(path, fused, images, batch_sizes=(32,)).passed
    # Moving the threshold moves the decision only: probabilities and scores stay bit-identical.
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    set_threshold(path, ThresholdSpec(0.0))
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": images})
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[2], after[2])
    assert after[3].all()


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Contract(input=InputSpec(), classes=("a", "b"), threshold=None), "threshold must be a ThresholdSpec"),
    (lambda: Contract(input=InputSpec(), classes="abc"), "classes must be a list of class names"),
    (lambda: Contract(input=InputSpec(), classes=("a",)), "expected at least 2"),
    (lambda: Contract(input=InputSpec(), classes=("a", "a")), "must be unique"),
    (lambda: Contract(input=None, classes=("a", "b")), "input must be an InputSpec"),
    (lambda: ThresholdSpec("0.5"), "threshold.value is '0.5'"),
    (lambda: ThresholdSpec(float("nan")), "threshold.value is nan"),
    (lambda: ThresholdSpec(0.5, calibration_n=-1), "calibration_n"),
    (lambda: InputSpec(height="8"), "input.height is '8'"),
    (lambda: InputSpec(channels=2), "input.channels is 2"),
    (lambda: InputSpec(mean=(0.5, 0.5)), "mean/std have 2/1 entries"),
    (lambda: InputSpec(std=(0.0,)), "every entry > 0"),
    (lambda: InputSpec(value_range=(1.0, 0.0)), "low < high"),
])
def test_public_constructors_validate_their_arguments(build, message):
    with pytest.raises(ContractError, match=message):
        build()


# --------------------------------------------------------------------------- bad input: clear errors
@pytest.fixture(scope="module")
def digits_model(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_model") / "model.onnx"
    assert main(["export", str(digits_run.path), "--legacy-exporter", "-o", str(out)]) == 0
    return out


def test_predict_refuses_images_of_another_size_unless_asked(digits_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(tmp_path / f"{i}.png")
    assert main(["predict", str(digits_model), str(tmp_path), "--backend", "onnxruntime"]) == 2
    captured = capsys.readouterr()
    assert "3 of 3 images are not 8x8" in captured.err and "is 28x28" in captured.err and "--resize" in captured.err
    assert captured.out == ""
    assert main(["predict", str(digits_model), str(tmp_path), "--backend", "onnxruntime", "--resize"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("argv", [["train", "--device", "cuda"], ["ssl", "--device", "cuda:0"]])
def test_cuda_without_a_gpu_is_one_clean_line(tmp_path, argv):
    proc = subprocess.run([sys.executable, "-m", "metaerr_edge", *argv, "-o", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no CUDA GPU is visible" in proc.stderr and "--device cpu" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--meta-epochs", "0"], "argument --meta-epochs: expected an integer from 1 to 100000, got '0'"),
    (["train", "--meta-epochs", "-1"], "argument --meta-epochs"),
    (["train", "--seed", "-1"], "argument --seed: expected an integer from 0 to 2147483647"),
    (["train", "--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["train", "--lr", "inf"], "argument --lr"),
    (["train", "--meta-modes", "probs,probs"], "names ['probs'] more than once"),
    (["train", "--device", "bogus"], "argument --device: expected cpu, cuda, cuda:N or auto"),
    (["train", "--folds", "1"], "argument --folds: expected an integer from 2 to 100"),
    (["train", "--arch", "vgg99"], "unknown base architecture 'vgg99'"),
    (["verify", "m.onnx", "--run", "r", "-n", "0"], "argument -n: expected an integer from 1 to 1000000"),
    (["verify", "m.onnx", "--run", "r", "--batch-sizes", "x"], "argument --batch-sizes"),
    (["predict", "m.onnx", "x.png", "--batch-size", "0"], "argument --batch-size: expected an integer from 1 to 65536"),
    (["predict", "m.onnx", "x.png", "--batch-size", "-1"], "argument --batch-size"),
    (["ssl", "--labelled", "0"], "argument --labelled"),
    (["ssl", "--selector", "oracle"], "unknown selector 'oracle'"),
    (["calibrate", "m.onnx", "--run", "r", "--coverage", "1.5"], "argument --coverage"),
    (["bench", "m.onnx", "--batch", "1"], "metaerr-edge bench: error: unrecognized arguments: --batch 1"),
    (["bogus"], "invalid choice: 'bogus'"),
])
def test_options_are_refused_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert err.count("\n") == 1, err  # one line: what is wrong (and where the help is)
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written


@pytest.mark.parametrize("command", ["train", "bench"])
def test_an_existing_file_as_output_folder_is_refused_first(command, digits_model, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    argv = ["train", "--epochs", "1"] if command == "train" else ["bench", str(digits_model), "--quiet"]
    assert main([*argv, "-o", str(target)]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_json_outputs_are_strict_json_with_the_reason_for_each_null(digits_run, tmp_path):
    from metaerr_edge._fileio import NULL_FIELD, dumps_json

    text = dumps_json({"a": float("nan"), "rows": [{"t": float("-inf")}]}, reasons={"t": "defer-all row"})
    doc = json.loads(text)
    assert doc["a"] is None and doc["rows"][0]["t"] is None
    assert doc[NULL_FIELD] == {"a": "NaN: the value is undefined or unbounded on this data",
                               "rows[0].t": "-Infinity: defer-all row"}
    out = tmp_path / "tradeoff"
    assert main(["tradeoff", str(digits_run.path), "--device-latency-ms", "1", "--fallback-latency-ms", "40",
                 "--fallback-accuracy", "0.99", "-o", str(out)]) == 0
    raw = (out / "tradeoff.json").read_text()
    result = json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in tradeoff.json"))  # NaN/Infinity: not JSON
    assert result["rows"][-1]["threshold"] is None and "defer-everything" in result[NULL_FIELD][
        f"rows[{len(result['rows']) - 1}].threshold"]
    # The Markdown keeps every row and says what it was computed from.
    md = (out / "tradeoff.md").read_text()
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and "threshold" not in line]
    assert len(table_rows) == len(result["rows"]) > 20
    assert "rows shown" not in md and "calibration split: n=" in md and "fallback accuracy: 0.99" in md
    assert result["inputs"]["calibration_n"] == len(digits_run.split("calib")[1])
    assert result["inputs"]["fallback"]["accuracy"] == 0.99 and result["inputs"]["meta_mode"] == "probs"


# --------------------------------------------------------------------------- degenerate results are flagged
def test_a_calibration_that_defers_everything_warns(digits_model, digits_run, tmp_path, caplog):
    out = tmp_path / "strict.onnx"
    with caplog.at_level(logging.WARNING, logger="metaerr_edge.calibrate"):
        assert main(["calibrate", str(digits_model), "--run", str(digits_run.path), "--risk", "0.0001",
                     "--delta", "0.01", "-o", str(out)]) == 0
    assert "no threshold meets the target" in caplog.text and "defers 100.0%" in caplog.text


def test_a_meta_model_whose_best_epoch_is_its_last_warns(caplog):
    from metaerr_edge.meta import HeadConfig, MetaData, MetaFitConfig, MetaModel, fit_meta

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 400).astype(np.float32)
    wrong = probs.max(1) < 0.6  # perfectly learnable: AUROC keeps rising
    labels = np.where(wrong, (probs.argmax(1) + 1) % 3, probs.argmax(1))
    torch.manual_seed(0)
    meta = MetaModel(HeadConfig("probs"), 1, 3, (8, 8))
    data = MetaData(np.zeros((400, 1, 8, 8), np.uint8), probs, labels)
    assert np.array_equal(data.is_error, wrong)
    with caplog.at_level(logging.WARNING, logger="metaerr_edge.meta"):
        result = fit_meta(meta, data, Preprocess([0.5], [0.5]), MetaFitConfig(epochs=2, lr=1e-5), progress=False,
                          desc="meta [probs]")
    if result.best_epoch == 1:
        assert "came in the last of 2 epochs" in caplog.text and "--meta-epochs" in caplog.text
    else:
        assert "last of" not in caplog.text


def test_an_ssl_round_that_keeps_the_whole_pool_warns(caplog):
    from metaerr_edge.semisup.pseudo_label import RoundRecord, _warn_if_degenerate

    records = [RoundRecord(0, 0, float("nan"), 0.80, 100, 1.0), RoundRecord(1, 500, 0.7, 0.75, 600, 1.0)]
    with caplog.at_level(logging.WARNING, logger="metaerr_edge.semisup"):
        _warn_if_degenerate(records, 500, "confidence")
    assert "kept all 500 pool images (100%)" in caplog.text and "fell from 0.8000 to 0.7500" in caplog.text
    caplog.clear()
    _warn_if_degenerate([records[0], RoundRecord(1, 499, 0.9, 0.85, 599, 1.0)], 500, "confidence")
    assert caplog.text == ""


def test_a_torch_benchmark_far_slower_than_onnxruntime_warns(caplog):
    from metaerr_edge.bench import BenchResult, LatencyStats
    from metaerr_edge.commands.bench import warn_if_oversubscribed

    def result(name: str, backend: str, ms: float) -> BenchResult:
        stats = LatencyStats.from_samples(np.full(10, ms), 1, "host", 10 * ms / 1000)
        return BenchResult(name, backend, "m.onnx", 1, stats, None, {"device": "cpu"})

    env = {"cpu_affinity": 2, "bench_threads": {"torch": 16, "onnxruntime_intra_op": 2}}
    with caplog.at_level(logging.WARNING, logger="metaerr_edge.bench"):
        slow = warn_if_oversubscribed([result("fused/onnxruntime", "onnxruntime", 0.05),
                                       result("fused/torch", "torch", 50.0)], env)
    assert len(slow) == 1 and "1000x slower" in slow[0] and "--threads 1" in caplog.text
    assert warn_if_oversubscribed([result("fused/onnxruntime", "onnxruntime", 0.05),
                                   result("fused/torch", "torch", 0.4)], env) == []


# --------------------------------------------------------------------------- output a person can read
def test_progress_bars_only_on_a_terminal(monkeypatch):
    from metaerr_edge.console import progress_bar, show_progress

    monkeypatch.delenv("METAERR_EDGE_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", open(Path(__file__), encoding="utf-8"))  # a file, not a terminal
    assert not show_progress(True)
    assert type(progress_bar(range(3))).__name__ == "_NoBar" and list(progress_bar(range(3))) == [0, 1, 2]
    monkeypatch.setenv("METAERR_EDGE_PROGRESS", "1")
    assert show_progress(True) and not show_progress(False)


def test_train_into_a_log_file_writes_no_carriage_returns(tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "metaerr_edge", "train", "--epochs", "1", "--meta-epochs", "2",
                               "--folds", "2", "--max-pool", "300", "-o", str(tmp_path / "run")],
                              cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert "\r" not in log.read_text()


def _options(parser: argparse.ArgumentParser) -> dict[str, dict[str, tuple]]:
    """{option string: {command: (type, choices, nargs)}} over every subcommand."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    table: dict[str, dict[str, tuple]] = {}
    for name, p in sub.choices.items():
        for action in p._actions:
            for flag in action.option_strings:
                kind = (getattr(action.type, "__name__", action.type), tuple(action.choices or ()), action.nargs,
                        next(c.__name__ for c in type(action).__mro__ if c.__module__ == "argparse"))
                table.setdefault(flag, {})[name] = kind
    return table


def test_a_flag_means_one_thing_across_commands():
    table = _options(build_parser())
    for flag, uses in table.items():
        if flag in ("-o", "--out", "--threshold", "--meta-mode", "--run", "--backend"):
            continue  # a path or a name whose meaning is the command's (documented in each --help)
        assert len(set(uses.values())) == 1, f"{flag} differs between commands: {uses}"
    assert "--labels" not in table and "--pool-size" not in table and "--batch" not in table
    assert set(table["--batch-size"]) == {"demo", "train", "ssl", "predict"}
    assert set(table["--batch-sizes"]) == {"bench", "verify"}
    assert set(table["--max-pool"]) == {"demo", "train", "ssl"}
    assert sorted(COMMANDS) == sorted(next(a for a in build_parser()._actions
                                           if isinstance(a, argparse._SubParsersAction)).choices)


def test_help_lists_every_registered_name():
    from metaerr_edge.commands.semisup import SELECTOR_HELP
    from metaerr_edge.config import ARCH_HELP
    from metaerr_edge.meta import META_MODES, HeadConfig
    from metaerr_edge.models import available_bases
    from metaerr_edge.semisup import available_selectors

    def names(text: str) -> set[str]:
        return {part.split(" (")[0].strip() for part in text.split(",")}

    assert names(ARCH_HELP) == set(available_bases())
    assert names(SELECTOR_HELP) == set(available_selectors())
    for mode in META_MODES:  # the mode list the CLI shows is the one HeadConfig accepts
        assert HeadConfig(mode).mode == mode
    helps = {a.dest: a.help for a in _subparser("train")._actions}
    assert f"comma list of {', '.join(META_MODES)};" in helps["meta_modes"]
    assert ARCH_HELP in helps["arch"] and ARCH_HELP in helps["mentor_arch"]


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_train_options_are_the_config_fields_with_their_defaults():
    """Every command-line field of RunConfig is a train option whose default is the field's, shown in --help."""
    from metaerr_edge.config import RunConfig, _cli_fields, _default, _flag

    actions = {a.option_strings[0]: a for a in _subparser("train")._actions if a.option_strings}
    fields = _cli_fields(RunConfig)
    assert len(fields) >= 15
    for path, f in fields:
        action = actions[_flag(f)]
        assert action.default == _default(f), path
        assert action.help.startswith(f.metadata["help"].split(" (")[0][:30]) or path == "data.dataset", path
        if action.default not in (None, False):
            assert "(default: " in action.help, path
    args = build_parser().parse_args(["train"])
    from metaerr_edge.config import config_from_args

    assert config_from_args(args) == RunConfig()  # no option given: the config's own defaults
    args = build_parser().parse_args(["train", "--epochs", "3", "--meta-epochs", "4", "--meta-modes", "probs,mentor",
                                      "--error-labels", "heldout", "--max-pool", "200", "--seed", "5"])
    cfg = config_from_args(args)
    assert (cfg.base.epochs, cfg.meta.epochs, cfg.meta.modes, cfg.meta.labels, cfg.data.max_pool, cfg.seed) == \
        (3, 4, ("probs", "mentor"), "heldout", 200, 5)
    demo = build_parser().parse_args(["demo"])
    assert config_from_args(demo).meta.modes == META_MODES_ALL


META_MODES_ALL = ("probs", "image", "image+probs", "mentor", "mentor-features")
