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


def _type_checking_imports() -> dict[str, str]:
    """{name: module} of the ``if TYPE_CHECKING:`` block of metaerr_edge/__init__.py."""
    import ast

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_the_public_api_is_typed_and_every_name_resolves():
    import metaerr_edge

    assert _type_checking_imports() == metaerr_edge._LAZY  # what type checkers see is what users get
    for name, module in metaerr_edge._LAZY.items():
        value = getattr(metaerr_edge, name)
        assert value is getattr(__import__(module, fromlist=[name]), name), name
    assert set(metaerr_edge.__all__) >= set(metaerr_edge._LAZY) and dir(metaerr_edge) == sorted(metaerr_edge.__all__)


def test_importing_the_package_and_the_runtime_stays_light():
    code = ("import sys, metaerr_edge\nfrom metaerr_edge import open_session, read_contract, threshold_for_risk\n"
            "heavy = sorted(m for m in ('torch', 'onnx', 'torchvision', 'sklearn', 'matplotlib') if m in sys.modules)\n"
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout.strip() == "", f"the runtime entry points pulled in {done.stdout.strip()}"


def test_readme_and_examples_import_public_names_from_the_package():
    """A user copies these: each name the package exports comes from ``metaerr_edge`` itself, not a deep path."""
    import ast
    import re

    import metaerr_edge

    root = PACKAGE.parent
    sources = {p.name: p.read_text() for p in (root / "examples").glob("*.py")}
    readme = (root / "README.md").read_text()
    sources["README.md"] = "\n".join(re.findall(r"```python\n(.*?)```", readme, flags=re.S))
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("metaerr_edge."):
                deep = [a.name for a in node.names if a.name in metaerr_edge._LAZY]
                assert not deep, f"{where}: import {deep} from metaerr_edge, not {node.module}"


def test_the_readme_layout_map_names_every_top_level_module():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    entries = {line.split()[0] for line in layout.splitlines()[3:] if line.startswith("  ")}
    modules = {p.name for p in PACKAGE.glob("*.py") if p.name != "__main__.py"}
    packages = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules | packages <= entries, f"README's layout map misses {sorted((modules | packages) - entries)}"
    assert entries <= modules | packages, f"README's layout map names what is not there: {sorted(entries - modules - packages)}"
