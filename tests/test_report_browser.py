"""The report as a person sees it: rendered by headless Chromium, screenshotted, and inspected after layout.

Chromium renders the page twice: once to a PNG screenshot (the page is drawn, not blank), and once
with ``--dump-dom`` on a copy that carries a probe script, run on the ``load`` event, which writes
into the DOM what the renderer decided: each section's box, each image's decoded size, and any
resource that failed to load. The report itself holds no script; only the copy does.
Skips where no Chromium exists (``.ci/run`` installs Debian's ``chromium`` when it can).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ALL_SECTIONS
from metaerr_edge.cli import main

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio"]
TIMEOUT_S = 120

PROBE = """<script>
window.addEventListener("load", () => {
  const failed = [];
  for (const e of performance.getEntriesByType("resource")) failed.push(e.name);
  const out = {
    sections: [...document.querySelectorAll("section")].map(s => {
      const r = s.getBoundingClientRect();
      return {id: s.id, h2: s.querySelector("h2")?.textContent, width: r.width, height: r.height};
    }),
    images: [...document.images].map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                                            shownW: i.getBoundingClientRect().width})),
    resources: failed,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("needs Chromium (Debian: apt-get install chromium; .ci/run installs it where apt-get can)")


def run_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def report(full_run, tmp_path_factory) -> tuple[Path, str]:
    browser = chromium()
    out = tmp_path_factory.mktemp("browser") / "report.html"
    assert main(["report", str(full_run["run"]), "--bench", str(full_run["bench"]), "--model", str(full_run["model"]),
                 "-o", str(out)]) == 0
    return out, browser


def test_the_rendered_page_has_every_section_and_every_image(report, tmp_path) -> None:
    path, browser = report
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    proc = run_chromium(browser, tmp_path / "profile", "--virtual-time-budget=5000", "--window-size=1280,900",
                        "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the probe did not run: rc {proc.returncode}, stderr {proc.stderr[-500:]}"
    dom = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert [s["id"] for s in dom["sections"]] == ALL_SECTIONS
    assert all(s["h2"] and s["height"] > 80 and s["width"] > 600 for s in dom["sections"])
    assert len(dom["images"]) == 5
    for img in dom["images"]:  # decoded (a broken data: URI has naturalWidth 0) and laid out
        assert img["complete"] and img["w"] > 300 and img["h"] > 200 and img["shownW"] > 300
    assert dom["resources"] == []  # nothing requested beyond the file itself: no broken reference possible
    assert dom["scrollWidth"] <= dom["innerWidth"]  # wide tables scroll inside their box, not the page


def test_the_screenshot_shows_a_drawn_page(report, tmp_path) -> None:
    from PIL import Image

    path, browser = report
    shot = tmp_path / "top.png"
    proc = run_chromium(browser, tmp_path / "profile", "--window-size=1280,900", f"--screenshot={shot}", path.as_uri())
    assert shot.is_file(), f"no screenshot: rc {proc.returncode}, stderr {proc.stderr[-500:]}"
    with Image.open(shot) as im:
        assert im.size == (1280, 900)
        colours = im.convert("RGB").getcolors(1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and a figure, not a blank or error page
