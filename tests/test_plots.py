"""What the figures show, read back from the matplotlib objects: styles, references, legends, titles, ticks.

A figure is drawn (``fig.canvas.draw()``) before positions are read, so legend and axes boxes are
the ones written to the file.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from metaerr_edge.bench import BenchResult, LatencyStats  # noqa: E402
from metaerr_edge.bench.report import _latency_figure  # noqa: E402
from metaerr_edge.decide import sweep_tradeoff  # noqa: E402
from metaerr_edge.plots import _selective_figure, _shift_figure, plot_generalized_risk, plot_risk_coverage  # noqa: E402
from metaerr_edge.plots.style import group_identical, score_styles  # noqa: E402
from metaerr_edge.shift_report import ShiftReport  # noqa: E402


def _scores(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    err = (rng.random(n) < 0.2).astype(np.int64)
    msp = rng.normal(err * 1.0, 1.0)
    return err, {"metaerr[probs]": rng.normal(err * 2.0, 1.0), "msp": msp, "temperature": msp.copy(),
                 "entropy": rng.normal(err * 0.5, 1.0)}


def _drawn(fig):
    fig.canvas.draw()
    return fig


def _legend_texts(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def test_every_score_gets_its_own_colour_and_linestyle_and_metaerr_stands_out():
    names = [f"metaerr[v{i}]" for i in range(5)] + [f"baseline{i}" for i in range(28)]
    styles = score_styles(names)
    pairs = {(str(s["color"]), str(s["linestyle"])) for s in styles.values()}
    assert len(pairs) == len(names)
    meta, base = styles["metaerr[v0]"], styles["baseline0"]
    assert meta["linestyle"] == "-" and base["linestyle"] != "-"
    assert meta["linewidth"] > base["linewidth"] and meta["zorder"] > base["zorder"]


def test_identical_curves_are_grouped_and_others_are_not():
    assert group_identical({"a": ([0, 1],), "b": ([0, 1],), "c": ([1, 0],)}) == [["a", "b"], ["c"]]
    assert group_identical({"a": ([0, 1],), "b": ([0, 1, 2],)}) == [["a"], ["b"]]


def test_risk_coverage_figure_has_references_one_line_per_distinct_curve_and_an_outside_legend():
    err, scores = _scores()
    fig = _drawn(_selective_figure(scores, err, "digits / small_cnn", "test", generalized=False))
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert len(labels) == 5  # metaerr, msp = temperature, entropy, oracle, random
    assert any(label.startswith("msp = temperature (AURC") for label in labels)
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    rate = err.mean()
    np.testing.assert_allclose(lines["random"].get_ydata(), rate)  # a ranking by chance: the error rate everywhere
    oracle_risk = np.asarray(lines["oracle"].get_ydata())
    cov = np.asarray(lines["oracle"].get_xdata())
    assert np.all(oracle_risk[cov <= 1 - rate + 1e-9] == 0)  # the best ranking accepts no error until it must
    area = {name: float(line.get_label().rsplit("AURC ", 1)[1].rstrip("‰)")) for name, line in lines.items()}
    assert min(area, key=area.get) == "oracle" and max(area, key=area.get) in ("random", "entropy")
    assert area["metaerr[probs]"] < area["msp = temperature"] < area["random"]  # the stronger score, the smaller area
    assert lines["metaerr[probs]"].get_linewidth() > lines["entropy"].get_linewidth()
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # right of the data, never over it
    assert _legend_texts(legend)[0].startswith("metaerr[probs]")  # MetaErr first, references last
    assert _legend_texts(legend)[-2:] == [lines["oracle"].get_label(), lines["random"].get_label()]
    assert ax.get_title() == f"digits / small_cnn, test split (n=400, {int(err.sum())} errors)"


def test_generalized_risk_figure_reports_augrc_and_accepted_errors_over_all():
    err, scores = _scores()
    fig = _drawn(_selective_figure(scores, err, "", "calib", generalized=True))
    ax = fig.axes[0]
    assert "accepted errors / all" in ax.get_ylabel()
    assert all("AUGRC" in t for t in _legend_texts(ax.get_legend()))
    meta = next(line for line in ax.get_lines() if line.get_label().startswith("metaerr"))
    cov, risk = np.asarray(meta.get_xdata()), np.asarray(meta.get_ydata())
    np.testing.assert_allclose(risk[np.argmax(cov)], err.mean())  # all accepted: every error counts
    assert ax.get_title().startswith("generalized risk-coverage, calib split")


def test_plot_functions_write_the_format_the_suffix_names(tmp_path):
    err, scores = _scores(120)
    assert plot_risk_coverage(scores, err, tmp_path / "rc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_generalized_risk(scores, err, tmp_path / "gr.svg").read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gr.svg", "rc.png"]  # no temp file left


def _shift_report() -> ShiftReport:
    names = ["metaerr[probs]", "msp"]
    def cell(a):
        return {n: {"auroc": a - 0.05 * j, "aurc": 0.01, "augrc": 0.01} for j, n in enumerate(names)}
    sets = [{"set": "clean", "kind": "clean", "severity": None, "n": 100, "error_rate": 0.1, "scores": cell(0.95)}]
    sets += [{"set": fam, "kind": "corruption", "severity": s, "n": 100, "error_rate": 0.1 + 0.05 * s, "scores": cell(0.9 - 0.05 * s)}
             for fam in ("gaussian_noise", "defocus_blur") for s in (1, 3, 5)]
    sets += [{"set": "ood:uniform_noise", "kind": "ood", "severity": None, "n": 200, "error_rate": 0.5, "scores": cell(0.8)}]
    return ShiftReport("runs/x", "mnist", "resnet9", "test", 0.9, dict.fromkeys(names, 0.5), sets)


def test_shift_figure_keeps_each_score_in_one_style_across_panels_with_the_legend_below():
    fig = _drawn(_shift_figure(_shift_report()))
    panels = [ax for ax in fig.axes]
    assert [ax.get_title() for ax in panels] == ["gaussian_noise", "defocus_blur", "OOD"]
    for name in ("metaerr[probs]", "msp"):
        looks = {(str(line.get_color()), str(line.get_linestyle())) for ax in panels for line in ax.get_lines()
                 if line.get_label() == name}
        assert len(looks) == 1, name
    first = next(line for line in panels[0].get_lines() if line.get_label() == "metaerr[probs]")
    assert list(first.get_xdata()) == [0, 1, 3, 5]  # severity 0 is the clean split
    legend = fig.legends[0]
    assert legend.get_window_extent().y1 <= min(ax.get_window_extent().y0 for ax in panels)
    assert "mnist / resnet9" in fig.get_suptitle()


def _bench(name: str, samples: np.ndarray, batch: int = 1) -> BenchResult:
    return BenchResult(name, "onnxruntime-cpu", f"{name}.onnx", batch, LatencyStats.from_samples(samples, batch_size=batch))


@pytest.mark.parametrize("spread", [0.05, 3.0])
def test_latency_figure_labels_a_log_axis_sparsely_and_says_what_the_box_means(spread):
    rng = np.random.default_rng(0)
    results = [_bench("base/ort", rng.lognormal(0.0, spread, 300)), _bench("fused/ort", rng.lognormal(0.2, spread, 300))]
    fig = _drawn(_latency_figure(results, kind="host", style="box", log_scale=True))
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    shown = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks()) if lo <= v <= hi and t.get_text()]
    assert 2 <= len(shown) <= 9, shown
    assert not any(t.get_text() for t in ax.get_yticklabels(minor=True))  # minor ticks unlabeled
    assert "log scale" in ax.get_ylabel()
    assert "whiskers: p1 and p99" in _legend_texts(fig.legends[0])
    assert fig.get_suptitle().startswith("Host latency")


def test_tradeoff_figure_marks_targets_and_keeps_always_device_visible_under_the_recommendation():
    rng = np.random.default_rng(7)
    err = (rng.random(1000) < 0.1).astype(np.int64)
    scores = np.clip(rng.normal(0.3 + 0.4 * err, 0.15), 0, 1)
    table = sweep_tradeoff(scores, err, rng.gamma(5.0, 1.0, 300), rng.gamma(20.0, 2.0, 300),
                           fallback_correct=rng.random(1000) < 0.97)
    fig = _drawn(table._figure(deadline_ms=200.0, min_accuracy=0.85, title=None))
    ax_acc, ax_lat = fig.axes
    labels = _legend_texts(ax_acc.get_legend())
    assert "accuracy target 0.85" in labels and "always device" in labels
    star = next(line for line in ax_acc.get_lines() if line.get_label().startswith("recommended"))
    assert star.get_markerfacecolor() == "none" and star.get_zorder() > 3  # hollow, on top: what it covers shows
    assert any(line.get_label() == "deadline 200 ms" for line in ax_lat.get_lines())
    assert ax_acc.get_legend().get_window_extent().x0 >= ax_acc.get_window_extent().x1
    assert fig.get_suptitle() == f"Deferral trade-off over {len(table)} thresholds, {table.n} calibration samples"
