"""The Delta lake: table schemas, executor-side Parquet files, driver-side commits, campaign recompute.

Exactly-once protocol (one run = one run_id):
1. Executors write Parquet files into the table folders (``write_part_files``, pyarrow + fsspec).
   Files of failed or killed attempts are never referenced, so they are invisible (VACUUM removes them).
2. The driver writes a manifest ``<lake>/_job/pending/<run_id>.json`` (the add actions of every table,
   the affected campaigns and the runs row) in one atomic put.
3. It commits faces, images (``create_write_transaction`` + AddAction), then the campaign MERGE, then
   the runs row; every commit carries the app transaction ``score_campaign:<run_id>``, and a table that
   already has it is skipped. Then the manifest is deleted.
4. Every run first replays pending manifests (``recover_pending``), so a run killed anywhere between
   2 and 3 is completed by the next one: no lost row, no duplicate (incremental skipping happens
   after recovery).

deltalake is imported lazily, only in driver functions: never in a process that Spark forks.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from fer_core.labels import EMOTIONS

from jobs.campaign.inputs import filesystem, is_remote, read_parquet_files

__all__ = ["Lake", "images_schema", "FACES_SCHEMA", "CAMPAIGNS_SCHEMA", "RUNS_SCHEMA", "write_part_files",
           "STATUSES", "APP_PREFIX", "STATS_COLUMNS", "footer_stats"]

STATUSES = ("ok", "no_face", "decode_error", "fetch_error", "too_large", "empty")
APP_PREFIX = "score_campaign:"
PARTITION = "campaign_id"
TABLES = ("images", "faces", "campaigns", "runs")
ERASABLE = ("images", "faces", "campaigns")
STATS_COLUMNS = ("posted_at", "scored_at", "run_id", "status", "platform", "model_version", "detector_version",
                 "width", "height", "n_faces", "face_index", "det_score", "dominant_emotion", "emotion", "sentiment",
                 "valence", *(f"p_{e}" for e in EMOTIONS))
"""Columns of the images and faces files whose min/max/nullCount go into the Delta log, so readers skip
files (by posted_at, run_id, status ...). Never image_id: an erased image's id would stay in the log's
history; nor the dump's free text (caption, error, source, extra columns). Also the tables'
``delta.dataSkippingStatsColumns``, so delta-rs (compaction, deletes) writes no other column's stats."""
STATS_PROPERTY = "delta.dataSkippingStatsColumns"
STATS_TABLES = ("images", "faces")


def _pa():
    import pyarrow as pa

    return pa


def _ts():
    return _pa().timestamp("us", tz="UTC")


def _probs() -> list:
    pa = _pa()
    return [pa.field(f"p_{e}", pa.float64()) for e in EMOTIONS]


def images_schema(extras: Iterable[Any] = ()):
    """images table: the contract columns, then the configured extra columns (pyarrow fields)."""
    pa = _pa()
    return pa.schema([
        pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()), pa.field("posted_at", _ts()),
        pa.field("platform", pa.string()), pa.field("caption", pa.string()), pa.field("source", pa.string()),
        pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("width", pa.int32()),
        pa.field("height", pa.int32()), pa.field("n_faces", pa.int32()), pa.field("dominant_emotion", pa.string()),
        *_probs(), pa.field("sentiment", pa.string()), pa.field("valence", pa.float64()),
        pa.field("model_version", pa.string()), pa.field("detector_version", pa.string()),
        pa.field("run_id", pa.string()), pa.field("scored_at", _ts()), *extras,
    ])


def faces_schema():
    pa = _pa()
    return pa.schema([
        pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()), pa.field("face_index", pa.int32()),
        pa.field("x", pa.float64()), pa.field("y", pa.float64()), pa.field("w", pa.float64()),
        pa.field("h", pa.float64()), pa.field("det_score", pa.float64()),
        pa.field("landmarks", pa.list_(pa.float64())), pa.field("emotion", pa.string()), *_probs(),
        pa.field("sentiment", pa.string()), pa.field("valence", pa.float64()),
        pa.field("model_version", pa.string()), pa.field("run_id", pa.string()),
    ])


