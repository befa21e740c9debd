"""Between upgrades a run adds its own rows to the stored campaign rows (fer_core.kpis.add_kpis) instead of
reading each touched campaign's history (issue 29): the rows must stay what a recompute over all the data
gives, through a killed run's replay and through superseded fetch errors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests._spark import campaigns_as_recomputed, fast_config, make_dump, read_table, run_job_in_process, submit
from tests._spark import spark  # noqa: F401 - the session fixture
from tests._spark import write_yaml


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("fail_at", ["after_inputs_commit", "after_campaigns_commit"])
def test_a_killed_run_that_adds_to_campaign_rows_is_replayed_once(spark, tmp_path, fail_at) -> None:  # noqa: F811
    """Day 1 is scored; a run over day 2 (a steady lake: every row the one identity) is killed by spark-submit
    before, or just after, its campaigns MERGE. The next run's recovery replays it: its rows are added once,
    never twice, and every campaign row equals the recompute over all rows."""
    from jobs.campaign.job import FAIL_ENV

    info = make_dump(tmp_path / "s", n_images=8, days=2, seed=5)
    dump, lake = Path(info["dump"]), tmp_path / "lake"
    days = sorted(p for p in dump.iterdir() if p.is_dir())
    first = run_job_in_process(spark, fast_config(days[0], lake), run_id="day1")
    assert first["campaigns_recomputed"] >= 1 and first["campaigns_added"] == 0  # no stored row yet
    before = read_table(f"{lake}/campaigns")
    conf = write_yaml(tmp_path / "c.yaml", fast_config(f"{dump}/date=*", lake))
    r = submit(["--config", str(conf), "--no-dashboards", "--run-id", "killed"], env={FAIL_ENV: fail_at})
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-4000:]
    merged = read_table(f"{lake}/campaigns")
    assert (set(merged.run_id) == {"day1"}) == (fail_at == "after_inputs_commit")
    row = run_job_in_process(spark, fast_config(f"{dump}/date=*", lake), run_id="next")
    assert "recovering run killed" in row["_log"] and row["n_scored"] == 0
    stored, want = campaigns_as_recomputed(str(lake))
    pd.testing.assert_frame_equal(stored, want, check_dtype=False)
    after = read_table(f"{lake}/campaigns")
    assert after.n_images.sum() == len(read_table(f"{lake}/images")) > before.n_images.sum()
    assert set(after.run_id) <= {"day1", "killed"} and "killed" in set(after.run_id)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_runs_that_add_to_campaign_rows_agree_with_a_recompute(spark, tmp_path) -> None:  # noqa: F811
    """Three runs, day by day, on one lake: the later ones add to every campaign they touch that has a row
    (and say so on the console), and the rows are a recompute's; a lake whose campaign rows come from before
    the mean_p_* columns (dropped here) is recomputed once, then added to again."""
    from deltalake import DeltaTable, write_deltalake

    info = make_dump(tmp_path / "s", n_images=9, days=3, seed=8)
    dump, lake = Path(info["dump"]), tmp_path / "lake"
    days = sorted(p for p in dump.iterdir() if p.is_dir())
    run_job_in_process(spark, fast_config(days[0], lake), run_id="d1")
    second = run_job_in_process(spark, fast_config(days[1], lake), run_id="d2")
    touched = set(read_table(f"{lake}/images").query("run_id == 'd2'").campaign_id)
    had_row = touched & set(read_table(f"{lake}/images").query("run_id == 'd1'").campaign_id)
    assert had_row and second["campaigns_added"] == len(had_row)
    assert second["campaigns_recomputed"] == len(touched - had_row)
    assert f"campaigns: {len(had_row)} added to" in second["_log"]
    # the run's health, read from its own files, is what filtering the whole tables by its run_id gives
    from jobs.campaign.health import run_metrics
    from jobs.campaign.lake import Lake

    health = second["health"]
    by_filter = run_metrics(Lake(str(lake)), "d2", health["finished_at"], health["images_per_s"])
    assert health["n_scored"] == second["n_scored"] > 0 and health["n_faces"] == by_filter["n_faces"] > 0
    for key, value in by_filter.items():
        assert health[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    pd.testing.assert_frame_equal(*campaigns_as_recomputed(str(lake)), check_dtype=False)

    # an older lake's rows: no mean face probabilities stored, so nothing to add to
    old = DeltaTable(f"{lake}/campaigns").to_pyarrow_table()
    old = old.drop_columns([c for c in old.column_names if c.startswith("mean_p_")])
    write_deltalake(f"{lake}/campaigns", old, mode="overwrite", schema_mode="overwrite")
    third = run_job_in_process(spark, fast_config(days[2], lake), run_id="d3")
    assert third["campaigns_added"] == 0 and third["campaigns_recomputed"] >= 1
    pd.testing.assert_frame_equal(*campaigns_as_recomputed(str(lake)), check_dtype=False)
    again = run_job_in_process(spark, fast_config(f"{dump}/date=*", lake), run_id="all")
    assert again["n_scored"] == 0  # every file consumed: nothing to add
    assert read_table(f"{lake}/campaigns").mean_p_happy.notna().any()
