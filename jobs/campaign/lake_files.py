"""The executor side of the lake: Parquet files of the images, faces and tracks tables, with their Delta
statistics.

Runs inside Spark tasks (jobs/campaign/scoring.py), so it uses pyarrow and fsspec only: never
deltalake, which must not be loaded in a process that Spark's Python daemon later forks. The driver
commits the files these functions return (jobs/campaign/lake.py).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import time
import uuid
from typing import Any, Iterable

from fer_core.tables import PROB_COLUMNS

from jobs.campaign.inputs import filesystem, is_remote

__all__ = ["PARTITION", "STATS_COLUMNS", "STATS_PROPERTY", "STATS_TABLES", "partition_dir", "stats_columns",
           "footer_stats", "write_part_files"]

PARTITION = "campaign_id"
STATS_COLUMNS = ("posted_at", "scored_at", "run_id", "status", "platform", "model_version", "detector_version",
                 "width", "height", "n_faces", "face_index", "det_score", "dominant_emotion", "emotion", "sentiment",
                 "valence", "scoring_id", *PROB_COLUMNS)
"""Columns of the images, faces and tracks files whose min/max/nullCount go into the Delta log, so readers skip
files (by posted_at, run_id, status ...). Never image_id: an erased image's id would stay in the log's
history; nor the dump's free text (caption, error, source, extra columns). Also the tables'
``delta.dataSkippingStatsColumns``, so delta-rs (compaction, deletes) writes no other column's stats."""
STATS_PROPERTY = "delta.dataSkippingStatsColumns"
STATS_TABLES = ("images", "faces", "tracks")




def _pa():
    import pyarrow as pa

    return pa


def partition_dir(value: str | None) -> str:
    """Folder of one campaign: ``campaign_id=<value>``; characters outside [A-Za-z0-9_.-] are replaced
    and a short hash added, so the relative path needs no URI escaping (the log holds the real value)."""
    if value is None:
        return f"{PARTITION}=__HIVE_DEFAULT_PARTITION__"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:80]
    if safe != value:
        safe += "-" + hashlib.sha1(value.encode()).hexdigest()[:8]
    return f"{PARTITION}={safe}"


def stats_columns(schema) -> list[str]:
    """The STATS_COLUMNS a table's (pyarrow) schema has, in STATS_COLUMNS order."""
    return [c for c in STATS_COLUMNS if c in schema.names]


def _stat_value(value: Any, arrow_type) -> Any:
    """A Parquet footer min/max (its raw physical value) as Delta's stats JSON writes it: timestamps as
    ISO-8601 UTC truncated to milliseconds (Delta readers widen max by 1 ms), numbers and strings as is."""
    pa = _pa()
    if pa.types.is_timestamp(arrow_type):
        per_ms = {"s": 1e-3, "ms": 1, "us": 1000, "ns": 1_000_000}[arrow_type.unit]
        ms = int(value // per_ms) if per_ms >= 1 else int(value * 1000)
        t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=ms)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def footer_stats(metadata, schema, columns: Iterable[str]) -> dict[str, Any]:
    """Delta add-action stats (numRecords, minValues, maxValues, nullCount) of one written Parquet file,
    from its footer (``pyarrow.parquet.FileMetaData``): no second pass over the data. A column whose
    row groups lack min/max gets its nullCount only (all-null) or nothing (unknown: never skipped)."""
    wanted = set(columns)
    index = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in [n for n in schema.names if n in wanted and n in index]:
        lo = hi = None
        n_null, known, has_values = 0, True, False
        for g in range(metadata.num_row_groups):
            st = metadata.row_group(g).column(index[name]).statistics
            if st is None or not st.has_null_count:
                known = False
                break
            n_null += st.null_count
            if st.has_min_max:
                has_values = True
                lo = st.min_raw if lo is None else min(lo, st.min_raw)
                hi = st.max_raw if hi is None else max(hi, st.max_raw)
            elif st.num_values:  # values but no min/max (e.g. too long): unknown
                known = False
                break
        if not known:
            continue
        nulls[name] = n_null
        if has_values:
            arrow_type = schema.field(name).type
            mins[name], maxs[name] = _stat_value(lo, arrow_type), _stat_value(hi, arrow_type)
    return {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def write_part_files(table_uri: str, rows: list[dict[str, Any]], schema, run_id: str,
                     options: dict[str, str] | None) -> list[dict[str, Any]]:
    """Write ``rows`` as one Parquet file per campaign under ``table_uri``; return their add-action metadata,
    with Delta statistics of the STATS_COLUMNS taken from each file's footer.

    Runs on executors (pyarrow + fsspec, no deltalake). The partition column is kept out of the files
    (Delta stores it in the log).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pd.DataFrame(rows)
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    fs, root = filesystem(table_uri, options)
    out: list[dict[str, Any]] = []
    data_schema = schema.remove(schema.get_field_index(PARTITION))
    for campaign in sorted(df[PARTITION].dropna().unique().tolist()) + ([None] if df[PARTITION].isna().any() else []):
        mask = (df[PARTITION] == campaign).to_numpy() if campaign is not None else df[PARTITION].isna().to_numpy()
        sub = table.filter(pa.array(mask)).drop_columns([PARTITION]).cast(data_schema)
        rel = f"{partition_dir(campaign)}/part-{run_id}-{uuid.uuid4().hex}.snappy.parquet"
        full = f"{root.rstrip('/')}/{rel}"
        if not is_remote(table_uri):
            fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        footers: list[Any] = []
        with fs.open(full, "wb") as f:
            pq.write_table(sub, f, compression="snappy", metadata_collector=footers)
        size = fs.size(full)
        stats = footer_stats(footers[0], data_schema, STATS_COLUMNS)
        out.append({"path": rel, "campaign_id": campaign, "size": int(size),
                    "modification_time": int(time.time() * 1000), "num_records": sub.num_rows,
                    "stats": json.dumps(stats)})
    return out
