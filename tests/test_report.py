"""The report of a smoke run: content, rounding, figures, partial data, compare, and a headless browser."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, suite

ARTIFACTS = ROOT / "test-artifacts"
FIGURE_DATA = re.compile(r'<script type="application/json" id="(fig-\d+)-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "smoke"
    proc = suite("report", smoke_run, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("report.html")
    return Path(proc.stdout.strip())


def test_report_sections_self_contained_and_plotly_once(report):
    from suite.report.render import plotly_js

    text = report.read_text()
    for heading in (
        "LSTM or Transformer?",
        "The claims in detail",
        "Main comparison",
        "Training stability",
        "Throughput and cost",
        "Appendix",
    ):
        assert heading in text
    from suite.models.lstm_library import detect_backend

    library = detect_backend("cpu", torch.float32).split(" ")[0]  # what this torch build runs (onednn here)
    for name in ("copy_memory", "adding", "char_lm", "mackey_glass", "lstm-fast", "hf-gpt2", library):
        assert name in text
    assert text.count(plotly_js()[:400]) == 1  # the library once, however many figures
    ours = text.replace(plotly_js(), "")  # plotly.js holds URLs it never fetches here (maps, MathJax)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours), (
        "the page must load nothing from a network"
    )
    assert "<link" not in ours and not re.search(r"<script[^>]+src=", ours)
    assert len(FIGURE_DATA.findall(text)) >= 8
    assert list(report.parent.glob("*.csv")) and (report.parent.parent / "index.html").exists()


def test_the_answers_are_csv_files_that_scripts_can_read(report):
    """family.csv and claims.csv: the verdict word in `verdict` (a fixed vocabulary), its reason in `why`."""
    import pandas as pd

    from suite.report import verdicts

    family, claims = (pd.read_csv(report.parent / f"{name}.csv") for name in ("family", "claims"))
    assert set(family["verdict"]) <= set(verdicts.KINDS) and family["why"].str.len().min() > 10
    assert set(claims["verdict"]) <= {"supported", "not supported", "inconclusive"}
    assert claims["why"].notna().all() and len(claims) >= 4


def test_every_figure_is_valid_plotly_with_data_and_its_png_decodes(report):
    import plotly.graph_objects as go
    from PIL import Image

    text = report.read_text()
    for fig_id, payload in FIGURE_DATA.findall(text):
        spec = json.loads(payload)
        go.Figure(data=spec["data"], layout=spec["layout"])  # raises on any property plotly does not know
        assert any(len(t.get("x") or []) for t in spec["data"]), fig_id
    pngs = sorted(report.parent.glob("*.png"))
    assert len(pngs) == len(FIGURE_DATA.findall(text))
    for png in pngs:
        with Image.open(png) as im:
            im.load()
            assert im.width > 200 and im.height > 100, png.name
        assert f'href="{png.name}"' in text  # each figure links its PNG export


def test_numbers_are_rounded_to_their_uncertainty():
    from suite.report.html_tables import interval, number, p_value, pm

    assert pm(0.93456, 0.01234).text == "0.935 ± 0.012"
    assert pm(123456.7, 2345).text == "123,500 ± 2,300"
    assert pm(12.5, 1.5).text == "12.5 ± 1.5"
    assert pm(0.5, 0.0).text == "0.500" and pm(None, 0.1).text == "–"
    assert interval(0.12345, 0.0512, 0.1934, ratio=False).text == "+0.123 (0.051 to 0.193)"
    assert interval(0.8345, 0.75, 0.92, ratio=True).text == "×0.83 (0.75 to 0.92)"
    assert interval(21.3, 0.083, 5209.0, ratio=True).text == "×21 (0.083 to 5,200)"  # never "(0 to ...)"
    assert interval(0.992, 0.954, 1.031, ratio=True).text == "×0.992 (0.954 to 1.03)"
    assert number(0.012345) == "0.0123" and number(1234) == "1,234" and number(True) == "yes"
    assert p_value(0.00001).text == "< 0.001" and p_value(0.0342).text == "0.034"


def test_micro_benchmark_roofline_shows_when_recorded(tmp_path):
    from suite.report import figures, tables, views

    bench = [
        {
            "name": f"test_{impl}_{mode}",
            "stats": {"median": t, "iqr": t / 20},
            "extra_info": {
                "impl": impl,
                "mode": mode,
                "B": 32,
                "T": 128,
                "I": 64,
                "H": 128,
                "threads": 2,
                "gflops": 40 / t / 1e3,
                "pct_of_gemm": 4 / t,
            },
        }
        for impl, t in (("nn-lstm", 0.010), ("lstm-fast", 0.008))
        for mode in ("forward", "fwd+bwd")
    ]
    (tmp_path / "mb.json").write_text(json.dumps({"benchmarks": bench}))
    mb = tables.microbench_table(tmp_path / "mb.json")
    shown = views.microbench(mb)
    assert {"GFLOP/s", "% of GEMM rate", "× nn.LSTM"} <= set(shown.columns)
    fig = figures.microbench(mb, "test machine")
    assert len(fig.panels) == 2 and "GEMM" in fig.panels[1].xlabel
    assert fig.panels[1].traces[0].x == pytest.approx([400.0, 500.0])  # % of GEMM, slowest first


def test_micro_benchmark_figure_draws_one_size_and_names_the_cpu(tmp_path):
    """The sweep's B=8 and B=64 rows share T=128 and H=128 with the standard size: they must not be drawn
    over its bars. The CPU is lscpu's model name, with the GEMM rate the % are taken against."""
    from suite.report import build, figures, tables, views

    def row(impl, b, t, backend=None):
        info = {"impl": impl, "mode": "fwd+bwd", "B": b, "T": 128, "I": 64, "H": 128, "threads": 2}
        return {
            "name": f"{impl}-{b}",
            "stats": {"median": t, "iqr": t / 20},
            "extra_info": info | {"backend": backend},
        }

    bench = [row("nn-lstm", 32, 0.010), row("lstm-fast", 32, 0.008, "cpu: C++ time loop; kernels zmm 8x2")]
    bench += [row("lstm-manual", 32, 0.02)]
    bench += [row("nn-lstm", b, 0.01 * b / 32) for b in (8, 64)] + [
        row("lstm-fast", b, 0.02) for b in (8, 64)
    ]
    machine = {"cpu_model": "Intel(R) Xeon(R) Processor", "gemm_gflops": 151.2, "cpu": {"count": 2}}
    (tmp_path / "mb.json").write_text(json.dumps({"benchmarks": bench, "machine_info": machine}))
    mb = tables.microbench_table(tmp_path / "mb.json")
    fig = figures.microbench(mb, build._machine(tmp_path / "mb.json"))
    (trace,) = fig.panels[0].traces
    assert sorted(trace.y) == ["lstm-fast", "lstm-manual", "nn-lstm"]  # one bar each: B=32 only
    assert trace.x == pytest.approx([2.0, 1.0, 0.8])
    assert (
        "B=32" in fig.title and "Intel(R) Xeon(R) Processor" in fig.caption and "151 GFLOP/s" in fig.caption
    )
    shown = views.microbench(mb)
    assert "zmm 8x2" in shown.loc[shown["impl"] == "lstm-fast", "_detail"].iloc[0]


