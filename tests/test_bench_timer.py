"""metaerr_edge.bench: timing loop, statistics, tables, ratios, JSON and plots (fast)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time

import numpy as np
import pytest

from metaerr_edge.bench import (
    SCHEMA,
    BenchResult,
    LatencyStats,
    TimingConfig,
    environment,
    load_json,
    measure,
    measure_device,
    measure_interleaved,
    plot_latency,
    ratio_table,
    ratios_markdown,
    round_config,
    save_json,
    to_markdown,
)
from metaerr_edge.errors import BackendUnavailable, ConfigError, DataError

FAST = TimingConfig(warmup_s=0.01, min_duration_s=0.05, min_iterations=10)


def _result(name: str, samples_ms, batch: int = 1, **kw) -> BenchResult:
    host = LatencyStats.from_samples(samples_ms, batch_size=batch)
    return BenchResult(name, "onnxruntime-cpu", f"{name.split('/')[0]}.onnx", batch, host, **kw)


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


# --- statistics ----------------------------------------------------------------------------


def test_stats_from_1_to_100_ms_match_hand_values():
    s = LatencyStats.from_samples(np.arange(1.0, 101.0), batch_size=4, kind="host")
    # linear interpolation at rank p/100 * (n - 1): p90 -> 1 + 0.90 * 99 = 90.1, etc.
    assert (s.min_ms, s.max_ms, s.mean_ms, s.median_ms) == (1.0, 100.0, 50.5, 50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p95_ms == pytest.approx(95.05)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.std_ms == pytest.approx(np.sqrt((100**2 - 1) / 12))  # population std of 1..n
    assert s.iterations == 100
    assert s.total_s == pytest.approx(5.050)  # sum of samples, 5050 ms
    assert s.throughput == pytest.approx(4 * 100 / 5.050)


def test_stats_equal_numpy_on_random_samples():
    x = np.random.default_rng(0).lognormal(0.0, 0.5, size=777)
    s = LatencyStats.from_samples(x, batch_size=2, total_s=1.25)
    p = np.percentile(x, [50, 90, 95, 99], method="linear")
    assert [s.median_ms, s.p90_ms, s.p95_ms, s.p99_ms] == pytest.approx(p, rel=0, abs=0)
    assert s.mean_ms == pytest.approx(x.mean()) and s.std_ms == pytest.approx(x.std())
    assert s.throughput == pytest.approx(2 * 777 / 1.25)
    assert not s.samples_ms.flags.writeable


def test_stats_equality_ignores_samples_and_repr_hides_them():
    a = LatencyStats.from_samples([1.0, 2.0, 3.0])
    b = dataclasses.replace(a, samples_ms=np.empty(0))
    assert a == b and "samples" not in repr(a)
    d = a.to_dict()
    assert "samples_ms" not in d
    assert a.to_dict(include_samples=True)["samples_ms"] == [1.0, 2.0, 3.0]
    assert LatencyStats.from_dict(a.to_dict(include_samples=True)).samples_ms.tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samples_ms": []},
        {"samples_ms": [1.0, float("nan")]},
        {"samples_ms": [-1.0]},
        {"samples_ms": [1.0], "batch_size": 0},
        {"samples_ms": [1.0], "kind": "gpu"},
    ],
)
def test_stats_reject_bad_input(kwargs):
    with pytest.raises(ConfigError):
        LatencyStats.from_samples(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_s": -0.1},
        {"min_duration_s": float("inf")},
        {"min_iterations": 0},
        {"min_iterations": True},
        {"min_iterations": 2.5},
        {"max_iterations": 0},
        {"min_iterations": 10, "max_iterations": 5},
    ],
)
def test_timing_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        TimingConfig(**kwargs)


def test_timing_config_defaults_follow_trtexec():
    c = TimingConfig()
    assert (c.warmup_s, c.min_duration_s) == (0.2, 3.0)
    assert (c.min_iterations, c.max_iterations) == (10, None)


# --- measure() -----------------------------------------------------------------------------


def test_measure_reaches_both_min_duration_and_min_iterations():
    s = measure(lambda: time.sleep(0.001), FAST, batch_size=3)
    assert s.kind == "host" and s.batch_size == 3
    assert s.iterations >= 10
    assert s.total_s >= FAST.min_duration_s
    assert s.min_ms >= 1.0  # every call slept at least 1 ms
    assert s.throughput == pytest.approx(3 * s.iterations / s.total_s)
    assert s.total_s >= s.samples_ms.sum() / 1e3  # wall time covers every timed call


def test_measure_min_iterations_dominates_for_fast_calls_and_sync_runs_each_call():
    calls = {"fn": 0, "sync": 0}

    def fn():
        calls["fn"] += 1

    def sync():
        calls["sync"] += 1

    cfg = TimingConfig(warmup_s=0.0, min_duration_s=0.0, min_iterations=25)
    s = measure(fn, cfg, sync=sync)
    assert s.iterations == 25 and calls == {"fn": 25, "sync": 25}


def test_measure_stops_at_max_iterations():
    cfg = TimingConfig(warmup_s=0.0, min_duration_s=60.0, min_iterations=10, max_iterations=15)
    t0 = time.perf_counter()
    s = measure(lambda: time.sleep(0.001), cfg)
    assert s.iterations == 15 and time.perf_counter() - t0 < 5.0


def test_measure_warms_up_by_time_before_timing():
    calls = []
    cfg = TimingConfig(warmup_s=0.03, min_duration_s=0.0, min_iterations=10)
    s = measure(lambda: calls.append(time.sleep(0.001)), cfg)
    assert len(calls) > s.iterations  # warm-up calls ran and were not timed


def test_measure_progress_callback_and_bar():
    seen = []
    cfg = TimingConfig(warmup_s=0.0, min_duration_s=0.0, min_iterations=12)
    measure(lambda: None, cfg, progress=lambda n, elapsed: seen.append((n, elapsed)))
    assert [n for n, _ in seen] == list(range(1, 13))
    assert all(b >= a for (_, a), (_, b) in zip(seen, seen[1:]))
    assert measure(lambda: None, cfg, progress=True).iterations == 12  # tqdm bar or a warning


def test_measure_rejects_non_callable():
    with pytest.raises(ConfigError):
        measure(42, FAST)  # type: ignore[arg-type]


# --- measure_interleaved() -----------------------------------------------------------------


def test_round_config_splits_duration_and_counts_and_rewarms_briefly():
    cfg = TimingConfig(warmup_s=0.2, min_duration_s=3.0, min_iterations=10, max_iterations=101)
    first, later = round_config(cfg, 4, 0), round_config(cfg, 4, 3)
    assert (first.warmup_s, first.min_duration_s, first.min_iterations, first.max_iterations) == (0.2, 0.75, 3, 26)
    assert (later.warmup_s, later.min_duration_s, later.min_iterations, later.max_iterations) == (0.05, 0.75, 3, 26)
    assert round_config(TimingConfig(0.01, 1.0, 10), 3, 2) == TimingConfig(0.01, 1.0 / 3, 4, None)
    assert round_config(TimingConfig(0.0, 0.0, 10, 10), 4, 0).max_iterations == 3  # never below min_iterations


def test_measure_interleaved_pools_rounds_and_rotates_who_goes_first():
    cfg = TimingConfig(warmup_s=0.0, min_duration_s=0.0, min_iterations=5)
    order: list[str] = []
    steps: list[str] = []
    calls = [(n, (lambda n=n: order.append(n))) for n in ("a", "b", "c")]
    stats = measure_interleaved(calls, cfg, 3, batch_size=2, on_step=steps.append)
    assert list(stats) == ["a", "b", "c"]
    assert [s.iterations for s in stats.values()] == [6, 6, 6]  # ceil(5 / 3) = 2 per round, 3 rounds
    assert all(s.batch_size == 2 and s.kind == "host" and len(s.samples_ms) == 6 for s in stats.values())
    assert steps == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # one slice per call and round, rotated
    runs = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
    assert runs == steps  # each slice runs one call only
    assert stats["a"].total_s >= float(np.sum(stats["a"].samples_ms)) / 1000.0 > 0  # the rounds' wall time, summed
    assert np.all(stats["a"].samples_ms >= 0)
    assert measure_interleaved([], cfg, 2, batch_size=1) == {}


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True, "2"])
def test_measure_interleaved_rejects_bad_rounds(rounds):
    with pytest.raises(ConfigError, match="rounds must be an integer >= 1"):
        measure_interleaved([("a", lambda: None)], FAST, rounds, batch_size=1)


def test_measure_interleaved_checks_kind():
    with pytest.raises(ConfigError):
        measure_interleaved([("a", lambda: None)], FAST, 1, batch_size=1, kind="wall")  # type: ignore[arg-type]


@pytest.mark.skipif(_cuda_available(), reason="CUDA is available here")
def test_measure_interleaved_device_kind_needs_cuda():
    with pytest.raises(BackendUnavailable):
        measure_interleaved([("a", lambda: None)], FAST, 1, batch_size=1, kind="device")


# --- device timing -------------------------------------------------------------------------


@pytest.mark.skipif(_cuda_available(), reason="CUDA is available: covered by the gpu test")
def test_measure_device_without_cuda_raises_backend_unavailable():
    with pytest.raises(BackendUnavailable):
        measure_device(lambda: None, FAST)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs torch with a CUDA GPU")
def test_measure_device_times_gpu_work():
    import torch

    x = torch.randn(512, 512, device="cuda")
    s = measure_device(lambda: x @ x, FAST, batch_size=2)
    assert s.kind == "device" and s.iterations >= 10 and s.min_ms > 0
    assert s.throughput == pytest.approx(2 * s.iterations / s.total_s)


# --- environment ---------------------------------------------------------------------------


def test_environment_is_json_ready_and_has_no_hostname():
    import platform

    env = environment()
    text = json.dumps(env)
    assert env["packages"]["numpy"] == np.__version__
    assert env["cpu_count"] >= 1 and "OMP_NUM_THREADS" in env["thread_env"]
    node = platform.node()
    if node and len(node) > 3:
        assert node not in text


# --- reports -------------------------------------------------------------------------------


def test_markdown_has_one_row_per_result():
    results = [_result("base/ort", [1.0, 2.0]), _result("fused/ort", [1.5, 2.5]),
               _result("fused/ort", [3.0, 5.0], batch=8)]
    lines = to_markdown(results).splitlines()
    assert len(lines) == 2 + len(results)
    assert lines[2].startswith("| base/ort | 1 | 2 | 1.000 | 1.500 | 1.500 |")
    assert lines[-1].split("|")[2].strip() == "8"
    dev = to_markdown(results, kind="device").splitlines()
    assert len(dev) == 2 + len(results) and dev[2].endswith("| - |")


def test_ratio_table_gives_exact_ratios_at_equal_batch():
    base = _result("base/ort", [2.0] * 99 + [4.0])
    fused = _result("fused/ort", [3.0] * 99 + [10.0])
    other_batch = _result("fused/ort", [1.0], batch=8)  # no base at batch 8: no row
    rows = ratio_table([base, fused, other_batch], [("fused/ort", "base/ort")])
    assert len(rows) == 1
    row = rows[0]
    assert row["batch_size"] == 1 and row["kind"] == "host"
    assert row["median_ratio"] == 1.5
    assert row["p99_ratio"] == pytest.approx(fused.host.p99_ms / base.host.p99_ms)
    assert row["p99_a_ms"] == pytest.approx(3.0 + 0.01 * 7.0)  # rank 98.01 between 3 and 10
    md = ratios_markdown(rows).splitlines()
    assert len(md) == 3 and "| 1.500 |" in md[2]


def test_ratio_table_rejects_unknown_names_and_duplicates():
    a, b = _result("a", [1.0]), _result("b", [2.0])
    with pytest.raises(ConfigError, match="no result named 'c'"):
        ratio_table([a, b], [("a", "c")])
    with pytest.raises(ConfigError, match="share name"):
        ratio_table([a, a], [("a", "a")])
    with pytest.raises(ConfigError, match="no batch size"):
        ratio_table([a, _result("b", [2.0], batch=4)], [("a", "b")])


def test_bench_result_rejects_batch_mismatch():
    host = LatencyStats.from_samples([1.0], batch_size=2)
    with pytest.raises(ConfigError, match="batch_size"):
        BenchResult("x", "ort", "m.onnx", 1, host)


def test_json_round_trip(tmp_path):
    device = LatencyStats.from_samples([0.5, 0.7], batch_size=1, kind="device")
    notes = {"copies_included": True, "cuda_graphs": False, "spin_wait": False, "threads": 2}
    results = [_result("base/ort", [2.0, 2.2, 2.4], device=device, notes=notes),
               _result("fused/ort", [3.0, 3.3, 3.6], device=device, notes=notes)]
    env = environment()
    path = save_json(tmp_path / "out" / "bench.json", results, env, extra={"run": "unit"},
                     pairs=[("fused/ort", "base/ort")], include_samples=True)
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temp file left
    raw = json.loads(path.read_text())
    assert raw["schema"] == SCHEMA and set(raw) == {"schema", "environment", "results",
                                                    "ratios", "extra"}
    report = load_json(path)
    assert report.results == tuple(results)
    assert report.results[0].host.samples_ms.tolist() == [2.0, 2.2, 2.4]
    assert report.environment == json.loads(json.dumps(env))
    assert report.extra == {"run": "unit"}
    assert [(r["kind"], r["median_ratio"]) for r in report.ratios] == [
        ("host", pytest.approx(3.3 / 2.2)), ("device", 1.0)]


def test_load_json_rejects_wrong_files(tmp_path):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": "something-else/1", "results": []}))
    with pytest.raises(DataError, match="expected schema"):
        load_json(wrong)
    wrong.write_text("[1, 2, 3]")
    with pytest.raises(DataError, match="expected schema"):
        load_json(wrong)
    wrong.write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON"):
        load_json(wrong)
    wrong.write_text(json.dumps({"schema": SCHEMA, "environment": {}, "results": [{"name": "x"}]}))
    with pytest.raises(DataError, match=r"results\[0\]"):
        load_json(wrong)
    with pytest.raises(DataError, match="No benchmark file"):
        load_json(tmp_path / "missing.json")


def test_save_json_rejects_unserialisable_extra(tmp_path):
    with pytest.raises(ConfigError, match="JSON"):
        save_json(tmp_path / "b.json", [_result("a", [1.0])], {}, extra={"x": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed"
)
@pytest.mark.parametrize("style", ["box", "violin"])
def test_plot_writes_png(tmp_path, style):
    rng = np.random.default_rng(1)
    results = [_result("base/ort", rng.lognormal(0, 0.3, 200)),
               _result("fused/ort", rng.lognormal(0.1, 0.3, 200)),
               _result("fused/ort", rng.lognormal(1.0, 0.3, 200), batch=8)]
    path = plot_latency(results, tmp_path / "lat.png", style=style, log_scale=True)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["lat.png"]


def test_plot_needs_samples():
    bare = dataclasses.replace(_result("a", [1.0]).host, samples_ms=np.empty(0))
    with pytest.raises(ConfigError, match="no host latency samples"):
        plot_latency([BenchResult("a", "ort", "m.onnx", 1, bare)], "never-written.png")
