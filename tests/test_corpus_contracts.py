"""Corpus: tampered contracts and models, against every way of opening a model.

Each case edits a real exported digits model (its contract JSON, or its graph) and every consumer
must refuse it the same way: a ``ContractError`` (API) or exit code 2 with one line on stderr
(CLI) naming the field, never a traceback, a silent run or a wrong answer. ``inspect`` reports
instead of failing: exit code 1 with the problem on stdout. A model must also know what it was
calibrated on: the run it was exported from (splits and weights) is checked by calibrate, verify
and bench, and a contract copied onto other weights is refused when the file is opened.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from metaerr_edge.cli import main
from metaerr_edge.errors import ContractError
from metaerr_edge.contract.spec import CONTRACT_KEY, THRESHOLD_INITIALIZER
from metaerr_edge.contract import read_contract
from metaerr_edge.runtime import open_session

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fast legacy exporter, on purpose

Edit = Callable[[dict], None]


def _set(path: str, value) -> Edit:
    """An edit setting ``raw[a][b]`` for ``path="a.b"``."""
    keys = path.split(".")

    def edit(raw: dict) -> None:
        node = raw
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


def _many(*edits: Edit) -> Edit:
    def edit(raw: dict) -> None:
        for e in edits:
            e(raw)

    return edit


def _graph_threshold(value: float) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        (t,) = [t for t in model.graph.initializer if t.name == THRESHOLD_INITIALIZER]
        t.CopyFrom(numpy_helper.from_array(np.array(value, np.float32), THRESHOLD_INITIALIZER))

    return edit


def _drop_contract(model: onnx.ModelProto) -> None:
    kept = [p for p in model.metadata_props if p.key != CONTRACT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)


#: name -> (edit of the contract JSON or None, edit of the ONNX model or None, message fragment)
CASES: dict[str, tuple[Edit | None, Callable | None, str]] = {
    "threshold-value-string": (_set("threshold.value", "0.5"), None, "threshold.value is '0.5'"),
    "threshold-value-nan": (_set("threshold.value", math.nan), None, "threshold.value is nan"),
    "threshold-unknown-field": (_set("threshold.colour", "red"), None, "malformed field"),
    "calibration-n-negative": (_set("threshold.calibration_n", -3), None, "threshold.calibration_n is -3"),
    "height-string": (_set("input.height", "8"), None, "input.height is '8'"),
    "classes-one-string": (_set("classes", "0123456789"), None, "classes must be a list of class names"),
    "classes-duplicate": (_set("classes", ["0"] * 10), None, "class names must be unique"),
    "12-class-names-for-10-outputs": (_set("classes", [str(i) for i in range(12)]), None,
                                      "'probs' has shape [batch, 10], the contract expects [batch, 12]"),
    "3-class-names-for-10-outputs": (_set("classes", ["a", "b", "c"]), None,
                                     "'probs' has shape [batch, 10], the contract expects [batch, 3]"),
    "28x28-declared-for-8x8": (_many(_set("input.height", 28), _set("input.width", 28)), None,
                               "'image' has shape [batch, 1, 8, 8], the contract expects [batch, 1, 28, 28]"),
    "3-channels-declared-for-1": (_many(_set("input.channels", 3), _set("input.mean", [0.3] * 3),
                                        _set("input.std", [0.4] * 3), _set("input.channel_order", "RGB")), None,
                                  "the contract expects [batch, 3, 8, 8]"),
    "nhwc-uint8-declared-for-nchw-float": (_many(_set("input.layout", "NHWC"), _set("input.dtype", "uint8"),
                                                 _set("input.value_range", [0, 255])), None,
                                           "input 'image' is float32, the contract expects uint8"),
    "another-input-name": (_set("input.name", "pixels"), None, "the contract expects ['pixels']"),
    "value-range-0-255-on-a-0-1-graph": (_set("input.value_range", [0, 255]), None,
                                         "input.value_range is [0.0, 255.0] for float32 input"),
    "mean-of-two-for-one-channel": (_set("input.mean", [0.3, 0.3]), None, "mean/std have 2/1 entries"),
    "std-zero": (_set("input.std", [0.0]), None, "every entry > 0"),
    "outputs-reordered": (_set("outputs", ["defer", "failure_score", "probs", "label"]), None, "outputs are"),
    "metrics-a-list": (_set("metrics", [1, 2]), None, "metrics must be an object"),
    "input-a-string": (_set("input", "image"), None, "'input' must be an object"),
    "format-missing": (lambda raw: raw.pop("format"), None, "expected a contract of format 'metaerr-edge/1'"),
    "graph-threshold-0.99-contract-other": (None, _graph_threshold(0.99),
                                            "defer_threshold is 0.99 but the contract's threshold.value is"),
    "no-contract": (None, _drop_contract, "carries no metaerr-edge contract"),
}


def _tamper(src: Path, dst: Path, edit_contract: Edit | None, edit_model: Callable | None) -> Path:
    model = onnx.load(str(src))
    (entry,) = [p for p in model.metadata_props if p.key == CONTRACT_KEY]
    if edit_contract is not None:
        raw = json.loads(entry.value)
        edit_contract(raw)
        entry.value = json.dumps(raw)  # NaN stays NaN: json writes it, as a tampering tool would
    if edit_model is not None:
        edit_model(model)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    """(the digits model, a folder of 8x8 frames, the folder for tampered copies)."""
    root = tmp_path_factory.mktemp("corpus_contracts")
    model = root / "model.onnx"
    assert main(["export", str(digits_run.path), "--legacy-exporter", "-o", str(model)]) == 0
    frames = root / "frames"
    frames.mkdir()
    images, _ = digits_run.split("test")
    for i in range(4):
        Image.fromarray(images[i, 0], "L").save(frames / f"{i}.png")
    return model, frames, root


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """Another digits run (seed 1): same classes and input, other splits and weights."""
    from metaerr_edge.config import BaseConfig, MetaConfig, RunConfig
    from metaerr_edge.pipeline import train_run

    config = RunConfig(base=BaseConfig(epochs=2), meta=MetaConfig(epochs=3, folds=2), seed=1)
    return train_run(config, tmp_path_factory.mktemp("other_run"), progress=False)


def _api(call: Callable[[Path], object]) -> Callable[..., tuple[int, str]]:
    def consumer(path: Path, **_: object) -> tuple[int, str]:
        try:
            call(path)
        except ContractError as exc:
            return 2, str(exc)
        return 0, ""

    return consumer


def _cli(*argv: str) -> Callable[..., tuple[int, str]]:
    def consumer(path: Path, *, frames: Path, run: Path, capsys, out: Path) -> tuple[int, str]:
        args = [str({"MODEL": path, "FRAMES": frames, "RUN": run, "OUT": out}.get(a, a)) for a in argv]
        rc = main(args)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        if rc == 2:
            assert captured.err.count("\n") == 1, captured.err  # one line
        return rc, captured.err if rc == 2 else captured.out

    return consumer


CONSUMERS = {
    "open_session(onnxruntime)": _api(lambda p: open_session(p, backend="onnxruntime")),
    "open_session(auto)": _api(lambda p: open_session(p)),  # a contract problem stops auto: no fallback
    "read_contract": _api(read_contract),  # the one reader (below)
    "predict": _cli("predict", "MODEL", "FRAMES", "--backend", "onnxruntime"),
    "bench": _cli("bench", "MODEL", "--quiet", "--duration-s", "0.01", "--warmup-s", "0", "-o", "OUT"),
    "calibrate": _cli("calibrate", "MODEL", "--run", "RUN", "--coverage", "0.9", "-o", "OUT"),
    "verify": _cli("verify", "MODEL", "--run", "RUN", "-n", "8", "--batch-sizes", "8"),
    "inspect": _cli("inspect", "MODEL"),
}


def test_there_is_one_contract_reader_with_one_public_name():
    import metaerr_edge
    from metaerr_edge.fuse import export, modelfile
    from metaerr_edge.contract import reader

    assert metaerr_edge.read_contract is read_contract is reader.read_contract
    assert read_contract.__module__ == "metaerr_edge.contract.reader"
    assert not hasattr(export, "read_contract") and not hasattr(modelfile, "read_contract")  # no second name


@pytest.mark.parametrize("consumer", list(CONSUMERS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_model_is_refused_by_every_consumer(exported, digits_run, tmp_path, capsys, case, consumer):
    model, frames, root = exported
    edit_contract, edit_model, fragment = CASES[case]
    path = _tamper(model, tmp_path / "tampered.onnx", edit_contract, edit_model)
    before = path.read_bytes()
    rc, text = CONSUMERS[consumer](path, frames=frames, run=digits_run.path, capsys=capsys, out=tmp_path / "out")
    assert rc == (1 if consumer == "inspect" else 2), text
    assert fragment in text, text
    assert path.read_bytes() == before and not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_the_untampered_model_opens_everywhere(exported, digits_run, tmp_path, capsys, consumer):
    model, frames, _ = exported
    path = tmp_path / "model.onnx"
    shutil.copy(model, path)
    rc, text = CONSUMERS[consumer](path, frames=frames, run=digits_run.path, capsys=capsys, out=tmp_path / "out")
    assert rc == 0, text


# --------------------------------------------------------------------------- a model knows its run
def test_a_contract_copied_onto_other_weights_is_refused(exported, other_run, tmp_path):
    model, _, _ = exported
    other = tmp_path / "other.onnx"
    assert main(["export", str(other_run.path), "--legacy-exporter", "-o", str(other)]) == 0
    mine = json.loads(next(p.value for p in onnx.load(str(model)).metadata_props if p.key == CONTRACT_KEY))

    def transplant(raw: dict) -> None:
        raw.clear()
        raw.update(mine)

    def same_threshold(m: onnx.ModelProto) -> None:
        _graph_threshold(mine["threshold"]["value"])(m)

    path = _tamper(other, tmp_path / "transplant.onnx", transplant, same_threshold)
    with pytest.raises(ContractError, match="not the ones this contract was exported with"):
        open_session(path, backend="onnxruntime")


@pytest.mark.parametrize("command", ["calibrate", "verify", "bench"])
def test_commands_refuse_a_run_the_model_was_not_exported_from(exported, other_run, tmp_path, capsys, command):
    model, _, _ = exported
    argv = {"calibrate": ["calibrate", str(model), "--run", str(other_run.path), "--coverage", "0.9",
                          "-o", str(tmp_path / "c.onnx")],
            "verify": ["verify", str(model), "--run", str(other_run.path), "-n", "8"],
            "bench": ["bench", str(model), "--backend", "torch", "--run", str(other_run.path), "--quiet",
                      "-o", str(tmp_path / "b")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not the run" in err and "splits_sha256" in err and "weights_sha256" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "c.onnx").exists() and not (tmp_path / "b").exists()


def test_allow_other_run_says_what_it_gives_up(exported, other_run, tmp_path, caplog):
    model, _, _ = exported
    out = tmp_path / "c.onnx"
    with caplog.at_level("WARNING", logger="metaerr_edge.fuse"):
        assert main(["calibrate", str(model), "--run", str(other_run.path), "--coverage", "0.9", "--allow-other-run",
                     "-o", str(out)]) == 0
    assert "carries no guarantee for this model" in caplog.text
    assert read_contract(out).threshold.calibration_n == len(other_run.split("calib")[1])


def test_the_contract_records_the_run_it_was_exported_from(exported, digits_run):
    model, _, _ = exported
    contract = read_contract(model)
    assert contract.meta["run"] == digits_run.identity("probs")
    assert set(contract.meta["run"]) == {"dataset", "meta_mode", "splits_sha256", "weights_sha256"}
