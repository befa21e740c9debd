"""Dumps written by other tools: pandas, polars, pyarrow, DuckDB and Spark itself, each with the real library.

Every producer stores the same facts differently (nanosecond or INT96 timestamps, views and large types,
dictionaries, ISO text, epoch integers, Hive folders, columns in another case). The job must read each
one to the same images rows, with posted_at right to the second, or refuse it up front naming the file,
the column, its type and the fix.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tests._spark import fast_config, read_table, run_job_in_process, spark  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(900)]

UTC = dt.timezone.utc


def _png(seed: int) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".png", rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def _t(i: int) -> dt.datetime:
    """A distinct, second-exact UTC time per image."""
    return dt.datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC) + dt.timedelta(hours=i, seconds=7 * i + 1)


def _write_all_producers(root, spark) -> dict[str, dt.datetime]:  # noqa: F811
    """One dump folder with a file (or more) from every producer; returns image_id -> expected posted_at."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected: dict[str, dt.datetime] = {}
    n = iter(range(100))

    def ids(prefix: str, k: int = 2) -> list[tuple[str, dt.datetime, bytes]]:
        out = []
        for _ in range(k):
            i = next(n)
            out.append((f"{prefix}-{i}", _t(i), _png(i)))
            expected[f"{prefix}-{i}"] = _t(i)
        return out

    day = root / "date=2026-11-30"
    day.mkdir(parents=True)
    # pandas 2 via pyarrow, the most common way: tz-aware nanoseconds, categorical campaign, a nested column
    rows = ids("pandas-ns-tz")
    pd.DataFrame({"image_id": [r[0] for r in rows], "campaign_id": pd.Categorical(["alpha", "beta"]),
                  "posted_at": pd.to_datetime([r[1] for r in rows], utc=True), "image": [r[2] for r in rows],
                  "meta": [{"likes": 1, "tags": ["a"]}, {"likes": 2, "tags": []}]}).to_parquet(day / "pandas-ns-tz.parquet")
    # naive nanoseconds (read as UTC), and the other units; column names in another case
    for unit in ("ns", "us", "ms", "s"):
        rows = ids(f"pandas-{unit}-naive")
        times = pd.Series([r[1].replace(tzinfo=None) for r in rows]).astype(f"datetime64[{unit}]")
        pd.DataFrame({"Image_ID": [r[0] for r in rows], "Campaign_ID": ["alpha", "beta"], "POSTED_AT": times,
                      "Image": [r[2] for r in rows]}).to_parquet(day / f"pandas-{unit}.parquet")
    # date32: a date is its UTC midnight
    rows = ids("pandas-date")
    for r in rows:
        expected[r[0]] = dt.datetime.combine(r[1].date(), dt.time(), UTC)
    pd.DataFrame({"image_id": [r[0] for r in rows], "campaign_id": ["alpha", "beta"],
                  "posted_at": [r[1].date() for r in rows], "image": [r[2] for r in rows]}).to_parquet(
        day / "pandas-date.parquet")
    # ISO-8601 text with and without offset (without: UTC)
    rows = ids("iso")
    texts = [(rows[0][1].astimezone(dt.timezone(dt.timedelta(hours=-5)))).isoformat(),
             rows[1][1].replace(tzinfo=None).isoformat()]
    pq.write_table(pa.table({"image_id": [r[0] for r in rows], "campaign_id": ["alpha", "beta"], "posted_at": texts,
                             "image": [r[2] for r in rows]}), day / "iso-text.parquet")
    # polars: large_string / large_binary, microseconds with a time zone
    rows = ids("polars")
    pl.DataFrame({"image_id": [r[0] for r in rows], "campaign_id": ["alpha", "beta"],
                  "posted_at": [r[1] for r in rows], "image": [r[2] for r in rows]}).write_parquet(day / "polars.parquet")
    # pyarrow with view types, a dictionary-encoded platform and millisecond times in another zone
    rows = ids("arrow-views")
    pq.write_table(pa.table({
        "image_id": pa.array([r[0] for r in rows], pa.string_view()),
        "campaign_id": pa.array(["alpha", "beta"], pa.large_string()),
        "posted_at": pa.array([r[1] for r in rows], pa.timestamp("ms", tz="Europe/Paris")),
        "platform": pa.array(["tiktok", "tiktok"]).dictionary_encode(),
        "image": pa.array([r[2] for r in rows], pa.binary_view()),
    }), day / "arrow-views.parquet")
    # DuckDB COPY ... TO
    rows = ids("duckdb")
    frame = pd.DataFrame({"image_id": [r[0] for r in rows], "campaign_id": ["alpha", "beta"],
                          "posted_at": pd.to_datetime([r[1] for r in rows], utc=True), "image": [r[2] for r in rows]})
    con = duckdb.connect()
    con.register("frame", frame)
    con.execute("SET TimeZone='UTC'")
    con.execute(f"COPY (SELECT image_id, campaign_id, posted_at::TIMESTAMPTZ AS posted_at, image::BLOB AS image "
                f"FROM frame) TO '{day / 'duckdb.parquet'}' (FORMAT PARQUET)")
    con.close()
    # Spark itself, with legacy INT96 timestamps
    rows = ids("spark-int96")
    old = spark.conf.get("spark.sql.parquet.outputTimestampType")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "INT96")
    try:
        sdf = spark.createDataFrame([(r[0], c, r[1], bytearray(r[2])) for r, c in zip(rows, ("alpha", "beta"))],
                                    "image_id string, campaign_id string, posted_at timestamp, image binary")
        sdf.coalesce(1).write.parquet(str(root / "date=2026-11-29" / "spark"))
    finally:
        spark.conf.set("spark.sql.parquet.outputTimestampType", old)
    assert any(f.physical_type == "INT96" for f in pq.ParquetFile(
        next((root / "date=2026-11-29" / "spark").glob("*.parquet"))).schema), "the Spark file must hold INT96"
    # Hive folders: a partition column that repeats a data column, and one (campaign) that exists only in the path
    rows = ids("hive")
    part = root / "date=2026-11-30" / "campaign_id=gamma"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": [r[0] for r in rows], "posted_at": [r[1] for r in rows],
                             "image": [r[2] for r in rows]}), part / "hive.parquet")
    return expected


