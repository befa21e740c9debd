"""Open every dashboard page in headless Chromium, as a marketing user would (file://, offline).

Checks: no console errors, every chart div has drawn SVG, every gallery image loaded, no XSS
payload executed, the index table sorts. Saves screenshots to artifacts/screenshots/.
Needs Debian's chromium and the websocket-client package; skipped without them (failed on CI).
"""
from __future__ import annotations

from pathlib import Path

import pytest

import _dash_fixtures as fx
from _browser import CHARTS_DRAWN, PAGE_REPORT, Chromium, require_browser
from dashboards.paths import campaign_page_name
from dashboards.render import render_dashboards

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[fx.SampleLake, Path]:
    require_browser()
    tmp = tmp_path_factory.mktemp("browser")
    lake = fx.make_sample_lake(tmp)
    out = tmp / "site"
    render_dashboards(str(lake.root), str(out), gradcam=False, image_bytes_loader=lake.loader)
    return lake, out


@pytest.fixture(scope="module")
def browser():
    require_browser()
    with Chromium() as chromium:
        page = chromium.new_page()
        yield page
        page.close()


def open_page(browser, path: Path) -> dict:
    browser.goto(path.resolve().as_uri())
    browser.wait_for(CHARTS_DRAWN, timeout=30)
    report = browser.evaluate(PAGE_REPORT)
    report["errors"] = browser.console_errors()
    return report


def test_every_page_draws_without_errors(site, browser):
    lake, out = site
    pages = ["index.html"] + [campaign_page_name(c) for c in lake.campaigns]
    for name in pages:
        report = open_page(browser, out / name)
        assert report["errors"] == [], f"{name}: {report['errors']}"
        assert all(c["svg"] for c in report["charts"]), f"{name}: undrawn charts {report['charts']}"
        assert all(i["ok"] for i in report["images"]), f"{name}: broken images {report['images']}"
        assert report["xss"] is None
    spring = open_page(browser, out / campaign_page_name("spring-sale-2026"))
    assert len(spring["charts"]) == 5 and all(c["marks"] > 0 for c in spring["charts"])
    assert sum(1 for i in spring["images"] if "/thumbs/" in "/" + i["src"]) >= 16


def test_empty_campaign_pages_explain_themselves(site, browser):
    _, out = site
    report = open_page(browser, out / campaign_page_name("no-faces-campaign"))
    assert "No faces were found" in report["text"]
    assert [c["id"] for c in report["charts"]] == ["chart-faces_per_image"]
    report = open_page(browser, out / campaign_page_name("broken-uploads"))
    assert "None of this campaign's 5 images could be scored" in report["text"]
    assert report["charts"] == [] and report["errors"] == []


def test_xss_payloads_stay_text(site, browser):
    _, out = site
    for name in (campaign_page_name(fx.XSS_ID), "index.html"):
        report = open_page(browser, out / name)
        assert report["xss"] is None, f"payload ran on {name}"
        assert report["title"] != "pwned"  # the payloads set document.title = "pwned"
        assert report["errors"] == []
        assert fx.XSS_ID in report["text"]  # shown literally
    report = open_page(browser, out / campaign_page_name(fx.XSS_ID))
    assert fx.XSS_CAPTION in report["text"]
    # the platform label inside the Plotly chart is text, not an element
    svg_text = browser.evaluate("Array.from(document.querySelectorAll('#chart-platforms text'))"
                                ".map(t => t.textContent).join('|')")
    assert fx.XSS_PLATFORM in svg_text
    assert browser.evaluate("document.querySelectorAll('#chart-platforms svg svg[onload], img[onerror]').length") == 0


def test_index_table_sorts_and_filters(site, browser):
    _, out = site
    open_page(browser, out / "index.html")
    col = browser.evaluate("Array.from(document.querySelectorAll('#campaign-table th'))"
                           ".findIndex(th => th.textContent.trim() === 'Faces')")
    assert col > 0
    faces_col = (f"Array.from(document.querySelectorAll('#campaign-table tbody tr'))"
                 f".map(r => +r.cells[{col}].dataset.sort)")
    browser.evaluate(f"document.querySelectorAll('#campaign-table th')[{col}].click()")
    ascending = browser.evaluate(faces_col)
    assert ascending == sorted(ascending)
    browser.evaluate(f"document.querySelectorAll('#campaign-table th')[{col}].click()")
    assert browser.evaluate(faces_col) == sorted(ascending, reverse=True)
    browser.evaluate("const f = document.getElementById('campaign-filter'); f.value = 'winter';"
                     "f.dispatchEvent(new Event('input'))")
    visible = browser.evaluate("Array.from(document.querySelectorAll('#campaign-table tbody tr'))"
                               ".filter(r => !r.hidden).map(r => r.cells[0].textContent.trim())")
    assert visible == ["winter-clearance"]


