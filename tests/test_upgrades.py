"""Model and policy upgrades on a real lake (local Spark, real Delta tables, Chromium for the pages).

fer-vgg@4 scores a campaign dump over two runs; the default then switches to fer-vgg@5. The next runs
score the new images with v5 first and rescore the backlog within backfill.max_images_per_run, newest
first; a dump deleted before the backfill reaches it leaves its v4 rows, counted as gone. Campaign rows
exist per (campaign, identity); the pages show the older identity marked until the new one has covered
the campaign, and compare the two. Also: TTA makes another identity, and a lake from before identities
is adopted (not rescored) when its runs scored exactly as this one.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests._spark import fast_config, make_dump, read_table, run_job_in_process, spark  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(1800)]


def _config(inp: Path, lake: Path, model: str, bound: int | None = 3, tta: bool = False, **over):
    return fast_config(inp, lake, model={"name": model, "tta": tta, "batch_size": 16},
                       backfill={"max_images_per_run": bound}, **over)


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> list[Path]:
    """Four days of posts (date=... folders), without the bad rows: each run adds one folder to the input."""
    out = tmp_path_factory.mktemp("dump")
    make_dump(out, n_images=16, days=4, bad=False)
    folders = sorted((out / "dump").glob("date=*"))
    assert len(folders) == 4
    return folders


def _posts(folder: Path):
    """The rows of one day's dump folder (its Parquet files)."""
    import pandas as pd

    return pd.concat([pd.read_parquet(f, columns=["image_id"]) for f in sorted(folder.glob("*.parquet"))])


def _identities(lake: Path) -> dict[str, int]:
    images = read_table(f"{lake}/images", ["image_id", "scoring_id"])
    return images.groupby("scoring_id").image_id.nunique().to_dict()


