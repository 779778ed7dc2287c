"""``metaerr-edge report``: one self-contained HTML page, its sections, its errors, and the device-install promise.

The browser test is in test_report_browser.py. Both build from conftest's ``full_run``: a real (small)
digits run evaluated there, its shift evaluation and trade-off sweep, a bench JSON and a fused model file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from metaerr_edge.cli import main
from metaerr_edge.errors import ConfigError, DataError

from conftest import ALL_SECTIONS


class Page(HTMLParser):
    """What a reader of the HTML sees: section ids, images, cells marked best, and any external reference."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.best: list[str] = []
        self.tags: set[str] = set()
        self.refs: list[str] = []
        self._in_best = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "img":
            self.images.append(a["src"])
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("#", "data:")):
                self.refs.append(a[key])
        self._in_best = tag == "td" and a.get("class") == "best"

    def handle_data(self, data):
        if self._in_best:
            self.best.append(data)
            self._in_best = False


def write(full_run: dict[str, Path], name: str, *flags: str) -> tuple[Path, str]:
    out = full_run["root"] / name
    assert main(["report", str(full_run["run"]), *flags, "-o", str(out)]) == 0
    return out, out.read_text(encoding="utf-8")


def test_the_full_report_has_every_section_and_embeds_everything(full_run, capsys) -> None:
    out, text = write(full_run, "full.html", "--bench", str(full_run["bench"]), "--model", str(full_run["model"]))
    assert f"wrote {out}" in capsys.readouterr().out
    page = Page(text)
    assert page.sections == ALL_SECTIONS
    assert page.refs == [] and not {"script", "link", "iframe"} & page.tags  # nothing fetched, nothing run
    assert text.count("How to read this") == len(ALL_SECTIONS)
    assert "<td>always device</td>" in text and "<td>always fallback</td>" in text  # the sweep's two ends, named
    assert '<tr class="meta"><td>recommended</td>' in text  # the recommended point drawn as a highlighted row
    # risk-coverage, generalized risk, shift, latency, trade-off: each a PNG that decodes to a real picture
    from PIL import Image

    assert len(page.images) == 5
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.width > 300 and im.height > 200
            assert len(im.convert("RGB").getcolors(1 << 16) or range(1 << 16)) > 20  # not a blank canvas


def test_the_best_value_of_each_column_is_marked(full_run) -> None:
    _, text = write(full_run, "plain.html")
    metrics = json.loads((full_run["run"] / "metrics.json").read_text())["metrics"]
    best_auroc = max(r["auroc"] for r in metrics.values())
    best_aurc = min(r["aurc"] for r in metrics.values())
    best = Page(text).best
    assert f"{best_auroc:.4f}" in best and f"{1000 * best_aurc:.2f}" in best
    # msp and temperature rank alike: tied bests are all marked, so a tie is visible
    if metrics["msp"]["auroc"] == best_auroc == metrics["temperature"]["auroc"]:
        assert best.count(f"{best_auroc:.4f}") >= 2


def test_sections_appear_only_when_their_data_exists(full_run, tmp_path) -> None:
    bare = tmp_path / "run"
    shutil.copytree(full_run["run"], bare)
    shutil.rmtree(bare / "tradeoff")
    (bare / "shift.json").unlink()
    assert main(["report", str(bare)]) == 0  # default output: RUN/report.html
    assert Page((bare / "report.html").read_text()).sections == ["run", "evaluation", "curves"]
    (bare / "scores.npz").unlink()  # evaluated by an older version: the run's own PNG, and a note
    assert main(["report", str(bare)]) == 0
    text = (bare / "report.html").read_text()
    assert len(Page(text).images) == 1 and "run <code>metaerr-edge evaluate RUN</code> again" in text


def test_bad_inputs_get_one_line_errors(full_run, tmp_path, capsys) -> None:
    from metaerr_edge.report import load_inputs, write_report_html

    with pytest.raises(ConfigError, match="is not a folder"):
        load_inputs(tmp_path / "missing")
    with pytest.raises(ConfigError, match="config.json.*does not exist"):
        load_inputs(tmp_path)
    unevaluated = tmp_path / "unevaluated"
    shutil.copytree(full_run["run"], unevaluated)
    (unevaluated / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="run `metaerr-edge evaluate .*` first"):
        load_inputs(unevaluated)
    stale = tmp_path / "stale"
    shutil.copytree(full_run["run"], stale)
    doc = json.loads((stale / "metrics.json").read_text())
    doc["metrics"].pop("margin")
    (stale / "metrics.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="does not belong to metrics.json"):
        load_inputs(stale)
    (stale / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        load_inputs(stale)
    with pytest.raises(ConfigError, match="is a folder"):
        write_report_html(full_run["run"], tmp_path)
    capsys.readouterr()
    assert main(["report", str(full_run["run"]), "--bench", str(full_run["model"])]) == 2  # a model, not a bench JSON
    err = capsys.readouterr().err.strip()
    assert err.startswith("metaerr-edge report: error:") and "\n" not in err


def test_a_failed_render_leaves_the_previous_report(full_run, tmp_path, monkeypatch) -> None:
    from metaerr_edge import plots

    out = tmp_path / "report.html"
    out.write_text("the previous report")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "plot_risk_coverage", broken)
    with pytest.raises(OSError):
        from metaerr_edge.report import write_report_html

        write_report_html(full_run["run"], out)
    assert out.read_text() == "the previous report" and os.listdir(tmp_path) == ["report.html"]


# A device install: the report must build with torch, torchvision, onnx and scikit-learn unimportable.
NO_TRAINING = """
import sys
BLOCKED = ("torch", "torchvision", "onnx", "sklearn", "scipy")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
from metaerr_edge.cli import main
code = main(sys.argv[1:])
print("IMPORTED:", sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED)))
sys.exit(code)
"""


def test_the_report_needs_no_training_stack(full_run, tmp_path) -> None:
    out = tmp_path / "device.html"
    proc = subprocess.run([sys.executable, "-c", NO_TRAINING, "report", str(full_run["run"]), "--bench", str(full_run["bench"]),
                           "--model", str(full_run["model"]), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED: []" in proc.stdout
    assert Page(out.read_text()).sections == ALL_SECTIONS


def test_the_run_section_names_a_data_parallel_run(full_run) -> None:
    from metaerr_edge.report import sections

    config = json.loads((full_run["run"] / "config.json").read_text())
    metrics = json.loads((full_run["run"] / "metrics.json").read_text())
    one = sections.run_section(config, metrics, "run").body
    config["summary"]["distributed"] = {"world_size": 2, "backend": "gloo"}
    two = sections.run_section(config, metrics, "run").body
    assert "processes" not in one and "0 / cpu, 2 processes (gloo)" in two
