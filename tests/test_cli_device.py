"""The device install runs the CLI: the console entry point in a subprocess where the training stack
cannot be imported.

A device has the core install only (numpy, onnxruntime, pillow). The subprocess gets a
``sitecustomize`` that makes torch, torchvision, onnx, onnxscript, scikit-learn, scipy, matplotlib
and tqdm unimportable (``import torch`` raises ``ModuleNotFoundError`` exactly as where it is not
installed), then runs the ``metaerr-edge`` script of this environment: ``--help``, ``--version``,
every command's ``--help``, ``inspect``, ``predict`` and ``bench`` on ONNX Runtime must work; a
command that needs the training extras must say so in one line, with no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metaerr_edge.cli import COMMANDS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fast legacy exporter, on purpose

BLOCKED = ("torch", "torchvision", "onnx", "onnxscript", "onnxslim", "sklearn", "scipy", "matplotlib", "tqdm")
SITECUSTOMIZE = '''
import sys

BLOCKED = {blocked!r}


class _Absent:
    """Import hook: the training stack is not installed on this 'device'."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Absent)
'''.replace("{{", "{").replace("}}", "}")
SCRIPT = Path(sys.executable).with_name("metaerr-edge")


@pytest.fixture(scope="module")
def device(tmp_path_factory, tiny_model):
    """(run(args) -> CompletedProcess, a fused model, a folder of frames) on a torch-free 'device'."""
    if not SCRIPT.is_file():
        pytest.skip(f"the console script {SCRIPT} is not installed (install the project: pip install -e '.[dev]')")
    from PIL import Image

    root = tmp_path_factory.mktemp("device")
    model = root / "model.onnx"
    shutil.copy(tiny_model[0], model)
    frames = root / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(frames / f"{i}.png")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE.replace("{blocked!r}", repr(BLOCKED)))
    import metaerr_edge

    package_root = Path(metaerr_edge.__file__).resolve().parents[1]  # the same package as this test process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "site"), str(package_root)]),
           "METAERR_EDGE_PROGRESS": ""}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)

    return run, model, frames


def test_the_blocker_really_blocks(device):
    _, model, _ = device
    code = "import numpy, onnxruntime, PIL.Image; import torch"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr  # torch is installed in this environment...
    env = {**os.environ, "PYTHONPATH": str(model.parent / "site")}
    blocked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert blocked.returncode == 1 and "ModuleNotFoundError: No module named 'torch'" in blocked.stderr  # ...not here


def test_help_and_version_need_no_training_stack(device):
    run, _, _ = device
    top = run("--help")
    assert top.returncode == 0, top.stderr
    for name in COMMANDS:
        assert name in top.stdout
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("metaerr-edge 0.")
    for name in COMMANDS:
        sub = run(name, "--help")
        assert sub.returncode == 0 and "usage: metaerr-edge " + name in sub.stdout, (name, sub.stderr[-500:])


def test_help_needs_not_even_pillow(device, tmp_path):
    """Parsing imports no image library either: every --help works where pillow is missing too."""
    run, model, _ = device
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.replace("{blocked!r}", repr((*BLOCKED, "PIL"))))
    import metaerr_edge

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(metaerr_edge.__file__).resolve().parents[1])])}
    probe = subprocess.run([sys.executable, "-c", "import PIL"], capture_output=True, text=True, env=env)
    assert probe.returncode == 1 and "No module named 'PIL'" in probe.stderr  # the blocker works
    for name in ("", *COMMANDS):
        args = [name, "--help"] if name else ["--help"]
        done = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (name, done.stderr[-500:])


def test_inspect_predict_and_bench_run_on_onnxruntime(device):
    run, model, frames = device
    inspected = run("inspect", str(model))
    assert inspected.returncode == 0, inspected.stderr
    assert "opset" in inspected.stdout.lower() and "image" in inspected.stdout

    predicted = run("predict", str(model), str(frames), "--backend", "onnxruntime")
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [Path(r["path"]).name for r in lines] == [f"{i}.png" for i in range(5)]
    assert all(r["class"] in ("a", "b", "c") and r["decision"] in ("ACCEPT", "DEFER") for r in lines)
    assert "Traceback" not in predicted.stderr

    auto = run("predict", str(model), str(frames))  # backend auto: falls back to ONNX Runtime CPU
    assert auto.returncode == 0 and auto.stdout == predicted.stdout
    assert len(auto.stderr.strip().splitlines()) == 1, auto.stderr  # one line, whatever fell back

    out = model.parent / "bench"
    bench = run("bench", str(model), "--batch-sizes", "1,2", "--warmup-s", "0", "--duration-s", "0.02",
                "--min-iters", "3", "--interleave", "1", "--threads", "1", "-o", str(out))
    assert bench.returncode == 0, bench.stderr
    assert json.loads((out / "bench.json").read_text())["results"][0]["name"] == "fused/onnxruntime"
    assert "no plot: matplotlib is not installed" in bench.stderr and not (out / "bench.png").exists()


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "1"],
    ["demo"],
    ["evaluate", "runs/none"],
    ["export", "runs/none", "-o", "x.onnx"],
    ["verify", "MODEL", "--run", "runs/none"],
    ["calibrate", "MODEL", "--run", "runs/none", "--coverage", "0.9"],
    ["quantize", "MODEL", "--int8", "--run", "runs/none"],
    ["quantize", "MODEL", "--fp16"],
    ["ssl", "--rounds", "1"],
    ["tradeoff", "runs/none", "--device-latency-ms", "1", "--fallback-latency-ms", "5", "--fallback-accuracy", "0.9"],
])
def test_training_commands_say_which_extra_they_need(device, argv):
    run, model, _ = device
    proc = run(*[str(model) if a == "MODEL" else a for a in argv])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "not installed" in proc.stderr or "not importable" in proc.stderr, proc.stderr
    assert "pip install 'metaerr-edge[train]'" in proc.stderr, proc.stderr


def test_predict_into_a_closed_pipe_ends_quietly(device):
    run, model, frames = device
    script = run("--version").args[0]
    # 2,000 lines (> a 64 KiB pipe buffer), of which `head` reads one and leaves: predict gets EPIPE.
    paths = " ".join([str(frames)] * 400)
    proc = subprocess.run(f"'{script}' predict '{model}' {paths} --backend onnxruntime --batch-size 1 | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(model.parent / "site")})
    assert proc.stdout.count("\n") == 1 and json.loads(proc.stdout)["path"].endswith("0.png")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
