"""The README is true: its CI commands exist, every command line in it parses with today's CLI, its
Python API example runs, and the files it links to exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from metaerr_edge.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str | None = None) -> list[str]:
    """Bodies of the fenced code blocks (``lang=None``: every block)."""
    pattern = r"```(\w*)\n(.*?)```"
    return [body for kind, body in re.findall(pattern, README, re.S) if lang is None or kind == lang]


def _command_lines() -> list[str]:
    """Every ``metaerr-edge ...`` invocation in the README's code blocks, continuation lines joined."""
    found = []
    for body in _blocks():
        text = body.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().removeprefix("$ ")
            for part in line.split("&&"):
                part = part.split("#")[0].split("|")[0].strip()
                if part.startswith("metaerr-edge "):
                    found.append(part)
    return found


def test_ci_reads_the_two_commands_from_the_readme():
    install = re.search(r"<!-- ci: install -->\s*```bash\n(.*?)```", README, re.S)
    test = re.search(r"<!-- ci: test -->\s*```bash\n(.*?)```", README, re.S)
    assert install and "pip install -e '.[dev]'" in install.group(1) and "metaerr-edge demo" in install.group(1)
    assert test and test.group(1).strip() == "python3 -m pytest -q"
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci and "<!-- ci: $1 -->" in ci


def test_the_readme_has_command_lines_to_check():
    commands = {line.split()[1] for line in _command_lines()}
    assert {"demo", "train", "evaluate", "export", "verify", "inspect", "calibrate", "predict", "bench",
            "tradeoff", "ssl"} <= commands


@pytest.mark.parametrize("line", _command_lines())
def test_every_command_line_in_the_readme_parses(line):
    argv = shlex.split(line)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README command does not parse (exit {exc.code}): {line}")


def test_the_python_api_example_runs(tmp_path):
    (code,) = [b for b in _blocks("python") if "open_session" in b]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| metaerr[probs] |" in proc.stdout and "onnxruntime" in proc.stdout
    assert (tmp_path / "runs" / "api" / "model.onnx").is_file()


def test_linked_files_exist():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith("http")]
    assert local, "no local links found"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing


RESULTS_ROWS = {"MSP": "msp", "temperature scaling": "temperature", "TrustScore": "trustscore", "ConfidNet": "confidnet",
                "MetaErr `--preset cheap`": "metaerr[probs@stack]", "MetaErr `--preset robust`": "metaerr[mentor-features@views2]"}
RESULTS_COLUMNS = {"MNIST": "mnist", "Fashion-MNIST": "fashion-mnist", "CIFAR-10 JPEG": "cifar10"}


def test_the_results_table_is_the_committed_benchmark_results():
    """Each cell of the README's failure-prediction table (clean / test-shift mean / OOD mean) is the
    seed mean of the committed results JSON at the precision shown: hand-edited numbers cannot go stale."""
    import json

    import numpy as np

    section = README[README.index("## Results"):]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "score" and set(header[1:]) == set(RESULTS_COLUMNS), header
    checked = 0
    for line in lines[1:]:  # (the |---| line is not among them)
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        name = next((v for k, v in RESULTS_ROWS.items() if cells[0].startswith(k)), None)
        if name is None:
            break  # the table ended
        for column, cell in zip(header[1:], cells[1:]):
            dataset = RESULTS_COLUMNS[column]
            clean = json.loads((REPO / f"benchmarks/results/failure_prediction_{dataset}.json").read_text())
            shifted = [s["summary"][name] for s in json.loads((REPO / f"benchmarks/results/shift_{dataset}.json").read_text())["seeds"].values()]
            want = (round(clean["aggregate"]["scores"][name]["auroc"]["mean"], 4),
                    round(float(np.mean([s["shift_auroc_mean"] for s in shifted])), 3),
                    round(float(np.mean([s["ood_auroc_mean"] for s in shifted])), 3))
            got = tuple(float(x) for x in cell.split(" / "))
            assert got == pytest.approx(want, abs=1e-9), f"README Results, {cells[0]!r} on {column}: {got}, the JSON says {want}"
            checked += 1
    assert checked == len(RESULTS_ROWS) * len(RESULTS_COLUMNS)