def test_empty_results_give_a_report_that_says_what_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = suite("report", tmp_path / "empty", "--out", tmp_path / "rep")
    assert proc.returncode == 0
    assert "no finished training record" in (tmp_path / "rep" / "report.html").read_text()


def test_compare_two_runs(smoke_run, tmp_path):
    proc = suite("compare", smoke_run, smoke_run, "--out", tmp_path / "cmp.html")
    assert proc.returncode == 0 and "Welch" in proc.stdout
    assert (
        "REGRESSED" not in proc.stdout and "improved" not in proc.stdout
    )  # a run against itself changes nothing
    page = (tmp_path / "cmp.html").read_text()
    assert 'class="sortable"' in page and 'class="row-no"' not in page and "unchanged" in page


def test_compare_page_marks_regressions_in_colour_and_words(smoke_run, tmp_path):
    from test_compare import _forge_worse

    _forge_worse(smoke_run, tmp_path / "worse")
    proc = suite("compare", smoke_run, tmp_path / "worse", "--out", tmp_path / "cmp.html")
    assert proc.returncode == 0
    page = (tmp_path / "cmp.html").read_text()
    regressed = proc.stdout.count("REGRESSED")
    assert regressed and page.count('class="row-no"') == regressed
    assert (
        f"{regressed} regressed" in page and '<span title="REGRESSED" class="v v-no">regressed</span>' in page
    )
    body = page[page.index("<tbody>") :]
    assert body.index('class="row-no"') < body.index("</tr>")  # regressions come first


