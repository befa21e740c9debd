"""Delta statistics of the files the job writes (jobs/campaign/lake.py): min/max/nullCount from each file's
Parquet footer, the columns of STATS_COLUMNS only (never image_id), kept by compaction, used by readers
to skip files. Real Delta tables (deltalake), no Spark: the executors' writer runs in this process."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from fer_core.tables import faces_schema, images_schema
from jobs.campaign.admin import maintain
from jobs.campaign.lake import Lake
from jobs.campaign.lake_files import STATS_COLUMNS, write_part_files

UTC = dt.timezone.utc
DAY0 = dt.datetime(2024, 6, 1, tzinfo=UTC)


def image_rows(run: int, n: int = 6) -> list[dict]:
    """One run's images rows: posted on day ``run``, two campaigns, a mix of statuses, some nulls."""
    rows = []
    for i in range(n):
        ok = i % 3 != 2
        rows.append({
            "image_id": f"img-{run}-{i}", "campaign_id": ("summer", "eco")[i % 2],
            "posted_at": DAY0 + dt.timedelta(days=run, hours=i, microseconds=123_456 * (i + 1)),
            "platform": ("x", "instagram")[i % 2], "caption": f"caption {i}", "source": "dump.parquet",
            "status": "ok" if ok else "decode_error", "error": None if ok else "truncated",
            "width": 320 if ok else None, "height": 240 if ok else None, "n_faces": i % 2 if ok else 0,
            "dominant_emotion": "happy" if ok else None, **{c: (1 / 7 if ok else None) for c in
                                                            images_schema().names if c.startswith("p_")},
            "sentiment": "positive" if ok else None, "valence": 0.1 * i if ok else None,
            "model_version": "fer-vgg@5", "detector_version": "haar-1", "run_id": f"run-{run}",
            "scored_at": DAY0 + dt.timedelta(days=run, hours=23, seconds=i),
            "media_type": "image", "duration_s": None, "n_frames": 1 if ok else None,
            "scoring_id": "fer-vgg@5/haar@min20/00000000", "input_file": "dump.parquet",
        })
    return rows


def write_run(lake: Lake, run: int) -> list[dict]:
    schema = images_schema()
    files = write_part_files(lake.uri("images"), image_rows(run), schema, f"run-{run}", None)
    lake.commit_files("images", files, schema, f"run-{run}")
    return files


def add_actions(uri: str) -> list[dict]:
    return pa.table(DeltaTable(uri).get_add_actions(flatten=True)).to_pylist()


def expected_stats(path: str, column: str) -> tuple:
    col = pq.read_table(path, columns=[column]).column(0)
    mm = pc.min_max(col).as_py()
    return mm["min"], mm["max"], col.null_count


@pytest.fixture
def lake(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    for run in range(3):
        write_run(lake, run)
    return lake


def test_every_file_carries_right_stats_and_none_of_image_id(lake):
    actions = add_actions(lake.uri("images"))
    assert len(actions) == 6  # 3 runs x 2 campaigns
    for a in actions:
        path = f"{lake.uri('images')}/{a['path']}"
        for column in ("posted_at", "scored_at", "run_id", "status", "width", "valence", "n_faces"):
            lo, hi, nulls = expected_stats(path, column)
            assert a[f"null_count.{column}"] == nulls, (column, a)
            if column in ("posted_at", "scored_at"):  # Delta keeps milliseconds: min floored, max within 1 ms
                assert a[f"min.{column}"] == lo.replace(microsecond=lo.microsecond // 1000 * 1000)
                assert dt.timedelta(0) <= hi - a[f"max.{column}"] < dt.timedelta(milliseconds=1)
            elif lo is None:
                assert a[f"min.{column}"] is None and a[f"max.{column}"] is None
            else:
                assert (a[f"min.{column}"], a[f"max.{column}"]) == (lo, hi), column
        assert a["min.run_id"] == a["max.run_id"]  # one run per file
        assert "min.image_id" not in a and "max.image_id" not in a and "null_count.image_id" not in a
        assert "min.caption" not in a and "min.error" not in a
    assert DeltaTable(lake.uri("images")).metadata().configuration["delta.dataSkippingStatsColumns"] == \
        ",".join(c for c in STATS_COLUMNS if c in images_schema().names)


def fragments_read(table: DeltaTable, expr) -> int:
    return len(list(table.to_pyarrow_dataset().get_fragments(filter=expr)))


def test_a_filtered_read_opens_only_the_files_that_can_match(lake):
    table = DeltaTable(lake.uri("images"))
    all_rows = table.to_pyarrow_table()
    assert fragments_read(table, None) == 6
    newest = ds.field("posted_at") >= pa.scalar(DAY0 + dt.timedelta(days=2), pa.timestamp("us", tz="UTC"))
    assert fragments_read(table, newest) == 2  # the last run's two campaign files
    assert fragments_read(table, ds.field("run_id") == "run-1") == 2
    assert fragments_read(table, ds.field("status") == "too_large") == 0  # after every file's max ("ok")
    # the same rows as filtering everything (skipping never drops a match)
    got = table.to_pyarrow_dataset().to_table(filter=newest).num_rows
    assert got == all_rows.filter(pc.field("posted_at") >= DAY0 + dt.timedelta(days=2)).num_rows == 6
    # a posted_at bound inside a file's last millisecond still finds its row (max is truncated to ms)
    last = max(all_rows.column("posted_at").to_pylist())
    at_last = ds.field("posted_at") >= pa.scalar(last, pa.timestamp("us", tz="UTC"))
    assert table.to_pyarrow_dataset().to_table(filter=at_last).num_rows == 1


def test_compaction_keeps_the_stats_and_adds_none_of_image_id(lake):
    report = maintain(lake)
    assert report["images"]["files_before"] == 6 and report["images"]["files_after"] == 2
    actions = add_actions(lake.uri("images"))
    for a in actions:
        path = f"{lake.uri('images')}/{a['path']}"
        for column in ("run_id", "status", "width"):
            lo, hi, nulls = expected_stats(path, column)
            assert (a[f"min.{column}"], a[f"max.{column}"], a[f"null_count.{column}"]) == (lo, hi, nulls)
        assert a["min.posted_at"] is not None and a["min.scored_at"] is not None
        assert "min.image_id" not in a and "min.caption" not in a
    table = DeltaTable(lake.uri("images"))
    assert fragments_read(table, ds.field("run_id") == "run-9") == 0


def test_an_older_lake_gets_the_property_before_compaction_writes_stats(tmp_path):
    """A table created before the property: delta-rs's compaction would put image_id min/max in the log."""
    lake = Lake(str(tmp_path / "old"))
    DeltaTable.create(lake.uri("images"), images_schema(), partition_by=["campaign_id"])  # no property
    DeltaTable.create(lake.uri("faces"), faces_schema(), partition_by=["campaign_id"])
    for run in range(2):
        write_run(lake, run)
    maintain(lake)
    config = DeltaTable(lake.uri("images")).metadata().configuration
    assert "image_id" not in config["delta.dataSkippingStatsColumns"].split(",")
    for a in add_actions(lake.uri("images")):
        assert "min.image_id" not in a and a["min.run_id"] is not None
