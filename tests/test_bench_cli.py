"""``metaerr-edge bench``: JSON (with samples and environment), Markdown and plot; clear errors on bad input."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch

from metaerr_edge.bench import TimingConfig, load_json
from metaerr_edge.cli import main
from metaerr_edge.contract import read_contract
from metaerr_edge.commands import bench as bench_cmd
from metaerr_edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
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


# --- the library the command calls (metaerr_edge.bench) -------------------------------------


def test_the_library_times_backends_side_by_side_and_closes_their_sessions(tiny, monkeypatch):
    import metaerr_edge.runtime as runtime
    from metaerr_edge.bench import measure_variants, open_variants
    from metaerr_edge.errors import BackendUnavailable
    from metaerr_edge.contract.spec import random_inputs

    path, fused = tiny
    contract = read_contract(path)
    cfg = TimingConfig(warmup_s=0.0, min_duration_s=0.0, min_iterations=4)
    threads_before = torch.get_num_threads()
    with open_variants(path, contract, ("torch", "onnxruntime"), (1, 3), fused=fused, threads=1, seed=5) as variants:
        assert [(v.name, v.backend, v.gpu_model) for v in variants] == [
            ("fused/torch", "torch", None), ("fused/onnxruntime", "onnxruntime", None)]
        assert variants[0].notes["torch_num_threads"] == torch.get_num_threads() == 1
        assert variants[1].notes["intra_op_num_threads"] == 1 and variants[1].notes["device_time"] is None
        results = measure_variants(variants, (1, 3), contract, cfg, 2, seed=5, model="tiny.onnx")
    assert [(r.name, r.batch_size, r.model) for r in results] == [
        ("fused/torch", 1, "tiny.onnx"), ("fused/onnxruntime", 1, "tiny.onnx"),
        ("fused/torch", 3, "tiny.onnx"), ("fused/onnxruntime", 3, "tiny.onnx")]
    assert all(r.host.iterations == 4 and r.device is None for r in results)  # ceil(4 / 2) per round, 2 rounds
    assert results[0].notes is not variants[0].notes and results[0].notes == variants[0].notes
    with pytest.raises(BackendUnavailable, match="closed"):  # leaving the block closed every session
        variants[1].host(random_inputs(contract.input, 1))
    with pytest.raises(BackendUnavailable, match="closed"):
        variants[0].host(random_inputs(contract.input, 1))
    torch.set_num_threads(threads_before)  # threads=1 set torch's threads for the whole process

    with pytest.raises(ConfigError, match="torch backend needs the PyTorch model"):
        with open_variants(path, contract, ("torch",), (1,)):
            pass

    opened = []
    real_open = runtime.open_session

    def spy(*args, **kwargs):
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    other = copy.deepcopy(fused)
    with torch.no_grad():
        for weight in other.base.parameters():
            weight.add_(0.5)
    monkeypatch.setattr(runtime, "open_session", spy)
    with pytest.raises(ConfigError, match="disagree"):  # the parity check refuses another model...
        with open_variants(path, contract, ("onnxruntime", "torch"), (1,), fused=other):
            pass
    assert len(opened) == 3 and all("closed=True" in repr(s) for s in opened)  # ...and closes what it opened


def test_bench_markdown_has_device_rows_and_ratios_only_where_both_sides_have_them(tmp_path):
    from metaerr_edge.bench import HOST_NOTE, BenchResult, LatencyStats, bench_markdown, plot_bench

    host = LatencyStats.from_samples([2.0, 2.0, 2.0], batch_size=1)
    dev = LatencyStats.from_samples([0.5, 0.5], batch_size=1, kind="device")
    notes = {"device": "cuda:0", "providers": ["torch 2"], "copies_included": True, "cuda_graphs": False,
             "spin_wait": "auto", "device_time": "events"}
    results = [BenchResult("fused/onnxruntime", "onnxruntime", "m.onnx", 1, LatencyStats.from_samples([1.0, 1.0]),
                           notes={"device": "cpu", "providers": ["CPUExecutionProvider"]}),
               BenchResult("fused/torch", "torch", "m.onnx", 1, host, dev, notes),
               BenchResult("fused/torch+cudagraph", "torch", "m.onnx", 1, host, dev, {**notes, "cuda_graphs": True})]
    env = {"cpu_model": "cpu x", "cpu_affinity": 2, "cpu_count": 4, "gpu": "H100", "bench_threads": {"requested": 1},
           "packages": {"onnxruntime": "1.2", "torch": "2.11"}, "python": "3.12"}
    pairs = [("fused/torch", "fused/onnxruntime"), ("fused/torch+cudagraph", "fused/torch")]
    text = bench_markdown(tmp_path / "m.onnx", results, env, pairs)
    lines = text.splitlines()
    assert lines[0] == "# Latency of m.onnx"
    assert lines[2] == ("CPU: cpu x (2 usable of 4); GPU: H100; threads: {'requested': 1}; onnxruntime 1.2, "
                        "torch 2.11, python 3.12.")
    assert "## Device compute time (CUDA events, copies excluded)" in lines
    assert "| fused/torch | fused/onnxruntime | host | 1 | 2.000 | 1.000 | 2.000 | 2.000 | 1.000 | 2.000 |" in lines
    assert not any("fused/onnxruntime | device" in line for line in lines)  # onnxruntime has no device time
    assert any(line.startswith("| fused/torch+cudagraph | fused/torch | device | 1 |") for line in lines)
    assert "- **fused/torch+cudagraph**: cuda:0 via torch 2; copies in host time: True; CUDA graphs: True; " \
           "spin-wait: auto; device time: events." in lines
    assert lines[-1] == f"- host time: {HOST_NOTE}."
    assert plot_bench(results, tmp_path) == ["bench.png", "bench_device.png"]
    assert (tmp_path / "bench_device.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "host").mkdir()
    assert plot_bench(results[:1], tmp_path / "host") == ["bench.png"]  # no device times: no device plot
    assert sorted(p.name for p in (tmp_path / "host").iterdir()) == ["bench.png"]


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every ``import``/``from ... import`` in a file (name "" for plain imports)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names]
    return found


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "benchmarks").glob("*.py")))
def test_the_benchmarks_use_public_functions_only(script):
    """No private name, no CLI internals. The one exception: the package's IO module (``_fileio``: strict
    JSON and atomic writes), which the result files of this repository go through like every other file."""
    ours = [(m, n) for m, n in _imports(REPO / "benchmarks" / script) if m.split(".")[0] == "metaerr_edge"]
    assert ours, f"{script} imports nothing from metaerr_edge"
    if script == "latency.py":
        assert ("metaerr_edge.bench", "measure_interleaved") in ours  # the walk finds the function-level imports
    private = [(m, n) for m, n in ours if n.startswith("_") or
               any(part.startswith("_") for part in m.split(".") if m != "metaerr_edge._fileio")]
    assert private == []
    assert not [m for m, _ in ours if m.startswith("metaerr_edge.commands")]  # a benchmark is no CLI client


def test_the_command_holds_no_timing_or_rendering_logic():
    names = {n for m, n in _imports(REPO / "metaerr_edge" / "commands" / "bench.py") if m == "metaerr_edge.bench"}
    assert {"measure_variants", "open_model_variants", "bench_markdown", "plot_bench"} <= names
    assert not hasattr(bench_cmd, "measure_interleaved") and not hasattr(bench_cmd, "Variant")