def test_every_producer_reads_to_the_same_rows(spark, tmp_path):  # noqa: F811
    expected = _write_all_producers(tmp_path / "dump", spark)
    cfg = fast_config(str(tmp_path / "dump" / "date=*"), str(tmp_path / "lake"), input={"extra_columns": []})
    row = run_job_in_process(spark, cfg)
    assert row["status"] == "succeeded", row["_log"]
    images = read_table(str(tmp_path / "lake" / "images"))
    assert len(images) == len(expected) == images.image_id.nunique()
    assert set(images.image_id) == set(expected)
    got = {r.image_id: r.posted_at.to_pydatetime() for r in images.itertuples()}
    for image_id, when in expected.items():
        assert got[image_id] == when, (image_id, got[image_id], when)
    assert set(images.status) <= {"ok", "no_face"}, images[["image_id", "status", "error"]]
    campaigns = dict(zip(images.image_id, images.campaign_id))
    assert {campaigns[i] for i in expected if i.startswith("hive")} == {"gamma"}  # from the folder name
    assert campaigns["pandas-ns-tz-0"] == "alpha" and campaigns["pandas-ns-tz-1"] == "beta"  # categorical
    assert set(images[images.image_id.str.startswith("arrow-views")].platform) == {"tiktok"}


@pytest.mark.parametrize("fmt,scale", [("epoch_s", 1), ("epoch_ms", 1000)])
def test_epoch_integers_need_their_unit_named(spark, tmp_path, fmt, scale):  # noqa: F811
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.inputs import InputError, read_input

    (tmp_path / "dump").mkdir()
    times = [_t(i) for i in range(3)]
    pq.write_table(pa.table({"image_id": ["e0", "e1", "e2"], "campaign_id": ["c"] * 3,
                             "posted_at": pa.array([int(t.timestamp()) * scale for t in times], pa.int64()),
                             "image": [_png(i) for i in range(3)]}), tmp_path / "dump" / "epoch.parquet")
    auto = job_config_from_dict(fast_config(str(tmp_path / "dump"), str(tmp_path / "lake"),
                                            input={"extra_columns": []}))
    with pytest.raises(InputError, match=r"epoch\.parquet: column 'posted_at' .* has type int64.*never guessed.*"
                                         r"epoch_s or epoch_ms"):
        read_input(spark, auto.input)
    cfg = fast_config(str(tmp_path / "dump"), str(tmp_path / "lake"),
                      input={"extra_columns": [], "posted_at_format": fmt})
    row = run_job_in_process(spark, cfg)
    assert row["n_scored"] == 3
    images = read_table(str(tmp_path / "lake" / "images")).sort_values("image_id")
    assert [t.to_pydatetime() for t in images.posted_at] == times


def test_text_that_is_not_iso8601_is_refused_up_front_naming_the_row(spark, tmp_path):  # noqa: F811
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.inputs import InputError, read_input

    (tmp_path / "dump").mkdir()
    pq.write_table(pa.table({"image_id": ["a", "b", "c"], "campaign_id": ["c"] * 3,
                             "posted_at": ["2026-11-30T10:00:00Z", "yesterday at noon", None],
                             "image": [_png(i) for i in range(3)]}), tmp_path / "dump" / "text.parquet")
    cfg = job_config_from_dict(fast_config(str(tmp_path / "dump"), str(tmp_path / "lake"),
                                           input={"extra_columns": []}))
    with pytest.raises(InputError, match=r"text\.parquet: column 'posted_at' .* has type string, read as ISO-8601 text, and 1 value\(s\) in 1 file\(s\) are not "
                                         r"ISO-8601 \(first: row 1, 'yesterday at noon'\)"):
        read_input(spark, cfg.input)


def test_wrong_types_are_refused_naming_file_column_type_and_fix(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.inputs import InputError, read_input

    (tmp_path / "dump").mkdir()
    pq.write_table(pa.table({"image_id": ["a"], "campaign_id": ["c"], "image": ["/not/bytes.jpg"]}),
                   tmp_path / "dump" / "strings.parquet")
    cfg = job_config_from_dict(fast_config(str(tmp_path / "dump"), str(tmp_path / "lake"),
                                           input={"extra_columns": [], "payload": "image"}))
    with pytest.raises(InputError, match=r"strings\.parquet: column 'image' \(input\.columns\.image\) has type string,"
                                         r" expected binary .* belongs in input\.columns\.uri"):
        read_input(None, cfg.input)
