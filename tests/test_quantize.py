"""Reduced precision: ``metaerr-edge quantize`` (INT8 QDQ, FP16), its contract, the recalibrated
threshold, ``verify`` against FP32, ``bench`` of several graphs, and the refusals."""

from __future__ import annotations

import json
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from metaerr_edge.bench import load_json
from metaerr_edge.cli import main
from metaerr_edge.contract import read_contract
from metaerr_edge.contract.spec import Contract, InputSpec, dataset_feed, random_inputs
from metaerr_edge.data.labels import error_labels
from metaerr_edge.decide import threshold_for_coverage
from metaerr_edge.errors import ConfigError, InputError
from metaerr_edge.fuse.export import export_run
from metaerr_edge.fuse.quantize import convert_fp16, quantize_int8, score_tail

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fast legacy exporter, on purpose
FAST = ["--warmup-s", "0", "--duration-s", "0.02", "--min-iters", "3", "--interleave", "1", "--quiet"]


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    """The digits run's probs head as an FP32 fused graph."""
    path = tmp_path_factory.mktemp("quantize") / "model.onnx"
    export_run(digits_run, path, mode="probs", dynamo=False)
    return path


@pytest.fixture(scope="module")
def int8(exported, digits_run):
    """``metaerr-edge quantize --int8`` of it (recalibrated), as the CLI writes it."""
    out = exported.with_name("model.int8.onnx")
    assert main(["quantize", str(exported), "--int8", "--run", str(digits_run.path), "-o", str(out)]) == 0
    return out


def _ops_feeding(model: onnx.ModelProto, op_type: str) -> set[str]:
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    return {producer.get(i, "input") for n in model.graph.node if n.op_type == op_type for i in n.input[:1]}


def _quantized_output(model: onnx.ModelProto, op_type: str) -> bool:
    """Does a QuantizeLinear read the output of an ``op_type`` node?"""
    outs = {o for n in model.graph.node if n.op_type == op_type for o in n.output}
    return any(n.op_type == "QuantizeLinear" and n.input[0] in outs for n in model.graph.node)


def test_the_score_tail_is_softmax_onwards_and_the_head(exported):
    model = onnx.load(str(exported))
    tail = set(score_tail(model))
    ops = {n.name: n.op_type for n in model.graph.node}
    assert {ops[n] for n in tail} >= {"Softmax", "ArgMax", "Sigmoid", "Greater", "Gemm"}
    base_convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert base_convs and not tail & {n.name for n in base_convs}  # the base's convolutions are quantized
    head = [n.name for n in model.graph.node if any(i.startswith("meta.head.") for i in n.input)]
    assert head and set(head) <= tail
    base_gemm = [n.name for n in model.graph.node if "base.classifier.weight" in n.input or
                 any(i.startswith("base.") and n.op_type == "Gemm" for i in n.input)]
    assert not set(base_gemm) & tail  # the base's classifier is part of the base


def test_int8_contract_and_graph(int8, exported):
    contract = read_contract(int8)
    p = contract.precision
    assert p["name"] == "int8" and p["format"] == "QDQ" and p["target"] == "onnxruntime" and p["tail"] == "float"
    assert p["calibration"]["split"] == "meta_train" and p["calibration"]["method"] == "minmax"
    assert p["calibration"]["n"] > 0 and p["kept_float"] and p["recalibrated"] is True
    assert p["reduce_range"] is True  # 7-bit weights by default for ONNX Runtime (x86 int16 saturation)
    source = read_contract(exported)
    assert p["source"]["threshold"] == source.threshold.value and p["source"]["graph_sha256"] == source.meta["graph_sha256"]
    assert contract.meta["graph_sha256"] != source.meta["graph_sha256"]  # the contract names its own graph
    assert contract.meta["run"] == source.meta["run"] and contract.versions["onnxruntime"] == ort.__version__
    model = onnx.load(str(int8))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3
    assert not any(_quantized_output(model, op) for op in ("Softmax", "Sigmoid", "Log"))  # the tail is float
    quantized = {q.input[0] for q in model.graph.node if q.op_type == "QuantizeLinear"}
    head = [n for n in model.graph.node if n.op_type == "Gemm" and any(i.startswith("meta.head.") for i in n.input)]
    assert head and not any(i in quantized for n in head for i in [*n.input, *n.output])  # float weights and outputs
    assert _ops_feeding(model, "Sigmoid") != {"DequantizeLinear"}
    assert _ops_feeding(model, "Conv") == {"DequantizeLinear"}  # the convolutions read quantized activations
    assert int8.stat().st_size < exported.stat().st_size


