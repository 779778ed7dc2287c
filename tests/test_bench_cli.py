"""``metaerr-edge bench``: JSON (with samples and environment), Markdown and plot; clear errors on bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from metaerr_edge.bench import TimingConfig, load_json
from metaerr_edge.cli import main
from metaerr_edge.commands import bench as bench_cmd
from metaerr_edge.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fast legacy exporter, on purpose
FAST = ["--warmup-s", "0", "--duration-s", "0.02", "--min-iters", "3", "--interleave", "2", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """A 3-class fused model on 1x8x8 inputs (conftest's tiny_model): (path, FusedModel)."""
    return tiny_model


def test_bench_writes_json_markdown_and_plot(tiny, tmp_path, capsys):
    path, _ = tiny
    out = tmp_path / "out"
    assert main(["bench", str(path), "--backend", "onnxruntime", "--batch-sizes", "1,4", "--threads", "1", *FAST, "-o", str(out)]) == 0
    report = load_json(out / "bench.json")
    assert [(r.name, r.batch_size) for r in report.results] == [("fused/onnxruntime", 1), ("fused/onnxruntime", 4)]
    for r in report.results:
        assert r.host.iterations >= 3 and len(r.host.samples_ms) == r.host.iterations
        assert r.device is None and r.notes["cuda_graphs"] is False and r.notes["intra_op_num_threads"] == 1
    env = report.environment
    assert env["packages"]["onnxruntime"] and env["bench_threads"]["onnxruntime_intra_op"] == 1
    assert "| fused/onnxruntime | 4 |" in (out / "bench.md").read_text()
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "fused/onnxruntime" in capsys.readouterr().out


def test_torch_backend_runs_beside_onnxruntime_with_ratios(tiny, tmp_path, monkeypatch):
    path, fused = tiny
    monkeypatch.setattr(bench_cmd, "_reference_model", lambda run, contract, model: fused)  # no training in a unit test
    out = tmp_path / "out"
    argv = ["bench", str(path), "--backend", "onnxruntime,torch", "--run", str(tmp_path), "--batch-sizes", "2", *FAST, "-o", str(out)]
    assert main(argv) == 0
    report = load_json(out / "bench.json")
    assert {r.name for r in report.results} == {"fused/onnxruntime", "fused/torch"}
    assert [(r["a"], r["b"]) for r in report.ratios] == [("fused/torch", "fused/onnxruntime")]
    from metaerr_edge.commands.tradeoff import bench_latency

    samples, name = bench_latency(str(out / "bench.json"), None, batch=2)
    assert "fused" in name and samples.size >= 3


def test_wrong_run_is_refused_by_the_parity_check(tiny, tmp_path, monkeypatch, capsys):
    path, fused = tiny
    other = copy.deepcopy(fused)
    with torch.no_grad():
        for weight in other.base.parameters():
            weight.add_(0.5)  # same architecture, other weights: another run's model
    monkeypatch.setattr(bench_cmd, "_reference_model", lambda run, contract, model: other)
    argv = ["bench", str(path), "--backend", "torch", "--run", str(tmp_path), "--batch-sizes", "1", *FAST, "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "disagree" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "onnxruntime,openvino"], "unknown backend(s) ['openvino']"),
        (["--batch-sizes", "1,0"], "integers from 1 to 65536"),
        (["--batch-sizes", "x"], "integers from 1 to 65536"),
        (["--backend", "torch"], "needs --run"),
        (["--cuda-graphs"], "--cuda-graphs"),
        (["--min-iters", "0"], "argument --min-iters: expected an integer from 1 to 10000000, got '0'"),
        (["--threads", "-1"], "argument --threads: expected an integer >= 1"),
        (["--threads", "two"], "argument --threads: expected an integer >= 1, got 'two'"),
        (["--threads", str(10**6)], "expected at most 1024 threads"),
        (["--interleave", "0"], "argument --interleave"),
        (["--device", "bogus"], "argument --device: expected cpu, cuda, cuda:N or auto, got 'bogus'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tiny, tmp_path, capsys, extra, message):
    path, _ = tiny
    assert main(["bench", str(path), *extra, "--quiet", "-o", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_model_file_exits_2(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.onnx"), "--quiet"]) == 2
    assert "no model file" in capsys.readouterr().err


def test_measure_interleaved_pools_rounds_and_checks_rounds():
    cfg = TimingConfig(warmup_s=0.0, min_duration_s=0.0, min_iterations=5)
    order: list[str] = []
    stats = bench_cmd.measure_interleaved([("a", lambda: order.append("a")), ("b", lambda: order.append("b"))], cfg, 3,
                                          batch_size=2)
    assert stats["a"].iterations == stats["b"].iterations == 6  # ceil(5 / 3) per round, 3 rounds
    assert stats["a"].batch_size == 2
    assert order[:2] == ["a", "a"] and "b" in order[2:4]  # rounds rotate who goes first
    with pytest.raises(ConfigError):
        bench_cmd.measure_interleaved([("a", lambda: None)], cfg, 0, batch_size=1)
    assert np.all(stats["a"].samples_ms >= 0)
