"""The evaluation report as a person sees it: rendered by a real headless browser (Debian's chromium).

The report itself carries no scripts; a copy of it gets one line that writes what the layout measured
into the page title, which `--dump-dom` then prints. Skips where chromium is absent (.ci/run installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from fer_ray.evaluate.run import EvaluateConfig, evaluate_run
from tests.unit.test_report import _make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian package chromium; "
                                                         ".ci/run installs it)")
WIDTH = 1024
PROBE = """<script>window.addEventListener("load", () => {
  const tables = [...document.querySelectorAll("table")];
  const overflow = Math.max(0, ...tables.map(t => t.scrollWidth - t.clientWidth));
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  document.title = ["probe", document.documentElement.scrollWidth, window.innerWidth, overflow, broken,
                    tables.length, document.images.length].join(" ");
});</script>"""


def _chromium(*args: str, cwd) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={cwd}/profile", f"--window-size={WIDTH},2000", "--virtual-time-budget=5000"]
    done = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    run, label_dir = _make_run(str(base))
    evaluate_run(EvaluateConfig(predictions=run, labels=label_dir, output=str(base / "eval"), logits=run,
                                window=64, windows=[0, 4, 64], max_timelines=5))
    return base / "eval"


def test_report_layout_fits_the_page(report_dir):
    page = (report_dir / "report.html").read_text()
    (report_dir / "probe.html").write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _chromium("--dump-dom", (report_dir / "probe.html").as_uri(), cwd=report_dir)
    title = re.search(r"<title>probe ([\d ]+)</title>", dom)
    assert title, "the probe script did not run"
    page_width, window, overflow, broken, tables, images = map(int, title.group(1).split())
    assert page_width <= window == WIDTH  # no horizontal scrolling of the page
    assert overflow == 0  # and no table wider than its box
    assert broken == 0 and images == 5
    assert tables == 8  # summary + overall, per class, per video, Tables 1-4
    text = re.sub(r"<[^>]+>", " ", dom)
    order = [text.index(s) for s in ("Summary", "Majority class", "Chance", "Table 1: baseline, + C-F",
                                     "Table 4: Smooth Predicting window sweep", "Timelines")]
    assert order == sorted(order)  # the summary comes first, tables in the papers' order
    assert "coarse[" not in text and "expr[" not in text  # no raw system strings on the page


def test_report_screenshot_is_not_blank(report_dir):
    shot = report_dir / "shot.png"
    _chromium(f"--screenshot={shot}", (report_dir / "report.html").as_uri(), cwd=report_dir)
    with Image.open(shot) as image:
        assert image.size == (WIDTH, 2000)
        pixels = np.asarray(image.convert("L"))
    assert (pixels < 200).mean() > 0.02  # text, tables and plots, not an empty page
    assert (pixels[:, WIDTH // 2:] < 200).mean() > 0.005  # the right half is used too (plots, wide tables)