def _chrome(width=1280, height=900):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium/chromedriver not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(browser, script, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = browser.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


SORTABLE_COLUMN = """
for (const table of document.querySelectorAll('table.sortable')) {
  const rows = Array.from(table.tBodies[0].rows).filter(r => !r.classList.contains('detail'));
  if (rows.length < 3) continue;
  for (const th of table.tHead.rows[0].cells) {
    if (!th.classList.contains('num')) continue;
    const values = rows.map(r => r.cells[th.cellIndex].dataset.v).filter(v => v !== undefined);
    if (new Set(values).size >= 3) { th.id = 'sort-me'; table.id = 'sort-table'; return th.cellIndex; }
  }
}
return -1;
"""
COLUMN = (
    "return Array.from(document.getElementById('sort-table').tBodies[0].rows)"
    ".filter(r => !r.classList.contains('detail')).map(r => r.cells[arguments[0]].dataset.v)"
    ".filter(v => v !== undefined).map(Number)"
)


@pytest.mark.browser
def test_report_in_headless_chromium(report):
    """At 1280 px: nothing scrolls sideways, headers sort, figures draw with data, images decode, and the
    page requests nothing and logs no error."""
    from selenium.webdriver.common.by import By

    browser = _chrome()
    try:
        browser.get(report.as_uri())
        _wait(browser, "return document.readyState === 'complete'")
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "report_first_screen.png"))

        page_w, view_w = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert page_w <= view_w, f"the page scrolls sideways: {page_w} > {view_w}"
        box = browser.execute_script(
            "const s = document.querySelector('#t-family .scroll'); const r = "
            "s.getBoundingClientRect(); return [s.scrollWidth, s.clientWidth, r.top, innerHeight]"
        )
        assert box[0] <= box[1], f"the summary table scrolls sideways: {box}"
        assert box[2] < box[3], "the summary table is not on the first screen"
        claims_top = browser.execute_script(
            "return document.querySelector('ul.claims').getBoundingClientRect().top"
        )
        assert claims_top < box[3], "the claims' verdicts are not on the first screen"

        col = browser.execute_script(SORTABLE_COLUMN)
        assert col >= 0, "no table with a numeric column of 3 distinct values"
        before = browser.execute_script(COLUMN, col)
        browser.find_element(By.CSS_SELECTOR, "#sort-me button").click()
        ascending = browser.execute_script(COLUMN, col)
        browser.find_element(By.CSS_SELECTOR, "#sort-me button").click()
        descending = browser.execute_script(COLUMN, col)
        assert ascending == sorted(before) and descending == sorted(before, reverse=True), (before, ascending)
        assert ascending != descending

        browser.execute_script("window.lstmBench.drawAll()")
        charts = _wait(
            browser,
            "const c = document.querySelectorAll('.chart'); return c.length && Array.from(c)"
            ".every(d => d.querySelector('svg.main-svg')) && c.length",
        )
        traces = browser.execute_script(
            "return Array.from(document.querySelectorAll('.chart')).map(d => (d.data || [])"
            ".filter(t => t.x && t.x.length).length)"
        )
        assert len(traces) == charts and all(n > 0 for n in traces), traces
        points = browser.execute_script(
            "return document.querySelectorAll('.chart .scatterlayer path, .chart .barlayer path').length"
        )
        assert points > 0

        pngs = browser.execute_script(
            "const links = Array.from(document.querySelectorAll('figcaption a[href$=\".png\"]'));"
            "window.__pngs = links.map(a => { const i = new Image(); i.src = a.href; return i; });"
            "return links.length"
        )
        assert pngs == charts
        decoded = _wait(
            browser, "return window.__pngs.every(i => i.complete) && window.__pngs.map(i => i.naturalWidth)"
        )
        assert all(w > 0 for w in decoded), decoded
        assert browser.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )

        field = browser.find_element(By.ID, "f-model")
        field.send_keys("nn-lstm")
        shown = browser.execute_script(
            "return Array.from(document.querySelectorAll('tr[data-model]'))"
            ".filter(r => !r.hidden).map(r => r.dataset.model)"
        )
        assert shown and all("nn-lstm" in m for m in shown)

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        sent = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in sent if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls
    finally:
        browser.quit()
