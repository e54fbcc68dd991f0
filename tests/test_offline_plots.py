"""`dvc plots show` draws every chart with no internet: the page DVC writes from the
template of cnnbench.offline_plots, opened in headless Chromium with the network cut."""

import os
import re
import shutil
import subprocess

import pytest

from cnnbench import offline_plots
from conftest import REPO, venv_env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# .ci/run installs Chromium, so under CI (CI set) a missing one fails instead of skipping
pytestmark = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                reason="needs Chromium (Debian: apt-get install chromium)")


@pytest.fixture(autouse=True)
def chromium_present():
    if CHROMIUM is None:
        pytest.fail("Chromium not found: .ci/run installs it (as root: apt-get install chromium)")

OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no request leaves
           "--host-resolver-rules=MAP * ~NOTFOUND"]


def drawn_charts(page) -> dict[str, tuple[int, int]]:
    """{chart id: (width, height) of the Vega drawing in it} once Chromium ran the page."""
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *OFFLINE,
                          "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    charts = {}
    for chart in re.split(r'(?=<div id="[^"]+" class="vega-embed)', dom)[1:]:
        name = re.match(r'<div id="([^"]+)"', chart)[1]
        size = re.search(r'<svg[^>]*class="marks"[^>]*width="(\d+)" height="(\d+)"', chart.split("</svg>")[0])
        charts[name] = (int(size[1]), int(size[2])) if size else (0, 0)
    return charts


def test_dvc_plots_show_draws_every_chart_offline(tmp_path):
    assert offline_plots.main(["--dvc-dir", str(REPO / ".dvc")]) == 0  # what `make install` does
    out = tmp_path / "plots"
    subprocess.run(["dvc", "plots", "show", "-o", str(out)], cwd=REPO, env=venv_env(), check=True,
                   capture_output=True, text=True, timeout=300)
    html = (out / "index.html").read_text()
    assert not re.search(r'<script[^>]+src="https?:', html)  # nothing to fetch
    expected = re.findall(r'<div id = "([^"]+)"', html)
    assert len(expected) >= 30  # curves, timings and confusion of eleven models
    charts = drawn_charts(out / "index.html")
    assert set(charts) == set(expected)
    blank = [name for name, (w, h) in charts.items() if not (w > 50 and h > 50)]
    assert not blank, f"charts not drawn offline: {blank}"


def test_dvcs_own_page_is_blank_offline_so_the_check_above_can_fail(tmp_path):
    from dvc_render.html import PAGE_HTML  # DVC's page: Vega from a CDN

    template = tmp_path / "cdn.html"
    template.write_text(PAGE_HTML)
    out = tmp_path / "plots"
    subprocess.run(["dvc", "plots", "show", "--html-template", str(template), "-o", str(out), "dvc.yaml"],
                   cwd=REPO, env=venv_env(), check=True, capture_output=True, text=True, timeout=300)
    charts = drawn_charts(out / "index.html")
    assert charts == {}  # vegaEmbed never ran: no chart at all