def campaigns_schema():
    pa = _pa()
    return pa.schema([
        pa.field("campaign_id", pa.string()), pa.field("n_images", pa.int64()), pa.field("n_images_ok", pa.int64()),
        pa.field("n_images_with_faces", pa.int64()), pa.field("n_faces", pa.int64()),
        *[pa.field(f"share_{e}", pa.float64()) for e in EMOTIONS],
        pa.field("share_positive", pa.float64()), pa.field("share_negative", pa.float64()),
        pa.field("share_neutral_sentiment", pa.float64()), pa.field("net_sentiment", pa.float64()),
        pa.field("mean_valence", pa.float64()), pa.field("first_posted_at", _ts()),
        pa.field("last_posted_at", _ts()), pa.field("model_version", pa.string()), pa.field("run_id", pa.string()),
        pa.field("updated_at", _ts()),
        # the mix corrected for the model's confusions (fer_core.quantify); null when the model has no profile
        *[pa.field(f"adjusted_share_{e}", pa.float64()) for e in EMOTIONS],
        pa.field("adjusted_share_positive", pa.float64()), pa.field("adjusted_share_negative", pa.float64()),
        pa.field("adjusted_share_neutral_sentiment", pa.float64()), pa.field("adjusted_net_sentiment", pa.float64()),
    ])


def runs_schema():
    pa = _pa()
    return pa.schema([
        pa.field("run_id", pa.string()), pa.field("started_at", _ts()), pa.field("finished_at", _ts()),
        pa.field("status", pa.string()), pa.field("input", pa.string()), pa.field("output", pa.string()),
        pa.field("n_input", pa.int64()), pa.field("n_duplicates", pa.int64()), pa.field("n_scored", pa.int64()),
        pa.field("n_skipped", pa.int64()), *[pa.field(f"n_{s}", pa.int64()) for s in STATUSES],
        pa.field("n_faces", pa.int64()), pa.field("duration_s", pa.float64()), pa.field("images_per_s", pa.float64()),
        pa.field("model_version", pa.string()), pa.field("detector_version", pa.string()),
        pa.field("config_hash", pa.string()), pa.field("spark_master", pa.string()),
        pa.field("lock_wait_s", pa.float64()),  # seconds it waited for the lake lease (null before leases)
    ])


def erasures_schema():
    """erasures: one row per erased campaign or image (a tombstone the scoring job honours)."""
    pa = _pa()
    return pa.schema([
        pa.field("erasure_id", pa.string()), pa.field("kind", pa.string()), pa.field("id", pa.string()),
        pa.field("campaign_id", pa.string()), pa.field("reason", pa.string()), pa.field("erased_at", _ts()),
    ])


FACES_SCHEMA = faces_schema
CAMPAIGNS_SCHEMA = campaigns_schema
RUNS_SCHEMA = runs_schema


def delta_options(options: dict[str, str] | None) -> dict[str, str] | None:
    """Config storage options -> deltalake storage_options (AWS_* keys; http endpoints allowed)."""
    if not options:
        return None
    out = {k.upper() if k.upper().startswith("AWS_") else k: v for k, v in options.items()}
    endpoint = out.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        out.setdefault("AWS_ALLOW_HTTP", "true")
    return out


# ---------------------------------------------------------------- executor side: Parquet files


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


# ---------------------------------------------------------------- driver side