def test_an_upgrade_scores_new_images_first_backfills_in_bounds_and_keeps_what_it_cannot_rescore(
        spark, days, tmp_path):  # noqa: F811
    inp, lake = tmp_path / "input", tmp_path / "lake"
    inp.mkdir()
    shutil.copytree(days[0], inp / days[0].name)
    r1 = run_job_in_process(spark, _config(inp, lake, "fer-vgg@4"), run_id="v4-1")
    shutil.copytree(days[1], inp / days[1].name)
    r2 = run_job_in_process(spark, _config(inp, lake, "fer-vgg@4"), run_id="v4-2")
    v4 = r1["scoring_id"]
    assert v4 == r2["scoring_id"] and v4.startswith("fer-vgg@4/haar@")
    n_old = r1["n_scored"] + r2["n_scored"]
    assert _identities(lake) == {v4: n_old} and r2["n_new"] == r2["n_scored"]
    campaigns = read_table(f"{lake}/campaigns")
    assert set(campaigns.scoring_id) == {v4} and campaigns.campaign_id.is_unique
    assert (campaigns.coverage == 1.0).all()

    # the default switches to v5; a new day arrives
    shutil.copytree(days[2], inp / days[2].name)
    r3 = run_job_in_process(spark, _config(inp, lake, "fer-vgg@5"), run_id="v5-1")
    v5 = r3["scoring_id"]
    assert v5 != v4 and v5.startswith("fer-vgg@5/")
    n_day2 = len(_posts(days[2]))
    assert (r3["n_new"], r3["n_backfilled"], r3["n_backlog_left"]) == (n_day2, 3, n_old - 3)
    images = read_table(f"{lake}/images")
    rescored = images[images.scoring_id == v5]
    backlog = images[images.scoring_id == v4].sort_values("posted_at", ascending=False)
    assert set(rescored.run_id) == {"v5-1"} and len(rescored) == n_day2 + 3
    # newest first: the three rescored old images are the three most recent posts of the backlog
    assert set(backlog.image_id[:3]) == set(rescored.image_id) - set(_posts(days[2]).image_id)
    assert len(images[images.scoring_id == v4]) == n_old  # the v4 rows stay (the comparison reads them)
    runs = read_table(f"{lake}/runs").set_index("run_id")
    assert runs.loc["v5-1", "n_backlog_left"] == n_old - 3 and runs.loc["v5-1", "scoring_id"] == v5

    # retention: the first day's dump is deleted before the backfill reaches it
    n_day0 = len(_posts(inp / days[0].name))
    shutil.rmtree(inp / days[0].name)
    r4 = run_job_in_process(spark, _config(inp, lake, "fer-vgg@5"), run_id="v5-2")
    assert r4["n_new"] == 0 and r4["n_backfilled"] == min(3, n_old - n_day0 - 3)
    for k in range(3, 8):  # until the reachable backlog is done
        if r4["n_backlog_left"] == 0:
            break
        r4 = run_job_in_process(spark, _config(inp, lake, "fer-vgg@5"), run_id=f"v5-{k}")
        assert r4["n_backfilled"] <= 3
    assert r4["n_backlog_left"] == 0
    ids = _identities(lake)
    assert ids[v5] == n_old - n_day0 + n_day2 and ids[v4] == n_old
    campaigns = read_table(f"{lake}/campaigns")
    day0 = read_table(f"{lake}/images")
    day0 = day0[(day0.scoring_id == v4) & ~day0.image_id.isin(day0[day0.scoring_id == v5].image_id)]
    assert len(day0) == n_day0  # what could not be rescored keeps its v4 rows
    for cid, group in campaigns.groupby("campaign_id"):
        rows = group.set_index("scoring_id")
        gone = int((day0.campaign_id == cid).sum())
        if v5 not in rows.index:  # only day-0 images: v5 never reached it, its page shows v4 alone
            assert gone == rows.loc[v4, "n_images"], cid
            continue
        assert rows.loc[v5, "n_images_gone"] == gone, cid
        assert rows.loc[v5, "n_images"] + gone == rows.loc[v5, "n_images_all"], cid
        assert rows.loc[v5, "coverage"] == pytest.approx(rows.loc[v5, "n_images"] / rows.loc[v5, "n_images_all"])
        if v4 in rows.index:  # the older identity's row stays beside the current one
            assert rows.loc[v4, "n_images"] == int(((read_table(f"{lake}/images").scoring_id == v4)
                                                    & (read_table(f"{lake}/images").campaign_id == cid)).sum())
    # the campaign figures of each identity are over its own rows only
    faces = read_table(f"{lake}/faces")
    for cid, group in campaigns.groupby("campaign_id"):
        for sid, row in group.set_index("scoring_id").iterrows():
            mine = faces[(faces.campaign_id == cid) & (faces.scoring_id == sid)]
            assert row["n_faces"] == len(mine), (cid, sid)
            if len(mine):
                assert row["share_happy"] == pytest.approx((mine.emotion == "happy").mean())

    # TTA on is another identity: everything becomes backlog, and a bound of 0 rescores nothing
    r_tta = run_job_in_process(spark, _config(inp, lake, "fer-vgg@5", bound=0, tta=True),
                               run_id="tta-0")
    assert r_tta["scoring_id"] not in (v4, v5) and "+tta" in r_tta["scoring_id"]
    assert (r_tta["n_new"], r_tta["n_backfilled"], r_tta["n_backlog_left"]) == (0, 0, ids[v5])


