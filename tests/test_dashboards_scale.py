"""Scale: 1,000 campaigns from one table scan, aggregated in pyarrow (no per-row Python).

Marked slow. The 1-million-image figure in the report came from the same generator
(tests/_dash_fixtures.write_synthetic_lake) with n_images=1_000_000.
"""
from __future__ import annotations

import time

import pytest

import _dash_fixtures as fx
from dashboards import aggregate
from dashboards.paths import campaign_page_name
from dashboards.render import render_dashboards
from dashboards.tables import Lake

pytestmark = pytest.mark.slow

N_CAMPAIGNS, N_IMAGES = 1_000, 100_000


@pytest.fixture(scope="module")
def big_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    fx.write_synthetic_lake(root, N_CAMPAIGNS, N_IMAGES)
    return root


def test_aggregates_cover_every_image_once(big_lake):
    start = time.perf_counter()
    agg = aggregate.compute(Lake(str(big_lake)), max_gallery=8)
    elapsed = time.perf_counter() - start
    rows = agg.kpis.to_pylist()
    assert len(rows) == N_CAMPAIGNS
    assert sum(r["n_images"] for r in rows) == N_IMAGES
    assert all(r["baseline_mode"] == "run" for r in rows)  # two runs everywhere
    assert agg.gallery.num_rows <= 16 * N_CAMPAIGNS
    assert elapsed < 30, f"aggregating {N_IMAGES} images took {elapsed:.1f}s"


def test_render_1000_campaigns(big_lake, tmp_path):
    start = time.perf_counter()
    index = render_dashboards(str(big_lake), str(tmp_path / "site"), gradcam=False, max_gallery=2)
    elapsed = time.perf_counter() - start
    pages = list((tmp_path / "site").glob("campaign-*.html"))
    assert len(pages) == N_CAMPAIGNS
    assert (tmp_path / "site" / campaign_page_name("campaign-7")).is_file()
    assert index.read_text(encoding="utf-8").count('<tr>') == N_CAMPAIGNS + 1
    assert elapsed < 120, f"rendering {N_CAMPAIGNS} campaigns took {elapsed:.1f}s"