def test_recalibrated_threshold_is_the_int8_graphs_own(int8, digits_run):
    contract = read_contract(int8)
    images, labels = digits_run.split("calib")
    sess = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    label, _, score, _ = sess.run(None, {"image": dataset_feed(contract.input, images)})
    expected = threshold_for_coverage(score, error_labels(label, labels), 0.9)
    assert contract.threshold.method == "coverage" and contract.threshold.target_coverage == 0.9
    assert contract.threshold.value == pytest.approx(expected.value)
    assert contract.threshold.achieved_coverage == pytest.approx(expected.achieved_coverage)
    assert abs(contract.threshold.achieved_coverage - 0.9) <= 0.02


def test_verify_reports_int8_against_fp32(int8, digits_run, tmp_path, capsys):
    out = tmp_path / "verify.json"
    code = main(["verify", str(int8), "--run", str(digits_run.path), "--json-out", str(out)])
    report = json.loads(out.read_text())
    assert "INT8 vs FP32" in capsys.readouterr().out
    n_test = len(digits_run.split("test")[1])
    assert report["precision"] == "int8" and report["n"] == n_test  # the whole test split by default
    assert report["label_agreement"] >= 0.97 and report["auroc"]["fp32"] - report["auroc"]["int8"] <= 0.02
    assert 0 < report["max_abs_score_diff"] < 1 and report["p99_abs_score_diff"] <= report["max_abs_score_diff"]
    assert report["distinct_scores"]["int8"] > 10 and 0 <= report["flips_at_fp32_threshold"] <= 0.2
    assert report["calibration"]["recalibrated"] is True
    rule = report["label_agreement"] >= 0.99 and report["auroc"]["fp32"] - report["auroc"]["int8"] <= 0.005
    assert report["passed"] == rule and code == (0 if rule else 1)
    # the tolerances decide the exit code: the strictest ones pass only a perfect copy
    strict = main(["verify", str(int8), "--run", str(digits_run.path), "--max-auroc-drop", "0",
                   "--min-label-agreement", "1"])
    perfect = report["label_agreement"] == 1.0 and report["auroc"]["int8"] >= report["auroc"]["fp32"]
    assert strict == (0 if perfect else 1)


def test_verify_edge_cases(int8, digits_run):
    from metaerr_edge.fuse.verify import verify_precision

    with pytest.raises(InputError, match="no test images"):
        verify_precision(int8, digits_run, n=0)
    labels = digits_run.split("test")[1]
    # the first image alone: one class of outcome, so no AUROC; the verdict rests on the labels
    one = verify_precision(int8, digits_run, n=1)
    assert one.n == 1 and np.isnan(one.auroc["fp32"]) and one.passed == (one.label_agreement >= 0.99)
    assert "not measurable" in one.to_markdown() and len(labels) > 1
    with pytest.raises(ConfigError, match="is an FP32 graph"):
        verify_precision(int8.with_name("model.onnx"), digits_run)


def test_quantized_tail_coarsens_the_score(exported, digits_run, tmp_path):
    images = dataset_feed(read_contract(exported).input, digits_run.split("meta_train")[0])
    kept = quantize_int8(exported, tmp_path / "float_tail.onnx", images, tail="float")
    flat = quantize_int8(exported, tmp_path / "int8_tail.onnx", images, tail="quantized")
    assert kept.kept_float and flat.kept_float == ()
    model = onnx.load(str(flat.path))
    assert _quantized_output(model, "Softmax")  # ONNX Runtime's default quantizes the probabilities too
    test = dataset_feed(read_contract(exported).input, digits_run.split("test")[0])
    scores = {k: ort.InferenceSession(str(r.path), providers=["CPUExecutionProvider"]).run(None, {"image": test})[2]
              for k, r in (("float", kept), ("quantized", flat))}
    assert len(np.unique(scores["quantized"])) < len(np.unique(scores["float"]))


