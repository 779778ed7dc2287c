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
