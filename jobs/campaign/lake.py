"""The Delta lake's commit protocol: the driver commits what the executors wrote, exactly once.

Exactly-once protocol (one run = one run_id):
1. Executors write Parquet files into the table folders (``lake_files.write_part_files``, pyarrow +
   fsspec). Files of failed or killed attempts are never referenced, so they are invisible (VACUUM
   removes them).
2. The driver writes a manifest ``<lake>/_job/pending/<run_id>.json`` (the add actions of every table,
   the affected campaigns and the runs row) in one atomic put.
3. It commits faces, tracks (video posts), images (``create_write_transaction`` + AddAction), then the
   record of the input files the run consumed (the inputs table: after the rows it vouches for), then the
   campaign MERGE, then the runs row; every commit carries the app transaction ``score_campaign:<run_id>``,
   and a table that already has it is skipped. Then the manifest is deleted.
4. Every run first replays pending manifests (``recover_pending``), so a run killed anywhere between
   2 and 3 is completed by the next one: no lost row, no duplicate (incremental skipping happens
   after recovery).

The tables' schemas are fer_core.tables'; erasure and maintenance are in admin.py, the campaign
recompute in campaigns.py. deltalake is imported lazily, only in driver functions: never in a
process that Spark forks.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Iterable

from fer_core.tables import INPUTS_STATS_COLUMNS, campaigns_schema, inputs_schema, runs_schema

from jobs.campaign.inputs import filesystem, is_remote, read_parquet_files
from jobs.campaign.lake_files import PARTITION, STATS_PROPERTY, STATS_TABLES, stats_columns

__all__ = ["Lake", "APP_PREFIX", "TABLES", "delta_options", "in_predicates"]

APP_PREFIX = "score_campaign:"
TABLES = ("images", "faces", "tracks", "campaigns", "runs", "inputs")


def _pa():
    import pyarrow as pa

    return pa


def delta_options(options: dict[str, str] | None) -> dict[str, str] | None:
    """Config storage options -> deltalake storage_options (AWS_* keys; http endpoints allowed)."""
    if not options:
        return None
    out = {k.upper() if k.upper().startswith("AWS_") else k: v for k, v in options.items()}
    endpoint = out.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        out.setdefault("AWS_ALLOW_HTTP", "true")
    return out


# ---------------------------------------------------------------- driver side


@dataclass
class Lake:
    """The tables (TABLES) under one root (local dir or s3://bucket/prefix)."""

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

    def add_missing_columns(self, name: str, schema) -> list[str]:
        """Give a table written before some of ``schema``'s columns existed (an older lake) those columns,
        nullable, so older rows read null. Needed because a commit of executor-written files
        (``create_write_transaction``) keeps the table's schema as it is: without this the new columns'
        values would sit in the files, invisible to every reader. Idempotent (a replay adds nothing).
        Returns the names added."""
        from deltalake import Schema

        dt = self.table(name)
        if dt is None:
            return []
        have = set(_pa().schema(dt.schema()).names)
        missing = [f.with_nullable(True) for f in schema if f.name not in have]
        if missing:
            dt.alter.add_columns(Schema.from_arrow(_pa().schema(missing)).fields)
        return [f.name for f in missing]

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

        self.add_missing_columns(name, schema)  # also without files: readers of this run (the recompute) want them
        if not files or self.committed(name, run_id):
            return False
        self.ensure(name, schema, [PARTITION])
        adds = [AddAction(f["path"], int(f["size"]), {PARTITION: f["campaign_id"]}, int(f["modification_time"]),
                          True, f["stats"]) for f in files]
        self.table(name).create_write_transaction(adds, mode="append", schema=schema, partition_by=[PARTITION],
                                                  commit_properties=self._txn(run_id))
        return True

    def merge_campaigns(self, rows, run_id: str) -> bool:
        """MERGE recomputed campaign rows (pyarrow Table) on (campaign_id, scoring_id), once per run."""
        if self.committed("campaigns", run_id) or rows.num_rows == 0:
            return False
        self.ensure("campaigns", campaigns_schema(), None)
        self.add_missing_columns("campaigns", campaigns_schema())  # an older lake: the predicate needs scoring_id
        (self.table("campaigns").merge(rows, predicate="t.campaign_id = s.campaign_id AND t.scoring_id = s.scoring_id",
                                       source_alias="s", target_alias="t", merge_schema=True,
                                       commit_properties=self._txn(run_id))
         .when_matched_update_all().when_not_matched_insert_all().execute())
        return True

    def drop_stale_campaign_rows(self, campaigns: Iterable[str], rows) -> int:
        """Delete the campaigns rows of ``campaigns`` that the recompute (``rows``) no longer produces: a
        campaign left without images (all erased), an identity whose images are all erased, and the one
        row per campaign of a lake from before identities (scoring_id null: the recompute has replaced it
        with its ``~legacy`` identity's row). Idempotent, so a replay after a crash is safe."""
        dt = self.table("campaigns")
        campaigns = sorted(set(campaigns))
        if dt is None or not campaigns:
            return 0
        if "scoring_id" not in _pa().schema(dt.schema()).names:
            self.add_missing_columns("campaigns", campaigns_schema())
            dt = self.table("campaigns")
        keep = set(zip(rows.column("campaign_id").to_pylist(), rows.column("scoring_id").to_pylist()))
        have = dt.to_pyarrow_table(columns=["campaign_id", "scoring_id"])  # small: a row per campaign and identity
        wanted = set(campaigns)
        stale = {(c, i) for c, i in zip(have["campaign_id"].to_pylist(), have["scoring_id"].to_pylist())
                 if c in wanted and (c, i) not in keep}
        gone_campaigns = sorted({c for c, _ in stale} - {c for c, _ in keep})
        deleted = sum(int(dt.delete(p).get("num_deleted_rows", 0) or 0)
                      for p in in_predicates("campaign_id", gone_campaigns))
        legacy = sorted({c for c, i in stale if i is None} - set(gone_campaigns))
        deleted += sum(int(dt.delete(f"({p}) AND scoring_id IS NULL").get("num_deleted_rows", 0) or 0)
                       for p in in_predicates("campaign_id", legacy))
        for c, i in sorted((c, i) for c, i in stale if i is not None and c not in gone_campaigns):
            deleted += int(dt.delete(f"campaign_id = {_sql_literal(c)} AND scoring_id = {_sql_literal(i)}")
                           .get("num_deleted_rows", 0) or 0)
        return deleted

    def drop_campaign_rows(self, campaigns: Iterable[str]) -> int:
        """Delete every campaigns row of ``campaigns`` (campaigns left without images: all erased); idempotent."""
        dt = self.table("campaigns")
        campaigns = sorted(campaigns)
        if dt is None or not campaigns:
            return 0
        return sum(int(dt.delete(p).get("num_deleted_rows", 0) or 0) for p in in_predicates("campaign_id", campaigns))

    def live_paths(self, name: str, paths: Iterable[str]) -> set[str]:
        """Which of ``paths`` (add-action paths) are files of table ``name`` now: compaction
        (jobs/maintain_lake.py) rewrites a run's files into others."""
        dt = self.table(name)
        if dt is None:
            return set()
        have = set(_pa().table(dt.get_add_actions(flatten=True))["path"].to_pylist())
        return set(paths) & have

    def drop_superseded_fetch_errors(self, image_ids: list[str], scoring_id: str, run_id: str) -> int:
        """Delete the earlier fetch_error rows, by ``scoring_id``, of images this run fetched again (its own
        rows stay). A ``<model_version>~legacy`` identity (a manifest from before identities) names the rows
        without scoring_id of that model version.

        Runs after this run's images commit, so every id has a newer row; idempotent, so a replay
        after a crash is safe. Returns how many rows were deleted.
        """
        from fer_core.identity import LEGACY_SUFFIX

        dt = self.table("images")
        if not image_ids or dt is None:
            return 0
        if scoring_id.endswith(LEGACY_SUFFIX):
            mine = f"scoring_id IS NULL AND model_version = {_sql_literal(scoring_id[:-len(LEGACY_SUFFIX)])}"
        else:
            mine = f"scoring_id = {_sql_literal(scoring_id)}"
        deleted = 0
        for ids in in_predicates("image_id", image_ids):
            predicate = f"status = 'fetch_error' AND {mine} AND run_id <> {_sql_literal(run_id)} AND {ids}"
            deleted += int(dt.delete(predicate).get("num_deleted_rows", 0) or 0)
        return deleted

    def only_identity(self, scoring_id: str) -> bool:
        """Whether every images row is ``scoring_id``'s, read off the Delta log's file statistics (min = max
        = it, no nulls) without opening a file: the steady state between upgrades, in which a run has no
        backlog to look for. A file without statistics (an older lake) answers False."""
        dt = self.table("images")
        if dt is None:
            return True
        actions = _pa().table(dt.get_add_actions(flatten=True))
        needed = ("min.scoring_id", "max.scoring_id", "null_count.scoring_id")
        if not actions.num_rows:
            return True
        if not set(needed) <= set(actions.column_names):
            return False
        return all(lo == scoring_id and hi == scoring_id and nulls == 0
                   for lo, hi, nulls in zip(*(actions[c].to_pylist() for c in needed)))

    def adopt_identity(self, scoring_id: str, config_hash: str, model_version: str, detector_version: str) -> int:
        """Give the rows written before scoring identities existed this run's identity where that is
        provably theirs: rows of runs with the same config hash (the resolved pipeline config), model
        version and detector version scored exactly as this run would. Those runs' images and faces
        rows and their runs rows get ``scoring_id``, so an upgrade of the software alone rescores
        nothing; every other pre-identity row keeps reading ``<model_version>~legacy`` and is rescored
        in bounded steps (backfill). Idempotent (it touches null scoring_ids only). Returns how many
        runs it adopted."""
        runs = self.table("runs")
        if runs is None or "scoring_id" not in _pa().schema(runs.schema()).names:
            if runs is None:
                return 0
            self.add_missing_columns("runs", runs_schema())
            runs = self.table("runs")
        df = runs.to_pyarrow_table(columns=["run_id", "status", "config_hash", "model_version", "detector_version",
                                            "scoring_id"]).to_pylist()
        ids = sorted({r["run_id"] for r in df if r["scoring_id"] is None and r["config_hash"] == config_hash
                      and r["model_version"] == model_version and r["detector_version"] == detector_version
                      and r["status"] in ("succeeded", "recovered")})
        if not ids:
            return 0
        for name in ("faces", "images"):
            dt = self.table(name)
            if dt is None:
                continue
            self.add_missing_columns(name, _pa().schema([_pa().field("scoring_id", _pa().string())]))
            dt = self.table(name)
            for p in in_predicates("run_id", ids):
                dt.update(new_values={"scoring_id": scoring_id}, predicate=f"scoring_id IS NULL AND {p}")
        for p in in_predicates("run_id", ids):
            runs.update(new_values={"scoring_id": scoring_id}, predicate=f"scoring_id IS NULL AND {p}")
        return len(ids)

    # -- the record of consumed input files (the inputs table)
    def consumed_inputs(self, scoring_id: str, reader: str, uri_policy: str | None = None) -> set[tuple]:
        """The ``FileVersion.key()`` of every input file recorded as consumed by ``scoring_id`` with this
        reader (jobs/campaign/inputs.reader_key): a run skips those files unopened. A file in which a URI
        policy refused a fetch counts under that policy only (``uri_policy``: the run's fingerprint; None:
        such files never count, retries being off). Reads five columns of that identity's rows only (the
        log's statistics on scoring_id prune the other files)."""
        import pyarrow.dataset as ds

        dt = self.table("inputs")
        if dt is None:
            return set()
        policy = ds.field("uri_policy").is_null()
        if uri_policy is not None:
            policy = policy | (ds.field("uri_policy") == uri_policy)
        found = dt.to_pyarrow_dataset().to_table(
            columns=["path", "size", "mtime_s", "etag"],
            filter=(ds.field("scoring_id") == scoring_id) & (ds.field("reader") == reader) & policy)
        return set(zip(*(found[c].to_pylist() for c in ("path", "size", "mtime_s", "etag"))))

    def record_inputs(self, files: list[dict[str, Any]], scoring_id: str, reader: str, run_id: str) -> bool:
        """Append this run's consumed input files (FileVersion dicts + format) to the inputs table, once per
        run (its app transaction): a replay after a crash records nothing twice. False if nothing was
        appended (no file, or already recorded)."""
        if not files:
            return False
        if self.table("inputs") is None:
            from deltalake import DeltaTable

            DeltaTable.create(self.uri("inputs"), inputs_schema(), mode="ignore", storage_options=self.options,
                              configuration={STATS_PROPERTY: ",".join(INPUTS_STATS_COLUMNS)})
        now = datetime.datetime.now(datetime.timezone.utc)
        rows = [{"path": f["path"], "size": f.get("size"), "mtime_s": f.get("mtime_s"), "etag": f.get("etag"),
                 "format": f.get("format"), "scoring_id": scoring_id, "reader": reader,
                 "uri_policy": f.get("uri_policy"), "run_id": run_id,
                 "committed_at": now} for f in files]
        return self.append_once("inputs", _pa().Table.from_pylist(rows, schema=inputs_schema()), run_id)

    def forget_inputs(self, paths: Iterable[str]) -> int:
        """Delete the records of these input files (every identity): an erasure's, so the lake keeps no record
        naming an erased image's file and the next run reads those files again (the tombstones keep the
        erased images out; the rest is skipped by id). Returns the rows deleted."""
        dt = self.table("inputs")
        paths = sorted(set(p for p in paths if p))
        if dt is None or not paths:
            return 0
        return sum(int(dt.delete(p).get("num_deleted_rows", 0) or 0) for p in in_predicates("path", paths))

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
    def spark_read(self, spark, name: str, columns: list[str], campaigns: Iterable[str] | None = None, *,
                   image_ids: list[str] | None = None, paths: Iterable[str] | None = None):
        """DataFrame of ``columns`` of table ``name`` (None if the table does not exist). ``campaigns``
        prunes partitions on the driver. Only the named columns are read from the files. ``image_ids``: only
        the rows of these images reach Spark (filtered by pyarrow as each batch is read). ``paths``: only
        these of the table's files (add-action paths: one run's own files)."""
        import pyarrow as pa
        from pyspark.sql.pandas.types import from_arrow_schema

        dt = self.table(name)
        if dt is None:
            return None
        arrow_schema = pa.schema(dt.schema())
        partition_cols = list(dt.metadata().partition_columns)
        wanted = set(campaigns) if campaigns is not None else None
        only = set(paths) if paths is not None else None
        actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        files, consts = [], []
        for a in actions:
            values = {c: a.get(f"partition.{c}") for c in partition_cols}
            if wanted is not None and PARTITION in values and values[PARTITION] not in wanted:
                continue
            if only is not None and a["path"] not in only:
                continue
            path = a["path"]
            files.append(path if "://" in path or path.startswith("/") else f"{self.uri(name)}/{path}")
            consts.append({c: values[c] for c in partition_cols if c in columns})
        schema = from_arrow_schema(pa.schema([arrow_schema.field(c) for c in columns]))
        df = read_parquet_files(spark, files, schema, self.storage_options, constants=consts,
                                keep=None if image_ids is None else ("image_id", image_ids))
        return df.drop("_file")


def _sql_literal(value: str) -> str:
    """A SQL string literal for a delta-rs predicate (ids come from the dump: quote, never trust)."""
    return "'" + str(value).replace("'", "''") + "'"


def in_predicates(column: str, values: Iterable[str], chunk: int = 1000) -> list[str]:
    """``column IN (...)`` predicates, at most ``chunk`` quoted values each (a sane SQL size)."""
    values = list(values)
    return [f"{column} IN ({', '.join(_sql_literal(v) for v in values[i:i + chunk])})"
            for i in range(0, len(values), chunk)]


# ---------------------------------------------------------------- campaign recompute


