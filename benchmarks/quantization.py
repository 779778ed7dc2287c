"""Reduced precision: is the INT8 fused graph faster, and does it still know when it is wrong?

Two parts, both on ONNX Runtime's CPU provider:

- ``latency``: FP32 vs INT8 fused graphs (and their base halves), 1 thread, measured side by side
  (interleaved rounds) at batch 1 and 32, for a small_cnn, MobileNetV3-Small and ResNet-18 base (random
  weights: speed does not depend on their values), with the two shipped meta-models (the cheap stacked
  ``probs`` head and the robust ``mentor-features`` head). INT8 variants: the default (ONNX Runtime
  flavour, score tail in float), the tail quantized too, and the TensorRT flavour (symmetric).
- ``quality``: on trained runs (the failure-prediction benchmark's seed-0 runs of its shipped presets,
  and a digits run), every reduced variant (INT8 default / tail quantized / per-channel / TensorRT
  flavour, FP16) is written by the package (``quantize_int8`` / ``convert_fp16``), recalibrated to 90%
  coverage on the run's calibration split (``calibrate_model``), and compared with FP32
  (``verify_precision``) on the calibration split (where the default is chosen) and on the test split
  (reported).

The default tail (float or quantized) is chosen by a rule fixed before the numbers: on the calibration
split, summed over runs and presets, the variant with fewer defer flips at the FP32 threshold; a tie
goes to the smaller largest block of tied scores. The default INT8 setting (minmax, percentile or
entropy ranges, or minmax with 7-bit weights; added after the first quality run showed 96.4% label
agreement on Fashion-MNIST) by a second rule fixed before its numbers: the highest label agreement on
the calibration split, summed over runs and presets; a tie keeps minmax with 8-bit weights. Test
numbers are reported, never used to choose.

    python benchmarks/quantization.py                     # both parts (~10 min on 2 shared cores)
    python benchmarks/quantization.py --part latency --quick
    python benchmarks/quantization.py --part quality --train   # train missing preset runs first
    python benchmarks/quantization.py --readme-only

Outputs: ``results/quantization_latency_cpu.{json,md}``, ``results/quantization_quality.{json,md}`` and the
section between the quantization markers of ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- quantization:begin -->", "<!-- quantization:end -->"

#: The shipped meta-models: name -> (HeadConfig mode, options) for random-weight latency graphs.
PRESET_HEADS = {"cheap": ("probs", {"skip": "margin"}), "robust": ("mentor-features", {"target": "tcp"})}
LATENCY_ARCHS = ("small_cnn", "mobilenet_v3_small", "resnet18")
#: INT8/FP16 variants: name -> (precision, quantize_int8 options).
VARIANTS = {
    "int8": ("int8", {}),  # the package's default: onnxruntime flavour, minmax, 7-bit weights, tail in float
    "int8,tail-quantized": ("int8", {"tail": "quantized"}),
    "int8,per-channel": ("int8", {"per_channel": True}),
    "int8,percentile": ("int8", {"method": "percentile"}),
    "int8,entropy": ("int8", {"method": "entropy"}),
    "int8,8-bit-weights": ("int8", {"reduce_range": False}),
    "int8,tensorrt": ("int8", {"target": "tensorrt"}),
    "fp16": ("fp16", {}),
}
LATENCY_VARIANTS = ("int8", "int8,8-bit-weights", "int8,tail-quantized", "int8,tensorrt")
#: Quality runs: dataset -> (failure-prediction candidate run, meta mode) per preset.
PRESET_RUNS = {"cheap": ("stack", "probs"), "robust": ("views2", "mentor-features")}
TARGET_SPEEDUP = 1.5  # INT8 fused vs FP32 fused, ResNet-18 base, batch 1 and 32
TARGET_AGREEMENT, TARGET_AUROC_DROP, TARGET_COVERAGE_GAP = 0.99, 0.005, 0.01
COVERAGE = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("latency", "quality", "both"), default="both")
    ap.add_argument("--archs", nargs="+", default=list(LATENCY_ARCHS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="short timings (a smoke run, not for publishing)")
    ap.add_argument("--datasets", nargs="*", default=["mnist", "fashion-mnist", "cifar10"])
    ap.add_argument("--root", default="../shared/datasets", help="as failure_prediction.py (run from the repository root)")
    ap.add_argument("--recipe", default="converged-v1", help="failure_prediction.py's base recipes whose runs are quantized "
                    "(the committed quality numbers were measured on converged-v1's bases)")
    ap.add_argument("--train", action="store_true", help="train the preset runs that are missing (base reused)")
    ap.add_argument("--no-digits", dest="digits", action="store_false", help="skip the digits run")
    ap.add_argument("--calibration-n", type=int, default=512)
    ap.add_argument("--readme-only", action="store_true")
    ap.add_argument("--no-readme", dest="readme", action="store_false")
    return ap.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- latency -------------------------------------------------------------------------------


def latency_graphs(arch: str, preset: str, work: Path) -> dict[str, Path]:
    """FP32 fused graph of a random-weight base + preset head, and its INT8 variants."""
    import torch

    from latency import ARCHS, NUM_CLASSES, input_spec
    from metaerr_edge.contract.spec import Contract, ThresholdSpec, random_inputs
    from metaerr_edge.fuse.export import export_onnx
    from metaerr_edge.fuse.quantize import quantize_int8
    from metaerr_edge.meta import HeadConfig, MetaModel
    from metaerr_edge.models import create_base
    from metaerr_edge.models.fused import FusedModel
    from metaerr_edge.models.preprocess import Preprocess

    reg, c, h, w = ARCHS[arch]
    torch.manual_seed(0)
    mode, kw = PRESET_HEADS[preset]
    base = create_base(reg, c, NUM_CLASSES, (h, w)).eval()
    meta = MetaModel(HeadConfig(mode, **kw), c, NUM_CLASSES, (h, w)).eval()
    fused = FusedModel(base, meta, Preprocess([0.5] * c, [0.25] * c), 0.5).eval()
    spec = input_spec(c, h, w)
    contract = Contract(input=spec, classes=tuple(str(i) for i in range(NUM_CLASSES)), threshold=ThresholdSpec(0.5),
                        base={"arch": arch})
    paths = {"fp32": export_onnx(fused, contract, work / f"{arch}_{preset}.onnx").path}
    images = random_inputs(spec, 64, seed=1)
    for name in LATENCY_VARIANTS:
        _, options = VARIANTS[name]
        paths[name] = quantize_int8(paths["fp32"], work / f"{arch}_{preset}_{name}.onnx", images, **options).path
    return paths


def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    from metaerr_edge.bench import TimingConfig, environment, measure_variants, open_model_variants, thread_counts
    from metaerr_edge.bench.report import ratio_table
    from metaerr_edge.contract import read_contract

    cfg = TimingConfig(0.05, 0.2, 5) if args.quick else TimingConfig(0.2, args.duration, 10)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="metaerr-quant-lat-") as tmp:
        for arch in args.archs:
            for preset in PRESET_HEADS:
                t0 = time.perf_counter()
                paths = latency_graphs(arch, preset, Path(tmp))
                models = list(paths.values())
                contracts = [read_contract(p) for p in models]
                with open_model_variants(models, contracts, ("onnxruntime",), args.batches, base_alone=True,
                                         threads=args.threads, tags=list(paths)) as (variants, pairs):
                    results = measure_variants(variants, args.batches, contracts[0], cfg, args.rounds)
                for r in ratio_table(results, pairs, "host"):
                    rows.append({"arch": arch, "preset": preset, **r})
                log(f"latency {arch} / {preset}: {time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "environment": {**environment(), "bench_threads": thread_counts(args.threads)},
            "timing": dataclasses.asdict(cfg), "rounds": args.rounds, "quick": args.quick,
            "weights": "random init (seed 0); INT8 ranges from 64 random inputs"}


# --- quality -------------------------------------------------------------------------------


def quality_runs(args: argparse.Namespace) -> list[tuple[str, str, Any, str]]:
    """(dataset, preset, run, meta mode) for every preset run found (or trained with --train)."""
    import failure_prediction as fp

    fp_args = fp.parse_args(["--root", args.root, "--recipe", args.recipe])
    out = []
    for dataset in args.datasets:
        anchor_cfg = fp.run_config(fp_args, dataset, 0)
        anchor = fp.run_folder(fp_args, anchor_cfg)
        if not (anchor / "config.json").is_file():
            if not args.train:
                log(f"{dataset}: no benchmark run at {anchor} (train it: failure_prediction.py, or --train)")
                continue
            fp.get_run(anchor_cfg, anchor, progress=False)
        for preset, (cand, mode) in PRESET_RUNS.items():
            folder = Path(f"{anchor}__{cand}")
            if not (folder / "config.json").is_file() and not args.train:
                log(f"{dataset}: no {cand} run at {folder} (--train trains it on the same base)")
                continue
            config = dataclasses.replace(anchor_cfg, meta=dataclasses.replace(anchor_cfg.meta, **fp.CANDIDATES[cand]))
            run, _ = fp.get_run(config, folder, progress=False, base_from=anchor)
            out.append((dataset, preset, run, mode))
    if args.digits:
        out += [("digits", preset, digits_run(), mode) for preset, (_, mode) in PRESET_RUNS.items()]
    return out


def digits_run() -> Any:
    """The main job's default data (scikit-learn's 8x8 digits) with both heads, trained once (~30 s)."""
    from metaerr_edge.config import MetaConfig, RunConfig
    from metaerr_edge.pipeline import Run, train_run

    folder = HERE / "runs" / "digits_quantization"
    config = RunConfig(meta=MetaConfig(modes=("probs", "mentor-features")))
    if (folder / "config.json").is_file() and Run(folder).config == config:
        return Run(folder)
    return train_run(config, folder, progress=False)


def reduced(variant: str, fp32: Path, out: Path, run: Any, n: int) -> Path:
    """Write ``variant`` of ``fp32`` as the CLI does (INT8 calibrated on meta_train), recalibrated to 90% coverage."""
    from metaerr_edge.contract import read_contract
    from metaerr_edge.fuse.calibrate import calibrate_model
    from metaerr_edge.fuse.quantize import calibration_images, convert_fp16, quantize_int8

    precision, options = VARIANTS[variant]
    if precision == "int8":
        images, source = calibration_images(run, read_contract(fp32), "meta_train", n, 0)
        quantize_int8(fp32, out, images, calibration_source=source, **options)
    else:
        convert_fp16(fp32, out, **options)
    calibrate_model(out, run, coverage=COVERAGE)
    return out


def run_quality(args: argparse.Namespace) -> dict[str, Any]:
    from metaerr_edge.errors import MetaErrError
    from metaerr_edge.fuse.export import export_run
    from metaerr_edge.fuse.verify import verify_precision

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="metaerr-quant-q-") as tmp:
        for dataset, preset, run, mode in quality_runs(args):
            t0 = time.perf_counter()
            fp32 = export_run(run, Path(tmp) / f"{dataset}_{preset}.onnx", mode=mode).path
            for variant in VARIANTS:
                row = {"dataset": dataset, "preset": preset, "mode": mode, "run": run.path.name,
                       "arch": run.config.base.arch, "test_accuracy": run.summary.get("test_accuracy"), "variant": variant}
                try:
                    path = reduced(variant, fp32, Path(tmp) / f"{dataset}_{preset}_{variant}.onnx", run, args.calibration_n)
                except MetaErrError as exc:  # a converter that fails on this graph is a result, not a crash
                    rows.append({**row, "error": str(exc)[:400]})
                    log(f"quality {dataset} / {preset} / {variant}: failed ({str(exc)[:120]})")
                    continue
                reports = {split: verify_precision(path, run, split=split).to_dict() for split in ("calib", "test")}
                rows.append({**row, "size_ratio": path.stat().st_size / fp32.stat().st_size, **reports})
            log(f"quality {dataset} / {preset} ({mode}): {time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "coverage_target": COVERAGE, "calibration_n": args.calibration_n,
            "rule": "default tail: fewer calib defer flips at the FP32 threshold, summed over runs and presets "
                    "(tie: smaller largest tie)"}


def choose_method(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The second preregistered rule (calibration split only): the INT8 setting (range calibration, or 7-bit
    weights) with the most labels kept."""
    names = {"minmax, 7-bit weights": "int8", "minmax, 8-bit weights": "int8,8-bit-weights",
             "percentile, 7-bit weights": "int8,percentile", "entropy, 7-bit weights": "int8,entropy"}
    failed = {r["variant"] for r in rows if "error" in r}  # a setting that fails on some graph cannot be the default
    agree = {m: float(sum(r["calib"]["label_agreement"] for r in rows if r["variant"] == v and "error" not in r))
             for m, v in names.items() if v not in failed}
    return {"label_agreement_sum": agree,
            "chosen": max(agree, key=lambda m: (round(agree[m], 6), m == "minmax, 8-bit weights"))}


