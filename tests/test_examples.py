"""Every script in examples/ runs as is, in its --fast mode, as a user would run it.

Each example runs as a subprocess (``sys.executable``, cwd = a temporary folder) and the tests
assert on its real output. One trained + exported digits model (train_and_export.py --fast) is
shared by the train and edge-loop tests. About 30 s of CPU time in all.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 300  # generous: the shared CI machine can be slow; the scripts take ~5-15 s of CPU each
N_FRAMES = 40

# Runs a script like `python script.py ARGS`, but with the training stack made unimportable: a
# meta-path finder refuses torch, torchvision and onnx, and sys.modules is checked at the end.
NO_TORCH_RUNNER = """
import runpy, sys
BLOCKED = ("torch", "torchvision", "onnx")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked by test_examples: {name}")
        return None
sys.meta_path.insert(0, Block())
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    print("IMPORTED:", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def run_example(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{args[0]} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
                    f"--- stderr\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """train_and_export.py --fast with --dump-frames: (its cwd, its stdout)."""
    cwd = tmp_path_factory.mktemp("train_and_export")
    proc = run_example([str(EXAMPLES / "train_and_export.py"), "--fast", "--dump-frames", "frames",
                        "--n-frames", str(N_FRAMES)], cwd)
    return cwd, proc.stdout


def test_train_and_export_evaluates_exports_and_verifies(trained) -> None:
    cwd, out = trained
    assert "| score | AUROC [95% CI] | AUPR-Err |" in out
    assert re.search(r"^\| metaerr\[probs\] \| (\*\*)?[01]\.\d{4} \[", out, re.MULTILINE)
    assert re.search(r"^\| msp \| (\*\*)?[01]\.\d{4} \[", out, re.MULTILINE)
    assert "### Parity PASSED: `model.onnx`" in out
    assert "model:      runs/digits/model.onnx" in out
    assert (cwd / "runs/digits/model.onnx").stat().st_size > 1000
    assert (cwd / "runs/digits/metrics.json").is_file()
    frames = sorted((cwd / "frames").glob("frame_*_label-*.png"))
    assert len(frames) == N_FRAMES


def test_edge_loop_runs_without_torch(trained) -> None:
    cwd, _ = trained
    proc = run_example(["-c", NO_TORCH_RUNNER, str(EXAMPLES / "edge_loop.py"), "runs/digits/model.onnx", "frames",
                        "--max-frames", "12", "--backend", "onnxruntime"], cwd)
    out = proc.stdout
    assert len(re.findall(r"^frame +\d+ frame_\d{4}_label-\d\.png +label=\S+ +score=0\.\d{3}  (ACCEPT|DEFER )",
                          out, re.MULTILINE)) == 12
    m = re.search(r"^summary: 12 frames, deferral rate (\d\.\d{3}) \((\d+) deferred\), latency mean [\d.]+ ms, "
                  r"p50 [\d.]+ ms, p99 [\d.]+ ms$", out, re.MULTILINE)
    assert m, out
    assert float(m.group(1)) == pytest.approx(int(m.group(2)) / 12, abs=1e-3)
    assert "backend used: onnxruntime (CPUExecutionProvider)" in out
    assert "runtime-only check passed" in out
    assert "IMPORTED: []" in out


def test_edge_loop_auto_reports_its_fallbacks(trained) -> None:
    cwd, _ = trained
    proc = run_example([str(EXAMPLES / "edge_loop.py"), "runs/digits/model.onnx", "frames", "--fast"], cwd)
    out = proc.stdout
    assert re.search(r"^summary: 32 frames, deferral rate \d\.\d{3} ", out, re.MULTILINE), out
    assert re.search(r"^accuracy \(labels from file names\): all [\d.]+ of 32, accepted ", out, re.MULTILINE)
    assert "backend used: " in out
    if importlib.util.find_spec("tensorrt") is None:  # auto must say that TensorRT was tried and why it failed
        assert "fallback: tensorrt unavailable: TensorRT is not importable" in out
    assert "runtime-only check passed" in out


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_edge_loop_explicit_backend_unavailable_is_a_clear_error(trained) -> None:
    cwd, _ = trained
    proc = run_example([str(EXAMPLES / "edge_loop.py"), "runs/digits/model.onnx", "frames", "--fast",
                        "--backend", "tensorrt"], cwd, check=False)
    assert proc.returncode != 0
    assert "backend 'tensorrt' cannot run here: TensorRT is not importable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bring_your_own_model(tmp_path) -> None:
    out = run_example([str(EXAMPLES / "bring_your_own_model.py"), "--fast"], tmp_path).stdout
    before = re.search(r"weights sha256 before MetaErr: ([0-9a-f]{16})", out).group(1)
    assert out.count(f"{before} (unchanged)") == 2  # after MetaErr.fit, after fuse + export
    assert re.search(r"^\| metaerr \| 0\.\d{4} \| ", out, re.MULTILINE)
    assert re.search(r"^\| msp +\| 0\.\d{4} \| ", out, re.MULTILINE)
    assert "labels agree with the PyTorch model on 100.00% of the test split" in out
    assert (tmp_path / "byom/model.onnx").is_file()


def test_defer_to_fallback(tmp_path) -> None:
    out = run_example([str(EXAMPLES / "defer_to_fallback.py"), "--fast"], tmp_path).stdout
    assert re.search(r"^SGR threshold on calib \(n=\d+", out, re.MULTILINE)
    for name in ("device  ", "fallback"):
        assert re.search(rf"^latency {name} \(onnxruntime, batch 1\): mean [\d.]+ ms, p50 [\d.]+ ms, p99 [\d.]+ ms", out, re.MULTILINE)
    assert "| policy                             | threshold | deferral | system acc | mean ms |   p99 ms |" in out
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^\| ([A-Za-z][^|]+)\| +(\S+) \| +([\d.]+) \| +([\d.]+) \| +([\d.]+) \| +([\d.]+) \|$", out, re.MULTILINE)}
    assert float(rows["always on-device"][1]) == 0.0
    assert float(rows["always fallback"][1]) == 1.0
    assert any(name.startswith("MetaErr deferral (SGR r*=") for name in rows)
    assert "MSP deferral (same calib coverage)" in rows
    assert "calibration sweep (sweep_tradeoff)" in out
    assert (tmp_path / "runs/fallback/device.onnx").is_file() and (tmp_path / "runs/fallback/fallback.onnx").is_file()