def test_tensorrt_flavour_is_symmetric(exported, int8, digits_run, tmp_path):
    images = dataset_feed(read_contract(exported).input, digits_run.split("meta_train")[0][:64])
    report = quantize_int8(exported, tmp_path / "trt.onnx", images, target="tensorrt")
    assert report.contract.precision["target"] == "tensorrt" and "symmetric" in report.contract.precision["activations"]
    model = onnx.load(str(report.path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(np.all(z == 0) and z.dtype == np.int8 for z in zero_points)
    default = onnx.load(str(int8))  # the onnxruntime flavour: uint8 activations
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in default.graph.initializer}
    act_zero_points = [inits[n.input[2]] for n in default.graph.node if n.op_type == "QuantizeLinear"
                       and n.input[0] not in inits and len(n.input) > 2]
    assert act_zero_points and all(z.dtype == np.uint8 for z in act_zero_points)


def test_fp16_graph_runs_and_verifies(exported, digits_run, tmp_path, capsys):
    out = tmp_path / "model.fp16.onnx"
    assert main(["quantize", str(exported), "--fp16", "--run", str(digits_run.path), "-o", str(out)]) == 0
    contract = read_contract(out)
    assert contract.precision["name"] == "fp16" and contract.precision["recalibrated"] is True
    model = onnx.load(str(out))
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types["defer_threshold"] == onnx.TensorProto.FLOAT  # the tail stays float32
    assert onnx.TensorProto.FLOAT16 in types.values()
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    capsys.readouterr()
    assert main(["verify", str(out), "--run", str(digits_run.path)]) == 0  # ONNX Runtime 1.32's CPU provider runs it
    text = capsys.readouterr().out
    assert "FP16 vs FP32 PASSED" in text


def test_int8_without_calibration_images_is_refused(exported, tmp_path, capsys):
    assert main(["quantize", str(exported), "--int8", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--int8 needs calibration images" in err and "--run RUN" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()
    spec = read_contract(exported).input
    with pytest.raises(InputError, match="no calibration images"):
        quantize_int8(exported, tmp_path / "x.onnx", random_inputs(spec, 1)[:0])
    with pytest.raises(InputError, match="calibration images are uint8"):
        quantize_int8(exported, tmp_path / "x.onnx", (random_inputs(spec, 4) * 255).astype(np.uint8))
    assert not (tmp_path / "x.onnx").exists()


def test_refusals(exported, int8, digits_run, tmp_path, capsys):
    from metaerr_edge.fuse.quantize import calibration_images

    for split in ("test", "calib"):
        with pytest.raises(ConfigError, match="not '" + split):
            calibration_images(digits_run, read_contract(exported), split)
    with pytest.raises(ConfigError, match="is the source model itself"):
        convert_fp16(exported, exported)
    with pytest.raises(ConfigError, match="already int8"):
        convert_fp16(int8, tmp_path / "again.onnx")
    with pytest.raises(ConfigError, match="tail must be one of"):
        convert_fp16(exported, tmp_path / "x.onnx", tail="half")
    assert main(["quantize", str(exported), "--fp16", "--per-channel", "-o", str(tmp_path / "y.onnx")]) == 2
    assert "INT8 settings" in capsys.readouterr().err
    assert main(["quantize", str(exported), "--int8", "--fp16"]) == 2  # one precision


def test_fp16_without_a_run_keeps_the_fp32_threshold(exported, tmp_path, capsys):
    out = tmp_path / "m.fp16.onnx"
    assert main(["quantize", str(exported), "--fp16", "-o", str(out)]) == 0
    assert "kept the FP32 threshold" in capsys.readouterr().err
    contract = read_contract(out)
    assert contract.threshold == read_contract(exported).threshold and contract.precision["recalibrated"] is False


def test_contracts_without_precision_read_as_fp32():
    contract = Contract(input=InputSpec(), classes=("a", "b"))
    raw = json.loads(contract.to_json())
    assert raw["precision"] == {"name": "fp32"}
    del raw["precision"]  # a file exported before reduced precision
    assert Contract.from_json(json.dumps(raw)).precision_name == "fp32"
    raw["precision"] = {"name": "int4"}
    with pytest.raises(Exception, match="precision.name is 'int4'"):
        Contract.from_json(json.dumps(raw))


def test_bench_times_fp32_and_int8_and_their_bases_side_by_side(exported, int8, tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", str(exported), str(int8), "--base-alone", "--batch-sizes", "1", "--threads", "1", *FAST, "-o", str(out)]
    assert main(argv) == 0
    report = load_json(out / "bench.json")
    assert [r.name for r in report.results] == ["fused[fp32]/onnxruntime", "base[fp32]/onnxruntime",
                                                "fused[int8]/onnxruntime", "base[int8]/onnxruntime"]
    assert {(r["a"], r["b"]) for r in report.ratios} == {
        ("fused[int8]/onnxruntime", "fused[fp32]/onnxruntime"), ("base[int8]/onnxruntime", "base[fp32]/onnxruntime"),
        ("fused[fp32]/onnxruntime", "base[fp32]/onnxruntime"), ("fused[int8]/onnxruntime", "base[int8]/onnxruntime")}
    assert all(r.host.iterations >= 3 for r in report.results)


@pytest.fixture(scope="module")
def nhwc(digits_run, tmp_path_factory):
    """The same head exported for uint8 NHWC camera frames."""
    path = tmp_path_factory.mktemp("nhwc") / "nhwc.onnx"
    export_run(digits_run, path, mode="probs", layout="NHWC", dynamo=False)
    return path


def test_uint8_camera_frames_quantize_and_verify(nhwc, digits_run, tmp_path, capsys):
    out = tmp_path / "nhwc.int8.onnx"
    assert main(["quantize", str(nhwc), "--int8", "--run", str(digits_run.path), "-o", str(out)]) == 0
    contract = read_contract(out)
    assert contract.input.layout == "NHWC" and contract.input.dtype == "uint8" and contract.precision["recalibrated"]
    capsys.readouterr()
    code = main(["verify", str(out), "--run", str(digits_run.path), "--min-label-agreement", "0.95", "--max-auroc-drop", "0.05"])
    assert code == 0 and "INT8 vs FP32 PASSED" in capsys.readouterr().out


def test_bench_refuses_graphs_of_different_inputs(exported, nhwc, tmp_path, capsys):
    assert main(["bench", str(exported), str(nhwc), *FAST, "-o", str(tmp_path / "b")]) == 2
    assert "bench compares graphs of one input" in capsys.readouterr().err


def test_bench_with_torch_needs_an_fp32_graph(int8, tmp_path, capsys):
    assert main(["bench", str(int8), "--backend", "onnxruntime,torch", "--run", str(tmp_path), *FAST]) == 2
    assert "runs the run's FP32 model" in capsys.readouterr().err


def test_set_threshold_by_hand_is_not_a_recalibration(int8, tmp_path):
    from metaerr_edge.contract.spec import ThresholdSpec
    from metaerr_edge.fuse.modelfile import set_threshold

    out = tmp_path / "manual.onnx"
    contract = set_threshold(int8, ThresholdSpec(0.3, "manual"), out)
    assert contract.precision["recalibrated"] is False and read_contract(out).threshold.value == pytest.approx(0.3)
    # writing a fitted-looking spec back by hand is still not a recalibration on this graph
    spec = read_contract(int8).threshold
    assert set_threshold(int8, spec, tmp_path / "copy.onnx").precision["recalibrated"] is False


def test_recalibration_target_follows_the_fp32_contract():
    from metaerr_edge.fuse.quantize import recalibration_target
    from metaerr_edge.contract.spec import ThresholdSpec

    assert recalibration_target(ThresholdSpec(0.3, "risk", target_risk=0.02, delta=0.1)) == {"risk": 0.02, "delta": 0.1}
    assert recalibration_target(ThresholdSpec(0.3, "coverage", target_coverage=0.8)) == {"coverage": 0.8}
    assert recalibration_target(ThresholdSpec(0.3, "manual")) == {"coverage": 0.9}


def test_a_failed_recalibration_exits_1_and_says_so(exported, digits_run, tmp_path, monkeypatch, capsys, caplog):
    from metaerr_edge.errors import ContractError
    from metaerr_edge.fuse import calibrate

    def refuse(*args, **kwargs):
        raise ContractError("ONNX Runtime cannot load this file (NOT_IMPLEMENTED: Conv(float16))")

    monkeypatch.setattr(calibrate, "calibrate_model", refuse)
    out = tmp_path / "m.fp16.onnx"
    assert main(["quantize", str(exported), "--fp16", "--run", str(digits_run.path), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "could not recalibrate" in caplog.text and "metaerr-edge calibrate" in caplog.text
    assert json.loads(captured.out)["recalibrated"] is False and out.is_file()  # a complete graph, FP32 threshold
    assert read_contract(out).precision["recalibrated"] is False


def test_fp16_with_the_tail_converted_keeps_a_rewritable_threshold(exported, digits_run, tmp_path):
    out = tmp_path / "all.fp16.onnx"
    report = convert_fp16(exported, out, tail="quantized")
    model = onnx.load(str(out))
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert report.kept_float == () and types["defer_threshold"] == onnx.TensorProto.FLOAT16
    assert [o.type.tensor_type.elem_type for o in model.graph.output if o.name == "failure_score"] == [onnx.TensorProto.FLOAT]
    from metaerr_edge.fuse.calibrate import calibrate_model

    choice = calibrate_model(out, digits_run, coverage=0.9)
    contract = read_contract(out)
    assert contract.threshold.value == pytest.approx(choice.value, abs=1e-3) and contract.precision["recalibrated"]


def test_int8_settings_with_fp16_are_refused(exported, tmp_path, capsys):
    assert main(["quantize", str(exported), "--fp16", "--target", "tensorrt", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--target: INT8 settings" in capsys.readouterr().err
    assert main(["quantize", str(exported), "--fp16", "--calibration-n", "64", "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["quantize", str(exported), "--fp16", "--no-reduce-range", "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


def test_tensorrt_flavour_from_the_cli(exported, int8, digits_run, tmp_path):
    out = tmp_path / "trt.int8.onnx"
    argv = ["quantize", str(exported), "--int8", "--target", "tensorrt", "--calibration-n", "100", "--seed", "3",
            "--run", str(digits_run.path), "-o", str(out)]
    assert main(argv) == 0
    p = read_contract(out).precision
    assert p["target"] == "tensorrt" and p["activations"] == "int8 symmetric" and p["reduce_range"] is False
    assert p["calibration"] == {"method": "minmax", "n": 100, "split": "meta_train", "seed": 3}
    from metaerr_edge.fuse.verify import verify_precision

    # checked on its Q/DQ semantics (what TensorRT computes), not on ONNX Runtime's x86 int8 kernels
    assert "optimisations off" in verify_precision(out, digits_run).runtime
    assert "fused int8" in verify_precision(exported.with_name("model.int8.onnx"), digits_run).runtime
    # and its threshold is fitted on those semantics too
    contract = read_contract(out)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    images, labels = digits_run.split("calib")
    label, _, score, _ = ort.InferenceSession(str(out), opts).run(None, {"image": dataset_feed(contract.input, images)})
    assert contract.threshold.value == pytest.approx(threshold_for_coverage(score, error_labels(label, labels), 0.9).value)


def test_reduce_range_uses_7_bit_weights(exported, digits_run, tmp_path):
    out = tmp_path / "rr.onnx"
    assert main(["quantize", str(exported), "--int8", "--target", "tensorrt", "--reduce-range", "--run",
                 str(digits_run.path), "-o", str(out)]) == 0  # asked for explicitly (off by default for TensorRT)
    assert read_contract(out).precision["reduce_range"] is True
    model = onnx.load(str(out))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim > 1]
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)  # 8-bit would reach +-127
    assert max(int(np.abs(w.astype(int)).max()) for w in weights) > 32  # and the 7 bits are used


def test_bench_names_two_graphs_of_one_precision_apart(exported, int8, tmp_path):
    other = tmp_path / "other" / "model.int8.onnx"
    other.parent.mkdir()
    other.write_bytes(int8.read_bytes())
    out = tmp_path / "bench"
    assert main(["bench", str(int8), str(other), str(int8), "--batch-sizes", "1", *FAST, "-o", str(out)]) == 0
    names = [r.name for r in load_json(out / "bench.json").results]
    assert names == ["fused[model.int8-1]/onnxruntime", "fused[model.int8-2]/onnxruntime"]  # the repeat is timed once
