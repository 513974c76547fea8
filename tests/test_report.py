"""The report of a smoke run: content, partial data, compare, and a real headless browser."""

import shutil
from pathlib import Path

import pytest

from conftest import ROOT, suite

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "smoke"
    proc = suite("report", smoke_run, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("report.html")
    return Path(proc.stdout.strip())


def test_report_sections_and_no_network(report):
    text = report.read_text()
    for heading in ("Summary", "claims", "Per task", "Training stability", "Throughput"):
        assert heading in text
    for name in ("copy_memory", "adding", "char_lm", "mackey_glass", "lstm-fast", "hf-gpt2", "onednn"):
        assert name in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert list(report.parent.glob("*.png")) and list(report.parent.glob("*.csv"))
    assert (report.parent.parent / "index.html").exists()


def test_empty_results_give_a_report_that_says_what_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = suite("report", tmp_path / "empty", "--out", tmp_path / "rep")
    assert proc.returncode == 0
    assert "no finished training record" in (tmp_path / "rep" / "report.html").read_text()


def test_compare_two_runs(smoke_run, tmp_path):
    proc = suite("compare", smoke_run, smoke_run, "--out", tmp_path / "cmp.html")
    assert proc.returncode == 0 and "Welch" in proc.stdout
    assert "REGRESSED" not in proc.stdout and "improved" not in proc.stdout  # a run against itself changes nothing
    assert (tmp_path / "cmp.html").exists()


@pytest.mark.browser
def test_report_in_headless_chromium(report):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium/chromedriver not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,2000"):
        opts.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        browser.get(report.as_uri())
        images = browser.execute_script("return Array.from(document.images).map(i => [i.naturalWidth, i.src.slice(0, 22)])")
        assert images and all(w > 0 for w, _ in images), images
        assert all(src.startswith("data:image/png") for _, src in images)
        requests = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [r for r in requests if not r.startswith("data:")] == [], requests
        rows = browser.execute_script("return Array.from(document.querySelectorAll('table')).map(t => t.tBodies.length ? t.tBodies[0].rows.length : 0)")
        assert rows and all(n > 0 for n in rows), rows
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "report_smoke.png"))
    finally:
        browser.quit()
