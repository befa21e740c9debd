"""End to end: the real job (jobs/score_campaign.py on local Spark) writes the Delta tables and
renders the dashboards; every page then opens cleanly in headless Chromium.

Slow (Spark + TensorFlow + Chromium). Skipped when the job or Java is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _browser import CHARTS_DRAWN, PAGE_REPORT, Chromium, find_chromium

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def job_site(tmp_path_factory) -> Path:
    if not (REPO / "jobs" / "score_campaign.py").is_file() or not (REPO / "jobs" / "make_sample_dump.py").is_file():
        pytest.skip("jobs/score_campaign.py or jobs/make_sample_dump.py is not there yet")
    if shutil.which("java") is None:
        pytest.skip("local Spark needs Java (apt-get install -y openjdk-17-jre-headless)")
    if find_chromium() is None and not os.environ.get("CI"):
        pytest.skip("needs chromium (apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("job")
    _run(["jobs/make_sample_dump.py", "--out", str(tmp / "sample"), "--n-images", "12", "--days", "3",
          "--mode", "bytes"], timeout=300)
    proc = _run(["jobs/score_campaign.py", "--input", str(tmp / "sample" / "dump"), "--output", str(tmp / "lake")],
                timeout=1200)
    assert "dashboards:" in proc.stdout, proc.stdout[-2000:]
    site = tmp / "lake" / "dashboards"
    assert (site / "index.html").is_file()
    return site


def test_job_output_renders_and_opens(job_site):
    from deltalake import DeltaTable

    campaigns = set(DeltaTable(str(job_site.parent / "images")).to_pyarrow_table(columns=["campaign_id"])
                    .column("campaign_id").to_pylist())
    pages = sorted(job_site.glob("campaign-*.html"))
    assert len(pages) == len(campaigns) >= 1
    with Chromium() as chromium:
        browser = chromium.new_page()
        adjusted_pages = 0
        for path in [job_site / "index.html", *pages]:
            browser.goto(path.resolve().as_uri())
            assert browser.wait_for(CHARTS_DRAWN, timeout=30), path.name
            report = browser.evaluate(PAGE_REPORT)
            assert browser.console_errors() == [], path.name
            assert all(c["svg"] for c in report["charts"]), path.name
            assert all(i["ok"] for i in report["images"]), (path.name, report["images"])
            if path.name.startswith("campaign-") and "chart-emotions" in {c["id"] for c in report["charts"]}:
                # the default model has a mix calibration: the chart draws the adjusted mix with a legend
                legend = browser.evaluate("Array.from(document.querySelectorAll('#chart-emotions .legendtext'))"
                                          ".map(e => e.textContent)")
                assert "corrected for the model's confusions" in legend, (path.name, legend)
                adjusted_pages += 1
        assert adjusted_pages >= 1
        # the sample dump's video posts (make_sample_dump --n-videos, 3 by default): one images row each with
        # its sampled frames, one track per person, drawn in the Video posts gallery with an emotion strip
        lake_root = job_site.parent
        videos = DeltaTable(str(lake_root / "images")).to_pyarrow_table(
            columns=["image_id", "media_type", "status", "n_frames"]).to_pylist()
        videos = [v for v in videos if v["media_type"] == "video"]
        assert len(videos) == 3 and all(v["status"] == "ok" and v["n_frames"] >= 3 for v in videos), videos
        tracks = DeltaTable(str(lake_root / "tracks")).to_pyarrow_table(columns=["image_id"]).column("image_id")
        assert set(tracks.to_pylist()) == {v["image_id"] for v in videos}
        cards = 0
        for path in pages:
            browser.goto(path.resolve().as_uri())
            browser.wait_for(CHARTS_DRAWN, timeout=30)
            cards += browser.evaluate("document.querySelectorAll('#gallery-video figure.video-post').length")
            assert browser.evaluate("Array.from(document.querySelectorAll('#gallery-video .chart.strip'))"
                                    ".every(c => c.querySelector('svg.main-svg'))"), path.name  # each strip drawn
        assert cards == 3
        # thumbnails came from the inline-bytes dump through the job's image_bytes_loader
        thumbs = list((job_site / "thumbs").rglob("*.jpg"))
        assert thumbs, "no gallery thumbnails were written"
        browser.goto((job_site / "index.html").resolve().as_uri())
        shots = REPO / "artifacts" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        browser.screenshot(shots / "job-index.png")
        browser.goto(pages[0].resolve().as_uri())
        browser.wait_for(CHARTS_DRAWN, timeout=30)
        browser.screenshot(shots / "job-campaign.png")
        browser.close()


def test_dashboard_numbers_match_the_jobs_campaigns_table(job_site):
    """The job's campaigns table and the dashboards compute the same KPIs independently: they must agree."""
    import math

    from deltalake import DeltaTable

    from dashboards import aggregate
    from dashboards.tables import Lake

    lake_root = job_site.parent
    job_rows = {r["campaign_id"]: r for r in DeltaTable(str(lake_root / "campaigns")).to_pyarrow_table().to_pylist()}
    ours = {r["campaign_id"]: r for r in aggregate.compute(Lake(str(lake_root)), max_gallery=1).kpis.to_pylist()}
    assert set(job_rows) == set(ours)
    for cid, job in job_rows.items():
        mine = ours[cid]
        assert mine["n_images"] == job["n_images"], cid
        assert mine["n_with_faces"] == job["n_images_with_faces"], cid
        assert mine["n_faces"] == job["n_faces"], cid
        for ours_key, job_key in (("share_positive", "share_positive"), ("share_negative", "share_negative"),
                                  ("net_sentiment", "net_sentiment"), ("mean_valence", "mean_valence")):
            a, b = mine[ours_key], job[job_key]
            if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
                assert (a is None) == (b is None or math.isnan(b)), (cid, ours_key, a, b)
            else:
                assert a == pytest.approx(b, abs=1e-9), (cid, ours_key)
    shown = {r["campaign_id"]: r for r in aggregate.compute(Lake(str(lake_root)), max_gallery=1).adjusted_mix.to_pylist()}
    for cid, job in job_rows.items():
        if job["n_faces"]:
            assert shown[cid] == {k: job[k] for k in shown[cid]}, cid  # the pages draw the job's adjusted mix