# Clicks a chart's "Download PNG" mode-bar button and keeps what the page hands to the browser to save.
CLICK_PNG = """(async (chart) => {
  const button = document.querySelector('#' + chart + ' .modebar-btn[data-title="Download PNG"]');
  if (!button) { return null; }
  const original = HTMLAnchorElement.prototype.click;
  const saved = new Promise(resolve => {
    HTMLAnchorElement.prototype.click = function () {
      if (this.download) { resolve({name: this.download, href: this.href}); } else { original.call(this); }
    };
  });
  button.click();
  const result = await Promise.race([saved, new Promise(r => setTimeout(() => r({timeout: true}), 20000))]);
  HTMLAnchorElement.prototype.click = original;
  const size = document.getElementById(chart)._fullLayout;
  return Object.assign(result, {width: size.width, height: size.height});
})"""


def _png_pixels(data_url: str):
    import base64
    import io

    import numpy as np
    from PIL import Image

    header, _, payload = data_url.partition(",")
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


def test_charts_download_as_titled_png(site, browser):
    """Every chart's mode-bar button saves a 2x PNG named after the page and chart, with a title strip on top."""
    _, out = site
    page = campaign_page_name("spring-sale-2026")
    open_page(browser, out / page)
    for chart in ("chart-emotions", "chart-timeline"):
        saved = browser.evaluate(f"({CLICK_PNG})('{chart}')")
        assert saved and "timeout" not in saved, f"{chart}: no download ({saved})"
        assert saved["name"] == page.removesuffix(".html") + "-" + chart.removeprefix("chart-") + ".png"
        pixels = _png_pixels(saved["href"])
        assert pixels.shape[0] >= 2 * (saved["height"] + 40) and pixels.shape[1] == 2 * saved["width"]
        title_strip = pixels[: 2 * 30]
        assert (title_strip.min(axis=2) < 128).mean() > 0.002  # the title's dark text is drawn there
        assert len({tuple(c) for c in pixels[::7, ::7].reshape(-1, 3)}) > 20  # bars and text, not a blank canvas
    report = open_page(browser, out / campaign_page_name(fx.XSS_ID))
    saved = browser.evaluate(f"({CLICK_PNG})('chart-emotions')")
    assert saved and "timeout" not in saved and saved["name"].endswith("-emotions.png")
    assert "<" not in saved["name"] and "/" not in saved["name"]
    assert browser.evaluate("window.__xss || null") is None and browser.console_errors() == []
    assert report["xss"] is None


def test_screenshots(site, browser):
    """One screenshot per page type, for people to look at (artifacts/ is not committed)."""
    _, out = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    for shot, name in (("index.png", "index.html"), ("campaign.png", campaign_page_name("spring-sale-2026")),
                       ("campaign-no-faces.png", campaign_page_name("no-faces-campaign")),
                       ("campaign-bad-images.png", campaign_page_name("broken-uploads"))):
        open_page(browser, out / name)
        path = browser.screenshot(SHOTS / shot)
        assert path.stat().st_size > 10_000


def test_real_gradcam_overlays_load(site, browser, tmp_path):
    """The real fer_core Grad-CAM on the registered model (skipped where TF or weights are missing)."""
    pytest.importorskip("tensorflow")
    lake, _ = site
    out = tmp_path / "cam"
    render_dashboards(str(lake.root), str(out), gradcam=True, max_gallery=1, image_bytes_loader=lake.loader)
    html = (out / campaign_page_name("spring-sale-2026")).read_text(encoding="utf-8")
    if "could not be loaded" in html:
        pytest.skip("emotion model weights not available offline here")
    report = open_page(browser, out / campaign_page_name("spring-sale-2026"))
    cams = [i for i in report["images"] if "-f1.jpg" in i["src"]]
    assert cams and all(i["ok"] for i in cams)
    assert report["errors"] == []
    browser.screenshot(SHOTS / "campaign-gradcam.png")