def test_the_pages_show_the_older_scoring_marked_during_a_backfill_and_compare_the_two(spark, days, tmp_path):  # noqa: F811
    """Checked in Chromium: the banner with the new identity's coverage, and the comparison table."""
    from _browser import Chromium, find_chromium

    inp, lake = tmp_path / "input", tmp_path / "lake"
    inp.mkdir()
    for d in days[:2]:
        shutil.copytree(d, inp / d.name)
    run_job_in_process(spark, _config(inp, lake, "fer-vgg@4"), run_id="v4")
    cfg = _config(inp, lake, "fer-vgg@5", bound=4)
    r = run_job_in_process(spark, cfg, run_id="v5")
    assert r["n_backfilled"] == 4 and r["n_backlog_left"] > 0
    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import render

    site = Path(render(job_config_from_dict(cfg))).parent  # the job's own rendering step
    pages = sorted(site.glob("campaign-*.html"))
    assert pages
    if find_chromium() is None:
        pytest.skip("needs chromium (apt-get install -y chromium)")
    seen_banner = seen_comparison = seen_shift = 0
    with Chromium() as chromium:
        browser = chromium.new_page()
        for path in pages:
            browser.goto(path.resolve().as_uri())
            assert browser.console_errors() == [], path.name
            banner = browser.evaluate("(document.querySelector('.scoring') || {}).textContent || ''")
            assert banner, path.name  # every page says which scoring its figures are
            if "Figures by an older scoring" in banner:
                assert r["scoring_id"] in banner and "has rescored" in banner
                seen_banner += 1
            table = browser.evaluate("Array.from(document.querySelectorAll('.identity-comparison tr'))"
                                     ".map(tr => tr.textContent)")
            if table:
                assert any("net sentiment" in t for t in table) and any("happy" in t for t in table)
                seen_comparison += 1
                seen_shift += any(t.endswith(" pts") for t in table)  # a share both identities have
    assert seen_banner >= 1 and seen_comparison >= 1 and seen_shift >= 1


def test_a_lake_from_before_identities_is_adopted_when_its_runs_scored_the_same_way(spark, days, tmp_path):  # noqa: F811
    """A lake written before scoring_id existed (today's tables without the identity columns) is read
    with the documented default (<model_version>~legacy) unless its runs provably scored as this run
    does (same config hash, model, detector): then its rows are given this run's identity, and nothing
    is rescored."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    inp, lake = tmp_path / "input", tmp_path / "lake"
    inp.mkdir()
    shutil.copytree(days[0], inp / days[0].name)
    first = run_job_in_process(spark, _config(inp, lake, "fer-vgg@5"), run_id="before")
    dropped = {"scoring_id", "input_file", "n_images_all", "n_images_gone", "coverage", "n_new", "n_backfilled",
               "n_backlog_left"}
    for name in ("images", "faces", "campaigns", "runs"):
        table = DeltaTable(f"{lake}/{name}").to_pyarrow_table()
        keep = [c for c in table.column_names if c not in dropped]
        parts = ["campaign_id"] if name in ("images", "faces") else None
        write_deltalake(f"{lake}/{name}", table.select(keep), mode="overwrite", schema_mode="overwrite",
                        partition_by=parts)
    assert "scoring_id" not in pa.schema(DeltaTable(f"{lake}/images").schema()).names
    again = run_job_in_process(spark, _config(inp, lake, "fer-vgg@5"), run_id="after")
    assert (again["n_new"], again["n_backfilled"], again["n_scored"]) == (0, 0, 0)
    images = read_table(f"{lake}/images")
    assert (images.scoring_id == first["scoring_id"]).all() and len(images) == first["n_scored"]

    # a lake whose runs scored differently (here: TTA off, while this run scores with it) keeps the default
    table = DeltaTable(f"{lake}/images").to_pyarrow_table()
    write_deltalake(f"{lake}/images", table.drop_columns(["scoring_id"]), mode="overwrite", schema_mode="overwrite",
                    partition_by=["campaign_id"])
    runs = DeltaTable(f"{lake}/runs").to_pyarrow_table()
    write_deltalake(f"{lake}/runs", runs.drop_columns(["scoring_id"]), mode="overwrite", schema_mode="overwrite")
    tta = run_job_in_process(spark, _config(inp, lake, "fer-vgg@5", bound=0, tta=True),
                             run_id="tta")
    assert tta["n_backlog_left"] == first["n_scored"] and tta["n_scored"] == 0