@dataclass
class Lake:
    """The four tables under one root (local dir or s3://bucket/prefix)."""

    root: str
    storage_options: dict[str, str] | None = None

    def __post_init__(self) -> None:
        import os

        self.root = self.root.rstrip("/")
        if not is_remote(self.root):
            self.root = os.path.abspath(self.root[len("file://"):] if self.root.startswith("file://") else self.root)

    # -- paths / handles
    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    @property
    def options(self) -> dict[str, str] | None:
        return delta_options(self.storage_options)

    def table(self, name: str):
        from deltalake import DeltaTable

        uri = self.uri(name)
        if not DeltaTable.is_deltatable(uri, storage_options=self.options):
            return None
        return DeltaTable(uri, storage_options=self.options)

    def ensure(self, name: str, schema, partition_by: list[str] | None) -> None:
        """Create the table (empty) if it does not exist yet."""
        from deltalake import DeltaTable

        if self.table(name) is None:
            config = {STATS_PROPERTY: ",".join(stats_columns(schema))} if name in STATS_TABLES else None
            DeltaTable.create(self.uri(name), schema, mode="ignore", partition_by=partition_by,
                              storage_options=self.options, configuration=config)

    def limit_stats_columns(self, name: str) -> bool:
        """Give a table made before the property (an older lake) its ``delta.dataSkippingStatsColumns``, so
        a rewrite by delta-rs (compaction, a delete) writes stats of STATS_COLUMNS only, not of image_id.
        Returns whether it changed the table."""
        dt = self.table(name) if name in STATS_TABLES else None
        if dt is None:
            return False
        wanted = ",".join(stats_columns(_pa().schema(dt.schema())))
        if dt.metadata().configuration.get(STATS_PROPERTY) == wanted:
            return False
        dt.alter.set_table_properties({STATS_PROPERTY: wanted})
        return True

    @staticmethod
    def app_id(run_id: str) -> str:
        return APP_PREFIX + run_id

    def committed(self, name: str, run_id: str) -> bool:
        dt = self.table(name)
        return dt is not None and dt.transaction_version(self.app_id(run_id)) is not None

    def _txn(self, run_id: str):
        from deltalake import CommitProperties, Transaction

        return CommitProperties(app_transactions=[Transaction(self.app_id(run_id), 1)],
                                custom_metadata={"run_id": run_id})

    # -- commits
    def commit_files(self, name: str, files: list[dict[str, Any]], schema, run_id: str) -> bool:
        """ONE append commit of executor-written files; False if this run had already committed it."""
        from deltalake.transaction import AddAction

        if not files or self.committed(name, run_id):
            return False
        self.ensure(name, schema, [PARTITION])
        adds = [AddAction(f["path"], int(f["size"]), {PARTITION: f["campaign_id"]}, int(f["modification_time"]),
                          True, f["stats"]) for f in files]
        self.table(name).create_write_transaction(adds, mode="append", schema=schema, partition_by=[PARTITION],
                                                  commit_properties=self._txn(run_id))
        return True

    def merge_campaigns(self, rows, run_id: str) -> bool:
        """MERGE recomputed campaign rows (pyarrow Table) on campaign_id, once per run."""
        if self.committed("campaigns", run_id) or rows.num_rows == 0:
            return False
        self.ensure("campaigns", campaigns_schema(), None)
        # merge_schema: lakes written before a column was added gain it (older rows read null)
        (self.table("campaigns").merge(rows, predicate="t.campaign_id = s.campaign_id", source_alias="s",
                                       target_alias="t", merge_schema=True, commit_properties=self._txn(run_id))
         .when_matched_update_all().when_not_matched_insert_all().execute())
        return True

    def drop_campaign_rows(self, campaigns: Iterable[str]) -> int:
        """Delete the campaigns rows of campaigns left without images (all erased); idempotent."""
        dt = self.table("campaigns")
        campaigns = sorted(campaigns)
        if dt is None or not campaigns:
            return 0
        return sum(int(dt.delete(p).get("num_deleted_rows", 0) or 0) for p in _in_predicates("campaign_id", campaigns))

    def drop_superseded_fetch_errors(self, image_ids: list[str], model_version: str, run_id: str) -> int:
        """Delete the earlier fetch_error rows of images this run fetched again (its own rows stay).

        Runs after this run's images commit, so every id has a newer row; idempotent, so a replay
        after a crash is safe. Returns how many rows were deleted.
        """
        dt = self.table("images")
        if not image_ids or dt is None:
            return 0
        deleted = 0
        for ids in _in_predicates("image_id", image_ids):
            predicate = (f"status = 'fetch_error' AND model_version = {_sql_literal(model_version)} "
                         f"AND run_id <> {_sql_literal(run_id)} AND {ids}")
            deleted += int(dt.delete(predicate).get("num_deleted_rows", 0) or 0)
        return deleted

    def append_run(self, row: dict[str, Any], run_id: str) -> bool:
        return self.append_once("runs", _pa().Table.from_pylist([row], schema=runs_schema()), run_id)

    def append_once(self, name: str, rows, run_id: str) -> bool:
        """Append ``rows`` (pyarrow Table) to table ``name`` once per run (the run's app transaction);
        False if this run had already appended them."""
        from deltalake import write_deltalake

        if self.committed(name, run_id):
            return False
        # schema_mode merge: a table written before a column existed gains it (older rows read null)
        write_deltalake(self.uri(name), rows, mode="append", storage_options=self.options,
                        commit_properties=self._txn(run_id), schema_mode="merge")
        return True

    # -- runs that gave up waiting for the lake lease (they hold no lease, so they write no table)
    def _gave_up_dir(self) -> str:
        return f"{self.root}/_job/gave_up"

    def note_gave_up(self, run_id: str, started: datetime.datetime, message: str, cfg: Any) -> None:
        """Leave a note (one small object of its own) that the next lease holder turns into a runs row."""
        from jobs.campaign.config import config_hash

        fs, d = filesystem(self._gave_up_dir(), self.storage_options)
        if not is_remote(self.root):
            fs.makedirs(d, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        row = {"run_id": run_id, "started_at": started.isoformat(), "finished_at": now.isoformat(),
               "status": "gave_up_waiting", "input": cfg.input.path, "output": self.root, "error": message,
               "config_hash": config_hash(cfg), "lock_wait_s": (now - started).total_seconds()}
        fs.pipe_file(f"{d}/{run_id}.json", json.dumps(row).encode())

    def record_gave_up_runs(self) -> int:
        """Append the notes of runs that gave up waiting to the runs table (status gave_up_waiting)."""
        fs, d = filesystem(self._gave_up_dir(), self.storage_options)
        if not fs.exists(d):
            return 0
        n = 0
        for path in sorted(p for p in fs.ls(d, detail=False) if p.endswith(".json")):
            note = json.loads(fs.cat_file(path))
            row = {f.name: note.get(f.name) for f in runs_schema()}
            for k in ("started_at", "finished_at"):
                row[k] = datetime.datetime.fromisoformat(note[k])
            self.append_run(row, note["run_id"])
            fs.rm_file(path)
            n += 1
        return n

    # -- maintenance
    def maintain(self, *, vacuum_hours: int | None = None, dry_run: bool = False,
                 tables: Iterable[str] = TABLES) -> dict[str, dict[str, Any]]:
        """Compact each table's small files (one run = one file per campaign, so hourly runs pile
        them up), then VACUUM files unreferenced for more than ``vacuum_hours`` (None: no vacuum).

        Refuses while a run's manifest is pending: its Parquet files are not committed yet, and a
        vacuum would delete what the next run's recovery commits. Run it under the job's lock.
        Returns per table: files before/after, and the files vacuumed (or that would be, if dry_run).
        """
        from jobs.campaign.inputs import InputError

        pending = [m["run_id"] for m in self.pending_manifests()]
        if pending:
            raise InputError(f"runs {pending} have uncommitted files under {self.root}; run the scoring job once "
                             "(it completes them) before maintaining the lake")
        report: dict[str, dict[str, Any]] = {}
        for name in tables:
            dt = self.table(name)
            if dt is None:
                continue
            before = len(dt.file_uris())
            if not dry_run:
                if self.limit_stats_columns(name):
                    dt = self.table(name)
                dt.optimize.compact()  # the new files' stats: delta-rs's, of the STATS_PROPERTY columns
                dt = self.table(name)
            vacuumed: list[str] = []
            if vacuum_hours is not None:
                # the caller's retention is the contract (jobs/maintain_lake.py asks for >= 24 h)
                vacuumed = dt.vacuum(retention_hours=int(vacuum_hours), dry_run=dry_run,
                                     enforce_retention_duration=False)
            report[name] = {"files_before": before, "files_after": len(self.table(name).file_uris()),
                            "vacuumed": len(vacuumed), "version": self.table(name).version()}
        return report

    # -- erasure (a person's or a campaign's faces removed on request)
    def erased(self) -> tuple[set[str], set[str]]:
        """(erased campaign ids, erased image ids): the scoring job never scores these again."""
        dt = self.table("erasures")
        if dt is None:
            return set(), set()
        rows = dt.to_pyarrow_table(columns=["kind", "id"]).to_pylist()
        return ({r["id"] for r in rows if r["kind"] == "campaign"}, {r["id"] for r in rows if r["kind"] == "image"})

    def stale_campaigns(self) -> set[str]:
        """Campaigns that lost images to an erasure after their campaigns row was computed; the next
        scoring run recomputes them."""
        erasures, campaigns = self.table("erasures"), self.table("campaigns")
        if erasures is None or campaigns is None:
            return set()
        latest: dict[str, Any] = {}
        for r in erasures.to_pyarrow_table(columns=["kind", "campaign_id", "erased_at"]).to_pylist():
            if r["kind"] == "image" and r["campaign_id"] is not None:
                latest[r["campaign_id"]] = max(latest.get(r["campaign_id"], r["erased_at"]), r["erased_at"])
        updated = {r["campaign_id"]: r["updated_at"]
                   for r in campaigns.to_pyarrow_table(columns=["campaign_id", "updated_at"]).to_pylist()}
        return {c for c, t in latest.items() if c in updated and (updated[c] is None or updated[c] < t)}

    def erase(self, *, campaigns: Iterable[str] = (), images: Iterable[str] = (), reason: str,
              vacuum: bool = True, dry_run: bool = False) -> dict[str, Any]:
        """Delete every row of these campaigns / images from images, faces and campaigns, and record a
        tombstone in ``erasures`` first, so no later run scores them again (the dump may still hold them).

        vacuum: then VACUUM those tables with zero retention, so the deleted rows' files are gone from
        storage too (time travel to before the erasure stops working). Run it under the scoring job's
        lock: a run writing files meanwhile would lose them. An image erasure leaves its campaign's
        campaigns row stale until the next scoring run recomputes it. Refused while a run is pending.
        Returns rows deleted per table, the affected campaigns and files vacuumed.
        """
        import pyarrow.compute as pc
        from deltalake import DeltaTable, write_deltalake

        from jobs.campaign.inputs import InputError

        campaigns, images = sorted(set(campaigns)), sorted(set(images))
        if not campaigns and not images:
            raise InputError("nothing to erase: name at least one campaign or image id")
        if not reason.strip():
            raise InputError("give a reason for the erasure (it is kept in the erasures table as the record)")
        pending = [m["run_id"] for m in self.pending_manifests()]
        if pending:
            raise InputError(f"runs {pending} have uncommitted files under {self.root}; run the scoring job once "
                             "(it completes them) before erasing")
        image_campaign: dict[str, str | None] = {i: None for i in images}
        counts: dict[str, int] = {}
        images_dt = self.table("images")
        if images_dt is not None and images:
            found = images_dt.to_pyarrow_dataset().to_table(
                columns=["image_id", "campaign_id"], filter=pc.field("image_id").isin(images))
            image_campaign.update(zip(found["image_id"].to_pylist(), found["campaign_id"].to_pylist()))
        affected = sorted(set(campaigns) | {c for c in image_campaign.values() if c is not None})
        if dry_run:
            for name in ERASABLE:
                dt = self.table(name)
                if dt is None:
                    continue
                present = set(_pa().schema(dt.schema()).names)
                table = dt.to_pyarrow_table(columns=[c for c in ("campaign_id", "image_id") if c in present])
                mask = pc.is_in(table["campaign_id"], _pa().array(campaigns, _pa().string()))
                if images and "image_id" in present:
                    mask = pc.or_(mask, pc.is_in(table["image_id"], _pa().array(images, _pa().string())))
                counts[name] = int(pc.sum(pc.cast(mask, "int64")).as_py() or 0)
            return {"deleted": counts, "campaigns": affected, "vacuumed": 0, "dry_run": True}
        pa = _pa()
        now = datetime.datetime.now(datetime.timezone.utc)
        erasure_id = uuid.uuid4().hex[:12]
        tombstones = [{"erasure_id": erasure_id, "kind": "campaign", "id": c, "campaign_id": c, "reason": reason,
                       "erased_at": now} for c in campaigns]
        tombstones += [{"erasure_id": erasure_id, "kind": "image", "id": i, "campaign_id": c, "reason": reason,
                        "erased_at": now} for i, c in image_campaign.items()]
        write_deltalake(self.uri("erasures"), pa.Table.from_pylist(tombstones, schema=erasures_schema()),
                        mode="append", storage_options=self.options)
        vacuumed = 0
        for name in ERASABLE:
            self.limit_stats_columns(name)  # the rewritten files' stats must not list image ids
            table = self.table(name)
            if table is None:
                continue
            predicates = _in_predicates("campaign_id", campaigns)
            if name != "campaigns":  # the campaigns table has no image rows
                predicates += _in_predicates("image_id", images)
            if not predicates:
                continue
            counts[name] = sum(int(table.delete(p).get("num_deleted_rows", 0) or 0) for p in predicates)
            if vacuum:
                vacuumed += len(DeltaTable(self.uri(name), storage_options=self.options).vacuum(
                    retention_hours=0, dry_run=False, enforce_retention_duration=False))
        return {"deleted": counts, "campaigns": affected, "vacuumed": vacuumed, "dry_run": False,
                "erasure_id": erasure_id}

    # -- manifests (write-ahead log of a run's commits)
    def _manifest_dir(self) -> str:
        return f"{self.root}/_job/pending"

    def write_manifest(self, run_id: str, manifest: dict[str, Any]) -> None:
        fs, d = filesystem(self._manifest_dir(), self.storage_options)
        data = json.dumps(manifest, default=str).encode()
        if is_remote(self.root):
            fs.pipe(f"{d}/{run_id}.json", data)  # one PUT: atomic
        else:
            import os

            os.makedirs(d, exist_ok=True)
            tmp = f"{d}/.{run_id}.json.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, f"{d}/{run_id}.json")

    def pending_manifests(self) -> list[dict[str, Any]]:
        fs, d = filesystem(self._manifest_dir(), self.storage_options)
        if not fs.exists(d):
            return []
        out = []
        for p in sorted(fs.ls(d, detail=False)):
            if p.endswith(".json") and not p.rsplit("/", 1)[-1].startswith("."):
                with fs.open(p, "rb") as f:
                    out.append(json.loads(f.read()))
        return out

    def drop_manifest(self, run_id: str) -> None:
        fs, d = filesystem(self._manifest_dir(), self.storage_options)
        path = f"{d}/{run_id}.json"
        if fs.exists(path):
            fs.rm(path)

    # -- reading tables in Spark (executors read the files; the driver only lists them)
    def spark_read(self, spark, name: str, columns: list[str], campaigns: Iterable[str] | None = None):
        """DataFrame of ``columns`` of table ``name`` (None if the table does not exist). ``campaigns``
        prunes partitions on the driver. Only the named columns are read from the files."""
        import pyarrow as pa
        from pyspark.sql.pandas.types import from_arrow_schema

        dt = self.table(name)
        if dt is None:
            return None
        arrow_schema = pa.schema(dt.schema())
        partition_cols = list(dt.metadata().partition_columns)
        wanted = set(campaigns) if campaigns is not None else None
        actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        files, consts = [], []
        for a in actions:
            values = {c: a.get(f"partition.{c}") for c in partition_cols}
            if wanted is not None and PARTITION in values and values[PARTITION] not in wanted:
                continue
            path = a["path"]
            files.append(path if "://" in path or path.startswith("/") else f"{self.uri(name)}/{path}")
            consts.append({c: values[c] for c in partition_cols if c in columns})
        schema = from_arrow_schema(pa.schema([arrow_schema.field(c) for c in columns]))
        df = read_parquet_files(spark, files, schema, self.storage_options, constants=consts)
        return df.drop("_file")


def _sql_literal(value: str) -> str:
    """A SQL string literal for a delta-rs predicate (ids come from the dump: quote, never trust)."""
    return "'" + str(value).replace("'", "''") + "'"


def _in_predicates(column: str, values: Iterable[str], chunk: int = 1000) -> list[str]:
    """``column IN (...)`` predicates, at most ``chunk`` quoted values each (a sane SQL size)."""
    values = list(values)
    return [f"{column} IN ({', '.join(_sql_literal(v) for v in values[i:i + chunk])})"
            for i in range(0, len(values), chunk)]


# ---------------------------------------------------------------- campaign recompute


def recompute_campaigns(spark, lake: Lake, campaigns: list[str], model_version: str, run_id: str, *,
                        mix_matrix: list[list[float]] | None = None, sentiment_groups: dict[str, str] | None = None):
    """Campaign rows recomputed from the images and faces tables (current model version only), as a
    pyarrow Table: equal to what one run over all the data gives. Runs in Spark; only one row per
    campaign reaches the driver.

    mix_matrix: the model's confusion profile (``ModelSpec.mix_matrix``); with it the adjusted_share_*
    columns hold ``fer_core.quantify.adjusted_mix`` of each campaign's mean face probabilities, grouped
    into sentiments by ``sentiment_groups`` (emotion -> positive/neutral/negative).
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import functions as F

    schema = campaigns_schema()
    if not campaigns:
        return schema.empty_table()
    images = lake.spark_read(spark, "images", ["campaign_id", "status", "n_faces", "posted_at", "model_version"],
                             campaigns)
    prob_columns = [f"p_{e}" for e in EMOTIONS]
    faces = lake.spark_read(spark, "faces", ["campaign_id", "emotion", "sentiment", "valence", "model_version",
                                             *prob_columns], campaigns)
    if images is None:
        return schema.empty_table()
    images = images.where(F.col("model_version") == model_version)
    img = images.groupBy("campaign_id").agg(
        F.count(F.lit(1)).alias("n_images"),
        F.sum(F.col("status").isin("ok", "no_face").cast("long")).alias("n_images_ok"),
        F.sum((F.col("n_faces") > 0).cast("long")).alias("n_images_with_faces"),
        F.min("posted_at").alias("first_posted_at"), F.max("posted_at").alias("last_posted_at"),
    )
    if faces is not None:
        faces = faces.where(F.col("model_version") == model_version)
        share = lambda c, v: F.avg((F.col(c) == v).cast("double"))  # noqa: E731
        fc = faces.groupBy("campaign_id").agg(
            F.count(F.lit(1)).alias("n_faces"),
            *[share("emotion", e).alias(f"share_{e}") for e in EMOTIONS],
            share("sentiment", "positive").alias("share_positive"),
            share("sentiment", "negative").alias("share_negative"),
            share("sentiment", "neutral").alias("share_neutral_sentiment"),
            F.avg("valence").alias("mean_valence"),
            *[F.avg(c).alias(f"mean_{c}") for c in prob_columns],
        )
        joined = img.join(fc, "campaign_id", "left")
    else:
        joined = img
    pdf = joined.toPandas()  # one row per affected campaign
    now = pd.Timestamp.now(tz="UTC")
    for f in schema:
        if f.name not in pdf.columns:
            pdf[f.name] = None
    pdf["n_faces"] = pdf["n_faces"].fillna(0).astype("int64")
    pdf["net_sentiment"] = pdf["share_positive"] - pdf["share_negative"]
    has_faces = (pdf["n_faces"] > 0).to_numpy()
    if mix_matrix is not None and has_faces.any():
        from fer_core.quantify import adjusted_mix

        mix = adjusted_mix(pdf.loc[has_faces, [f"mean_{c}" for c in prob_columns]].to_numpy(np.float64),
                           np.asarray(mix_matrix, np.float64))
        for i, e in enumerate(EMOTIONS):
            pdf.loc[has_faces, f"adjusted_share_{e}"] = mix[:, i]
        from fer_core.sentiment import SentimentConfig

        groups = sentiment_groups or SentimentConfig().groups
        for group, column in (("positive", "adjusted_share_positive"), ("negative", "adjusted_share_negative"),
                              ("neutral", "adjusted_share_neutral_sentiment")):
            members = [i for i, e in enumerate(EMOTIONS) if groups.get(e) == group]
            pdf.loc[has_faces, column] = mix[:, members].sum(axis=1)
        pdf["adjusted_net_sentiment"] = pdf["adjusted_share_positive"] - pdf["adjusted_share_negative"]
    pdf["model_version"] = model_version
    pdf["run_id"] = run_id
    pdf["updated_at"] = now
    for c in ("first_posted_at", "last_posted_at"):
        pdf[c] = pd.to_datetime(pdf[c], utc=True)
    for c in schema.names:
        if c.startswith("adjusted_"):
            pdf[c] = pd.to_numeric(pdf[c], errors="coerce").astype("float64")
    return pa.Table.from_pandas(pdf[schema.names], schema=schema, preserve_index=False)
