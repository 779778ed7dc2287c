"""The package's shape: names that shadow nothing, and imports that point one way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "metaerr_edge"


def test_no_module_of_the_package_shadows_the_standard_library():
    """Running a file of the package as a script (``python metaerr_edge/cli.py``) puts its folder first
    on sys.path: a module there named like a standard-library one (``ssl``, ``io``, ``inspect``) then
    replaces it for every import, torch's included. Checked for the package root and the commands."""
    for folder in (PACKAGE, PACKAGE / "commands"):
        names = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        shadowing = sorted(names & set(sys.stdlib_module_names))
        assert not shadowing, f"{folder.relative_to(PACKAGE.parent)} has modules named like the standard library's: {shadowing}"


def test_the_cli_runs_as_a_script_file():
    for argv in (["--help"], ["ssl", "--help"]):
        done = subprocess.run([sys.executable, str(PACKAGE / "cli.py"), *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-800:]
        assert done.stdout.startswith("usage: metaerr-edge"), done.stdout[:200]