def choose_tail(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The preregistered rule, on the calibration split only."""
    def total(variant: str, key: str) -> float:
        return float(sum(r["calib"][key] for r in rows if r["variant"] == variant and "error" not in r))

    flips = {v: total(v, "flips_at_fp32_threshold") for v in ("int8", "int8,tail-quantized")}
    ties = {v: float(sum(r["calib"]["largest_tie"]["int8"] for r in rows if r["variant"] == v and "error" not in r))
            for v in flips}
    chosen = min(flips, key=lambda v: (round(flips[v], 6), ties[v]))
    return {"flips": flips, "largest_tie": ties, "chosen": "float" if chosen == "int8" else "quantized"}


# --- tables --------------------------------------------------------------------------------


def latency_markdown(data: dict[str, Any]) -> str:
    rows = data["rows"]
    lines = ["| base | meta-model | batch | INT8/FP32 fused | INT8/FP32 base | 8-bit-weights/FP32 fused | "
             "tail-quantized/FP32 fused | TensorRT-flavour/FP32 fused | fused/base FP32 | fused/base INT8 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    get = {(r["arch"], r["preset"], r["a"], r["b"], r["batch_size"]): r["median_ratio"] for r in rows}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        for preset in PRESET_HEADS:
            for b in sorted({r["batch_size"] for r in rows}):
                def g(a: str, bb: str) -> str:
                    v = get.get((arch, preset, f"{a}/onnxruntime", f"{bb}/onnxruntime", b))
                    return "-" if v is None else f"{v:.2f}"
                lines.append(f"| {arch} | {preset} | {b} | {g('fused[int8]', 'fused[fp32]')} | {g('base[int8]', 'base[fp32]')} | "
                             f"{g('fused[int8,8-bit-weights]', 'fused[fp32]')} | {g('fused[int8,tail-quantized]', 'fused[fp32]')} | {g('fused[int8,tensorrt]', 'fused[fp32]')} | "
                             f"{g('fused[fp32]', 'base[fp32]')} | {g('fused[int8]', 'base[int8]')} |")
    env = data["environment"]
    return "\n".join([f"ONNX Runtime {env['packages'].get('onnxruntime')} CPU provider, {data['rounds']} interleaved rounds, "
                      f"threads {env['bench_threads'].get('onnxruntime_intra_op')}, CPU {env.get('cpu_model')}; median "
                      "latency ratios (< 1: the first is faster); weights random (speed does not depend on them).", "",
                      *lines])


def quality_markdown(data: dict[str, Any]) -> str:
    lines = ["| data / base (acc) | meta-model | variant | labels agree | AUROC FP32 -> reduced | max / p99 |d score| | "
             "defer flips at FP32 t | distinct scores (FP32 -> reduced) | largest tie | calib coverage | test coverage |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in data["rows"]:
        if "error" in r:
            lines.append(f"| {r['dataset']} / {r['arch']} | {r['preset']} ({r['mode']}) | {r['variant']} | "
                         f"failed: {r['error'][:160]} |||||||| ")
            continue
        t, p = r["test"], r["test"]["precision"]
        acc = "" if r["test_accuracy"] is None else f" ({100 * r['test_accuracy']:.1f}%)"
        lines.append(f"| {r['dataset']} / {r['arch']}{acc} | {r['preset']} ({r['mode']}) | {r['variant']} | "
                     f"{100 * t['label_agreement']:.2f}% | {t['auroc']['fp32']:.4f} -> {t['auroc'][p]:.4f} | "
                     f"{t['max_abs_score_diff']:.3f} / {t['p99_abs_score_diff']:.3f} | {100 * t['flips_at_fp32_threshold']:.2f}% | "
                     f"{t['distinct_scores']['fp32']} -> {t['distinct_scores'][p]} | {100 * t['largest_tie'][p]:.2f}% | "
                     f"{100 * (t['calibration']['achieved_coverage'] or 0):.1f}% | {100 * t['coverage'][p]:.1f}% |")
    return "\n".join(lines)


def targets_markdown(lat: dict[str, Any] | None, qual: dict[str, Any] | None) -> str:
    lines = ["| target | where | measured | held? |", "|---|---|---|---|"]
    if lat:
        for r in lat["rows"]:
            if r["a"] == "fused[int8]/onnxruntime" and r["b"] == "fused[fp32]/onnxruntime":
                speed = 1 / r["median_ratio"]
                goal = r["arch"] == "resnet18"
                lines.append(f"| INT8 fused >= {TARGET_SPEEDUP}x faster than FP32" + ("" if goal else " (figure only)") +
                             f" | {r['arch']} / {r['preset']}, batch {r['batch_size']} | {speed:.2f}x | "
                             + (("held" if speed >= TARGET_SPEEDUP else "**not held**") if goal else "-") + " |")
    if qual:
        for r in qual["rows"]:
            if r["variant"] != "int8" or "error" in r:
                continue
            t = r["test"]
            drop = t["auroc"]["fp32"] - t["auroc"]["int8"]
            gap = abs((t["calibration"]["achieved_coverage"] or 0) - COVERAGE)
            ok = t["label_agreement"] >= TARGET_AGREEMENT and drop <= TARGET_AUROC_DROP and gap <= TARGET_COVERAGE_GAP
            lines.append(f"| labels >= {TARGET_AGREEMENT:.0%}, AUROC within {TARGET_AUROC_DROP}, calib coverage within 1 pt "
                         f"| {r['dataset']} / {r['preset']} | {100 * t['label_agreement']:.2f}%, AUROC change {-drop:+.4f}, "
                         f"coverage {100 * (t['calibration']['achieved_coverage'] or 0):.1f}% | "
                         + ("held" if ok else "**not held**") + " |")
    return "\n".join(lines)


def write_readme(lat: dict[str, Any] | None, qual: dict[str, Any] | None) -> None:
    from metaerr_edge._fileio import atomic_write_text

    parts = [BEGIN, "", "Generated by `python benchmarks/quantization.py` from `results/quantization_*.json`.", ""]
    parts += ["#### Targets", "", targets_markdown(lat, qual), ""]
    if qual:
        choice = choose_tail(qual["rows"])
        parts += ["#### Default score tail (chosen on the calibration split)", "",
                  f"Defer flips at the FP32 threshold, summed over runs: tail in float {choice['flips']['int8']:.4f}, "
                  f"tail quantized {choice['flips']['int8,tail-quantized']:.4f}; largest tie {choice['largest_tie']['int8']:.4f} "
                  f"vs {choice['largest_tie']['int8,tail-quantized']:.4f}. Rule's choice: **{choice['chosen']}**.", "",
                  "#### Default INT8 setting (chosen on the calibration split)", "",
                  "Label agreement with FP32 on calib, summed over runs: " + ", ".join(
                      f"{m} {v:.4f}" for m, v in choose_method(qual["rows"])["label_agreement_sum"].items())
                  + f". Rule's choice: **{choose_method(qual['rows'])['chosen']}**.", "",
                  "#### Does the reduced graph still know when it is wrong? (test split, after recalibration to 90% coverage)",
                  "", quality_markdown(qual), ""]
    if lat:
        parts += ["#### Latency, INT8 vs FP32 (ONNX Runtime CPU)", "", latency_markdown(lat), ""]
    parts.append(END)
    text = README.read_text()
    block = "\n".join(parts)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Reduced precision\n\n" + block + "\n"
    atomic_write_text(README, text)


def main(argv: list[str] | None = None) -> int:
    from metaerr_edge._fileio import atomic_write_text, dumps_json, loads_json

    args = parse_args(argv)
    lat_path, q_path = RESULTS / "quantization_latency_cpu.json", RESULTS / "quantization_quality.json"
    if not args.readme_only:
        import torch

        torch.set_num_threads(args.threads)
        if args.part in ("latency", "both"):
            lat = run_latency(args)
            atomic_write_text(lat_path, dumps_json(lat, indent=1))
            atomic_write_text(lat_path.with_suffix(".md"), latency_markdown(lat) + "\n")
        if args.part in ("quality", "both"):
            qual = run_quality(args)
            atomic_write_text(q_path, dumps_json(qual, indent=1))
            atomic_write_text(q_path.with_suffix(".md"), quality_markdown(qual) + "\n")
    lat = loads_json(lat_path.read_text()) if lat_path.is_file() else None
    qual = loads_json(q_path.read_text()) if q_path.is_file() else None
    if args.readme:
        write_readme(lat, qual)
    print(targets_markdown(lat, qual))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
