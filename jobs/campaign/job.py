"""One scoring run, start to end: recover, read, skip what is scored, score, commit once, summarise.

``run_job(spark, cfg)`` is what jobs/score_campaign.py calls; tests and the bench call it too.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, TextIO

from fer_core.labels import EMOTIONS
from fer_core.models.spec import ModelSpec
from fer_core.sentiment import SENTIMENTS
from jobs.campaign.config import JobConfig, config_hash

__all__ = ["run_job", "resolve_model", "resolve_detector", "new_run_id"]

FAIL_ENV = "SCORE_CAMPAIGN_FAIL_AT"  # crash-test hook of the recovery tests; not part of the product
"""Test hook: the driver exits (os._exit(3)) at this point of the commit protocol: after_write,
after_manifest, after_faces_commit, after_tracks_commit, after_images_commit, after_inputs_commit,
after_campaigns_commit."""


def _fail_point(name: str) -> None:
    if os.environ.get(FAIL_ENV) == name:
        print(f"{FAIL_ENV}={name}: simulated crash", file=sys.stderr, flush=True)
        os._exit(3)


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def resolve_model(name: str) -> tuple[str, bytes, ModelSpec]:
    """(model_version as EmotionModel.version reports it, the model file bytes to broadcast, its spec).
    No Keras here."""
    from fer_core.models.emotion import version_of
    from fer_core.models.registry import load_weight_bytes, resolve_spec

    data = load_weight_bytes(name)
    spec = resolve_spec(name, weights_bytes=data)
    return version_of(spec), data, spec


def resolve_detector(cfg: JobConfig) -> tuple[str, bytes | None]:
    """(detector_version, weight bytes to broadcast or None)."""
    if cfg.detector.name == "retinaface":
        from fer_core.weights import RETINAFACE_MOBILENET_V2 as spec
        from fer_core.weights import read_weight_bytes

        return f"{spec.name}-{spec.sha256[:12]}", read_weight_bytes(spec)
    from fer_core.detectors import create_detector

    return create_detector(cfg.detector.name, **cfg.detector.kwargs()).version, None


def _per_task_threads(core, task_cpus: int):
    """Unset TensorFlow thread counts (runtime.intra_threads / inter_threads: null, TF's all-cores default,
    right for one process) become the Spark task's cores: every task slot runs a Python worker of its
    own, so all-cores per worker would oversubscribe the executor."""
    import dataclasses

    rt = core.runtime
    fill = {k: task_cpus for k in ("intra_threads", "inter_threads") if getattr(rt, k) is None}
    return dataclasses.replace(core, runtime=dataclasses.replace(rt, **fill)) if fill else core


def _arrow_extras(df, names: list[str]) -> list[Any]:
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    return [pa.field(f.name, to_arrow_type(f.dataType)) for f in df.schema.fields if f.name in names]


def commit_run(spark, lake, manifest: dict[str, Any], guard: Callable[[], None] | None = None,
               phases: dict[str, float] | None = None, report: dict[str, int] | None = None) -> None:
    """Steps 3 of the protocol in lake.py; idempotent, so a replay after a crash is safe.

    guard: called before each commit (``LakeLease.ensure_held``): a run that lost the lake stops there.
    phases: gets ``commit_s`` (the table commits) and ``recompute_s`` (the campaign recompute), apart.
    report: gets how many campaigns the run's rows were added to and how many were recomputed."""
    guard = guard or (lambda: None)
    t_commit = time.monotonic()
    import pyarrow as pa

    from fer_core.identity import legacy_scoring_id
    from fer_core.tables import faces_schema, tracks_schema
    from jobs.campaign.campaigns import recompute_campaigns

    run_id = manifest["run_id"]
    files = manifest["files"]
    img_schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(manifest["images_schema"])))
    guard()
    lake.commit_files("faces", files["faces"], faces_schema(), run_id)
    _fail_point("after_faces_commit")
    guard()
    lake.commit_files("tracks", files.get("tracks", []), tracks_schema(), run_id)
    _fail_point("after_tracks_commit")
    guard()
    lake.commit_files("images", files["images"], img_schema, run_id)
    _fail_point("after_images_commit")
    sid = manifest.get("scoring_id") or legacy_scoring_id(manifest["model_version"])  # a manifest from before ids
    lake.drop_superseded_fetch_errors(manifest.get("retried", []), sid, run_id)
    # the consumed input files, after the rows they hold: a crash before this leaves them unrecorded and the
    # replay of this manifest records them (its app transaction), so the record never runs ahead of the rows
    if manifest.get("inputs"):
        guard()
        lake.record_inputs(manifest["inputs"], sid, manifest["reader"], run_id)
    _fail_point("after_inputs_commit")
    t_recompute = time.monotonic()
    rows = recompute_campaigns(spark, lake, manifest["campaigns"], sid, run_id, mix_matrix=manifest.get("mix_matrix"),
                               sentiment_groups=manifest.get("sentiment_groups"),
                               gone_files=manifest.get("gone_files"), addable=manifest.get("addable", []),
                               run_files=files, superseded=dict(map(tuple, manifest.get("superseded", []))),
                               report=report)
    recompute_s = time.monotonic() - t_recompute
    guard()
    lake.merge_campaigns(rows, run_id)
    lake.drop_stale_campaign_rows(manifest["campaigns"], rows)  # erased campaigns and identities, pre-id rows
    _fail_point("after_campaigns_commit")
    row = dict(manifest["run"])
    for k in ("started_at", "finished_at"):
        row[k] = dt.datetime.fromisoformat(row[k])
    guard()
    lake.append_run(row, run_id)
    lake.drop_manifest(run_id)
    if phases is not None:
        phases["recompute_s"] = round(recompute_s, 3)
        phases["commit_s"] = round(time.monotonic() - t_commit - recompute_s, 3)


def recover_pending(spark, lake, out: TextIO, guard: Callable[[], None] | None = None) -> int:
    """Finish the commits of runs that died after writing their manifest. Returns how many.

    Called under the lake lease: no other run is alive, so every pending manifest is a dead run's."""
    manifests = lake.pending_manifests()
    for m in manifests:
        print(f"recovering run {m['run_id']}: completing its commits from {lake.root}/_job/pending", file=out,
              flush=True)
        m["run"]["status"] = "recovered"
        commit_run(spark, lake, m, guard)
    return len(manifests)


def run_job(spark, cfg: JobConfig, run_id: str | None = None, *, out: TextIO | None = None,
            dry_run: bool = False) -> dict[str, Any]:
    """Score ``cfg.input`` into the lake at ``cfg.output.path``; returns the runs-table row.

    The whole run holds the lake lease (jobs/campaign/lease.py): a run that finds the lake held waits up
    to ``output.lock_wait_s``, saying for whom, then raises LakeBusyError (the script exits with
    BUSY_EXIT_CODE and the next holder records it in the runs table).
    dry_run: read the input and the lake, print what a run would score (per campaign) and how long it
    should take (from earlier runs' speed), write nothing and take no lease; returns that plan.
    """
    from jobs.campaign.lake import Lake
    from jobs.campaign.lease import LakeBusyError, LakeLease

    out = out or sys.stdout
    run_id = run_id or new_run_id()
    started = dt.datetime.now(dt.timezone.utc)
    if dry_run:
        return _run(spark, cfg, run_id, out, True, None, started)
    lake = Lake(cfg.output.path, cfg.output.storage_options)
    lease = LakeLease(lake.root, cfg.output.storage_options, run_id, kind="run", ttl_s=cfg.output.lock_ttl_s)
    try:
        lease.acquire(cfg.output.lock_wait_s, out)
    except LakeBusyError as e:
        lake.note_gave_up(run_id, started, str(e), cfg)
        raise
    with lease:
        lake.record_gave_up_runs()
        return _run(spark, cfg, run_id, out, False, lease, started)


def _run(spark, cfg: JobConfig, run_id: str, out: TextIO, dry_run: bool, lease, started) -> dict[str, Any]:
    """run_job's body, under the lease (``lease`` None: a dry run): recover, then read the input once,
    leaving out unopened the files the inputs table records as consumed by this scoring identity."""
    from fer_core.identity import scoring_id
    from fer_core.models.emotion import tta_views
    from jobs.campaign.inputs import empty_input, read_new_input, reader_key
    from jobs.campaign.lake import Lake

    t0 = time.monotonic()
    lake = Lake(cfg.output.path, cfg.output.storage_options)
    guard = lease.ensure_held if lease is not None else None

    if not dry_run:
        recover_pending(spark, lake, out, guard)  # first: a dead run's files may be recorded by its replay
    from pyspark import StorageLevel

    model_version, model_bytes, model_spec = resolve_model(cfg.model.name)
    tta_views(cfg.model.tta, model_spec)  # a TTA mode this model cannot serve fails here, not in every task
    detector_version, detector_bytes = resolve_detector(cfg)
    sid = scoring_id(cfg, model_version, detector_version)
    resolved = (model_version, model_bytes, model_spec, detector_version, detector_bytes, sid)
    t_list = time.monotonic()
    reader = reader_key(cfg.input)
    consumed = lake.consumed_inputs(sid, reader, cfg.input.uri_policy().fingerprint)
    df, input_files = read_new_input(spark, cfg.input, out, consumed)
    if df is None:  # every listed file is consumed as it is: nothing to read
        df = empty_input(spark, cfg.input, _lake_extra_fields(lake, cfg))
    listing_s = time.monotonic() - t_list
    recorded_paths = {key[0] for key in consumed}
    input_files.n_changed = sum(1 for v in input_files.read if v.path in recorded_paths)
    # Read once: the counts below and the scoring stage each scan the input, and pyarrow (unlike Spark's own
    # Parquet source) cannot skip the image column for a count. Spilled to local disk, like a shuffle.
    cached = df = df.persist(StorageLevel.DISK_ONLY)
    try:
        return _score(spark, cfg, run_id, out, dry_run, started, t0, lake, guard, df,
                      lease.waited_s if lease is not None else 0.0, resolved=resolved, input_files=input_files,
                      reader=reader, phases={"setup_s": round(t_list - t0, 3), "listing_s": round(listing_s, 3)})
    finally:
        cached.unpersist()


def _lake_extra_fields(lake, cfg: JobConfig) -> list[Any]:
    """The configured extra columns' pyarrow fields as the lake's images table has them (an input of no rows
    has no footer to take them from)."""
    import pyarrow as pa

    dt = lake.table("images")
    if dt is None:
        return []
    schema = pa.schema(dt.schema())
    return [schema.field(c) for c in cfg.input.extra_columns if c in schema.names]


SKIP_FILTER_MAX_IDS = 100_000
"""Up to this many distinct input ids, the incremental skip reads only the lake's images rows of those ids:
pyarrow filters each batch of the image_id column before pandas and Spark see it, so a run of 2,000 new
images moves 2,000 rows, not the history, into the anti-join. Above it (a first run, a replay of a whole dump)
the ids would weigh more than the rows they save."""


def _scored_images(spark, lake, candidate_ids: list[str] | None = None, only_identity: str | None = None):
    """The lake's images rows as (image_id, campaign_id, scoring_id, status, error), None before the first
    run. A row from before scoring identities reads ``<model_version>~legacy`` (fer_core.identity).

    candidate_ids: only the rows of these images (the run's input ids): the joins that use these rows are all
    on the input's ids, so the answer is the same. only_identity: the Delta log says every row is this
    identity's (Lake.only_identity), so neither scoring_id nor model_version is read."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from fer_core.identity import LEGACY_SUFFIX

    dt = lake.table("images")
    if dt is None:
        return None
    if only_identity is not None:
        df = lake.spark_read(spark, "images", ["image_id", "campaign_id", "status", "error"], image_ids=candidate_ids)
        return df.select("image_id", "campaign_id", F.lit(only_identity).alias("scoring_id"), "status", "error")
    has_id = "scoring_id" in pa.schema(dt.schema()).names
    df = lake.spark_read(spark, "images", ["image_id", "campaign_id", "model_version", "status", "error"]
                         + (["scoring_id"] if has_id else []), image_ids=candidate_ids)
    legacy = F.concat(F.coalesce(F.col("model_version"), F.lit("unknown")), F.lit(LEGACY_SUFFIX))
    identity = F.coalesce(F.col("scoring_id"), legacy) if has_id else legacy
    return df.select("image_id", "campaign_id", identity.alias("scoring_id"), "status", "error")


def _score(spark, cfg: JobConfig, run_id: str, out: TextIO, dry_run: bool, started, t0: float, lake, guard,
           df, lock_wait_s: float, *, resolved: tuple, input_files, reader: str,
           phases: dict[str, float]) -> dict[str, Any]:
    """The run once its input is read: skip what is scored or erased, score the rest, commit, summarise.

    resolved: (model_version, model bytes, model spec, detector_version, detector bytes, scoring_id);
    input_files: the listing's InputFiles (read / skipped), reader: jobs/campaign/inputs.reader_key;
    phases: seconds per phase so far (listing_s: listing, the record, footers), completed here (read_s: the
    input read, skip_s, scoring_s, commit_s, recompute_s)."""
    from pyspark.sql import functions as F

    from fer_core.fetch import refused_prefix
    from jobs.campaign.inputs import dedupe
    from fer_core.tables import STATUSES, faces_schema, images_schema, tracks_schema
    from jobs.campaign.admin import erased, stale_campaigns
    from jobs.campaign.progress import Progress, format_summary
    from jobs.campaign.campaigns import gone_input_files, incomplete_campaigns
    from jobs.campaign.scoring import ScoringContext, make_pipeline_fn, score

    sc = spark.sparkContext
    t_read = time.monotonic()
    model_version, model_bytes, model_spec, detector_version, detector_bytes, sid = resolved
    mix_matrix = model_spec.mix_matrix(cfg.model.tta)
    uri_policy = cfg.input.uri_policy()
    extras = _arrow_extras(df, list(cfg.input.extra_columns))
    img_schema = images_schema(extras)
    n_input = df.count()  # the Spark read of the files to read (persisted: later stages reuse it)
    phases["read_s"] = round(time.monotonic() - t_read, 3)
    t_skip = time.monotonic()
    erased_campaigns, erased_images = erased(lake)
    n_erased = 0
    if erased_campaigns or erased_images:  # erased on request (jobs/erase.py): never scored again
        if erased_campaigns:  # (a null campaign_id is no erased campaign: keep it)
            df = df.where(F.col("campaign_id").isNull() | ~F.col("campaign_id").isin(sorted(erased_campaigns)))
        if erased_images:
            gone = spark.createDataFrame([(i,) for i in sorted(erased_images)], "image_id string")
            df = df.join(F.broadcast(gone), "image_id", "left_anti")
        n_erased = n_input - df.count()
    erased_files: set[str] = set()  # files read whose every row is erased: never recorded (an image file's name
    if n_erased:  # is the image's), so such a file is read, and left out by its tombstone, by every run
        from jobs.campaign.inputs import record_path

        left = {record_path(r.input_file) for r in df.select("input_file").distinct().collect()}
        erased_files = {v.path for v in input_files.read} - left
    ids = df.select("image_id").distinct()
    n_unique = ids.count()
    if not dry_run:
        if guard is not None:
            guard()
        adopted = lake.adopt_identity(sid, config_hash(cfg), model_version, detector_version)
        if adopted:
            print(f"lake: the rows of {adopted} run(s) from before scoring identities were scored exactly as this "
                  f"run scores (same config hash, model and detector): they are {sid} now", file=out, flush=True)
    todo = dedupe(df)
    retried: list[str] = []
    n_superseded: dict[str | None, int] = {}  # campaign -> its earlier fetch_error rows that this run supersedes
    n_backlog = n_backfill = 0
    backlog_left = None  # image ids of the backlog this run leaves for later runs (their files stay unrecorded)
    refused_files: set[str] = set()  # input files of images this URI policy refused in earlier runs
    steady = lake.only_identity(sid)  # between upgrades (the Delta log's statistics say so): no backlog
    # no input id (every file consumed): nothing to look up, so the images table is not read at all
    candidates = sorted(r.image_id for r in ids.collect()) if 0 < n_unique <= SKIP_FILTER_MAX_IDS else None
    existing = _scored_images(spark, lake, candidates, sid if steady else None) if n_unique else None
    if existing is not None:
        mine = existing.where(F.col("scoring_id") == sid)
        if cfg.input.retry_fetch_errors:  # fetch again; commit_run drops the superseded rows
            # ... but not the URIs this very policy refused: they would be refused again, every run
            refused_again = F.coalesce(F.col("error").startswith(refused_prefix(uri_policy.fingerprint)), F.lit(False))
            failed = (mine.where((F.col("status") == "fetch_error") & ~refused_again)
                      .select("image_id", "campaign_id"))
            superseded = failed.join(ids, "image_id").collect()  # the rows commit_run will drop, per campaign
            retried = sorted({r.image_id for r in superseded})
            n_superseded = dict(Counter(r.campaign_id for r in superseded))
            # their files hold under this policy only (the inputs table's uri_policy): another would fetch them
            refused = mine.where((F.col("status") == "fetch_error") & refused_again).select("image_id")
            refused_files = {r.input_file for r in df.join(refused, "image_id", "left_semi")
                             .select("input_file").distinct().collect()}
            mine = mine.where((F.col("status") != "fetch_error") | refused_again)
        mine = mine.select("image_id").distinct()
        todo = todo.join(mine, "image_id", "left_anti")
        if steady:
            n_new = ids.join(mine, "image_id", "left_anti").count()
        else:  # the upgrade backlog: images of the input that only other (older) identities scored
            older = existing.where(F.col("scoring_id") != sid).select("image_id").distinct().join(mine, "image_id",
                                                                                                 "left_anti")
            backlog = todo.join(older, "image_id", "left_semi")
            todo = todo.join(older, "image_id", "left_anti")  # new to the lake (and retried fetch errors): all scored
            n_new = todo.count()
            n_backlog = backlog.count()
        bound = cfg.backfill.max_images_per_run
        n_backfill = n_backlog if bound is None else min(n_backlog, bound)
        if n_backfill < n_backlog:
            chosen = backlog.orderBy(F.col("posted_at").desc_nulls_last(), "image_id").limit(n_backfill)
            backlog_left = backlog.select("image_id").join(chosen.select("image_id"), "image_id", "left_anti")
            backlog = chosen
        if n_backfill:  # newest first: the posts a team looks at now are rescored first
            todo = todo.unionByName(backlog)
        n_todo = n_new + n_backfill
    else:
        n_todo = n_new = n_unique
    n_parts = max(1, min(max(n_todo, 1), max(sc.defaultParallelism, math.ceil(n_todo / cfg.spark.images_per_task))))
    spark.conf.set("spark.sql.shuffle.partitions", str(n_parts))
    # Spread the images over n_parts tasks explicitly: a small dump is read as one partition, and one
    # partition already satisfies the dedupe window and the anti-join, so Spark adds no shuffle and a
    # single task (one core) would score the whole run. Hash on image_id: the same split on a retry.
    todo = todo.repartition(n_parts, "image_id")
    print(f"run {run_id}: {len(input_files.read) + len(input_files.skipped)} input files, "
          f"{len(input_files.skipped)} skipped unopened (consumed by {sid} as they are: the inputs table), "
          f"{len(input_files.read)} read ({input_files.n_changed} changed since recorded); {n_input} input rows, "
          + (f"{n_erased} of erased images or campaigns skipped, " if n_erased else "")
          + f"{n_input - n_erased - n_unique} duplicates, "
          f"{n_unique - n_new - n_backlog} already scored by {sid}, {n_new} new"
          + (f" ({len(retried)} earlier fetch errors retried)" if retried else "")
          + (f", {n_backfill} of {n_backlog} scored only by older identities rescored now (newest first; "
             f"{n_backlog - n_backfill} left for later runs, backfill.max_images_per_run)" if n_backlog else "")
          + f": {n_todo} to score in {n_parts} tasks",
          file=out, flush=True)
    phases["skip_s"] = round(time.monotonic() - t_skip, 3)
    if dry_run:
        return _dry_run_plan(lake, todo, run_id, n_input, n_erased, n_unique, n_todo, len(retried), model_version,
                             detector_version, out, scoring_id=sid, n_backlog_left=n_backlog - n_backfill,
                             n_files=(len(input_files.read), len(input_files.skipped)))

    counts: dict[str, int] = {}
    files: dict[str, list[dict[str, Any]]] = {"images": [], "faces": [], "tracks": []}
    t_score = time.monotonic()
    if n_todo:
        core = _per_task_threads(cfg.pipeline_config(), int(sc.getConf().get("spark.task.cpus", "1")))
        det_bc = sc.broadcast(detector_bytes) if detector_bytes is not None else None
        model_bc = sc.broadcast(model_bytes)
        key = f"{model_version}|{detector_version}|{core!r}"
        progress = Progress(sc, n_todo, cfg.progress.interval_s, out)
        ctx = ScoringContext(
            pipeline_fn=make_pipeline_fn(core, det_bc, model_bc, key),
            storage_options=dict(cfg.input.storage_options), uri_policy=uri_policy,
            max_fetch_bytes=cfg.max_bytes,
            fetch_threads=cfg.input.fetch_threads,
            detect_chunk=min(16, cfg.spark.arrow_batch_size), run_id=run_id, model_version=model_version,
            scoring_id=sid,
            images_uri=lake.uri("images"), faces_uri=lake.uri("faces"),
            lake_options=dict(cfg.output.storage_options), target_file_rows=cfg.output.target_file_rows,
            images_schema=img_schema, faces_schema=faces_schema(), progress=progress.reporter,
            tracks_uri=lake.uri("tracks"), tracks_schema=tracks_schema(),
        )
        with progress:
            ctx_df = score(todo, ctx, progress.accumulator)
            rows = [r.asDict() for r in ctx_df.collect()]  # file metadata only, never the data
        for r in rows:
            if r["table"] == "counts":
                for k, v in json.loads(r["counts"]).items():
                    counts[k] = counts.get(k, 0) + int(v)
            else:
                files[r["table"]].append(r)
        _fail_point("after_write")
    seconds = time.monotonic() - t_score
    phases["scoring_s"] = round(seconds, 3)
    consumed = _consumed_files(lake, cfg, input_files, df, backlog_left, refused_files, files["images"], counts,
                               uri_policy, out, erased_files)
    n_scored = sum(counts.get(s, 0) for s in STATUSES)
    finished = dt.datetime.now(dt.timezone.utc)
    run_row = {
        "run_id": run_id, "started_at": started.isoformat(), "finished_at": finished.isoformat(),
        "status": "succeeded", "input": cfg.input.path, "output": lake.root, "n_input": n_input,
        "n_duplicates": n_input - n_erased - n_unique, "n_scored": n_scored, "n_skipped": n_input - n_scored,
        **{f"n_{s}": counts.get(s, 0) for s in STATUSES}, "n_faces": counts.get("n_faces", 0),
        "duration_s": round(time.monotonic() - t0, 3),
        "images_per_s": round(n_scored / seconds, 3) if n_scored and seconds > 0 else 0.0,
        "model_version": model_version, "detector_version": detector_version, "config_hash": config_hash(cfg),
        "spark_master": sc.master, "lock_wait_s": round(lock_wait_s, 3),
        "scoring_id": sid, "n_new": n_new, "n_backfilled": n_backfill, "n_backlog_left": n_backlog - n_backfill,
        "n_files_skipped": len(input_files.skipped), "n_files_read": len(input_files.read),
    }
    # campaigns with new rows, those an image erasure left stale, and those the backfill has not finished
    touched = {f["campaign_id"] for f in files["images"]}
    stale, incomplete = stale_campaigns(lake), incomplete_campaigns(lake, sid)
    campaigns = sorted(touched | stale | incomplete)
    manifest = {
        "run_id": run_id, "model_version": model_version, "scoring_id": sid, "files": files, "retried": retried,
        # input files of these campaigns' images that sid has not scored and that are gone (past retention)
        "gone_files": [] if steady else gone_input_files(spark, lake, campaigns, sid,
                                                         dict(cfg.input.storage_options) or None),
        # campaign mix adjustment (fer_core.quantify): the model's profile for this run's TTA setting
        "mix_matrix": None if mix_matrix is None else mix_matrix.tolist(),
        "sentiment_groups": cfg.sentiment.groups,
        "campaigns": campaigns,
        # between upgrades, campaigns whose stored rows this run's own rows are added to (fer_core.kpis.add_kpis)
        # instead of a recompute from all their rows; the earlier rows it drops, per campaign
        "addable": sorted(touched - stale - incomplete) if steady else [],
        "superseded": [[c, n] for c, n in n_superseded.items()],  # pairs: a null campaign is no JSON key
        "images_schema": img_schema.serialize().to_pybytes().hex(), "run": run_row,
        # the input files whose rows are all committed by this manifest (or were before): recorded after images
        "inputs": consumed, "reader": reader,
    }
    lake.ensure("images", img_schema, ["campaign_id"])
    lake.ensure("faces", faces_schema(), ["campaign_id"])
    lake.ensure("tracks", tracks_schema(), ["campaign_id"])
    guard()
    lake.write_manifest(run_id, manifest)
    _fail_point("after_manifest")
    campaign_ways: dict[str, int] = {}
    commit_run(spark, lake, manifest, guard, phases, campaign_ways)
    printable = {**run_row, "started_at": started, "finished_at": finished, "phases": phases, **campaign_ways,
                 "n_videos": counts.get("n_videos", 0), "n_tracks": counts.get("n_tracks", 0),
                 "emotions": {e: counts.get(f"emotion:{e}", 0) for e in EMOTIONS},
                 "sentiments": {s: counts.get(f"sentiment:{s}", 0) for s in SENTIMENTS}}
    print(format_summary(printable), file=out, flush=True)
    ways = (f" (campaigns: {campaign_ways['campaigns_added']} added to, {campaign_ways['campaigns_recomputed']}"
            " recomputed)") if campaign_ways.get("campaigns_added") else ""
    print("  phases: " + ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in phases.items()) + ways, file=out, flush=True)
    t_health = time.monotonic()
    printable["health"] = _record_health(lake, cfg, printable, out, files)
    phases["health_s"] = round(time.monotonic() - t_health, 3)  # after the summary: in the returned row only
    return printable


def _consumed_files(lake, cfg: JobConfig, input_files, df, backlog_left, refused_files: set[str],
                    image_files: list[dict[str, Any]], counts: dict[str, int], uri_policy,
                    out: TextIO, erased_files: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The files this run read whose every image is, once its manifest commits, scored by the run's identity
    (or erased, or a duplicate): what the inputs table records. Left out, so a later run reads them again:
    - files holding backlog images this run leaves for later (backfill.max_images_per_run);
    - with input.retry_fetch_errors, files of which an image ended this run as a fetch_error that a later
      run would fetch again: skipping the file would stop the retry;
    - ``erased_files``: files whose every row is erased (the record names no erased image's file).
    With retries on, a file in which this URI policy refused a fetch (this run, or ``refused_files``: earlier
    runs) is recorded with the policy's fingerprint: it holds under that policy only, as another policy
    would fetch those URIs. Reads only this run's input and the images files it wrote (the new data)."""
    from fer_core.fetch import refused_prefix
    from jobs.campaign.inputs import filesystem, record_path

    keep_out: set[str] = set(erased_files)
    refused = {record_path(p) for p in refused_files}
    if backlog_left is not None:
        rows = df.join(backlog_left, "image_id", "left_semi").select("input_file").distinct().collect()
        keep_out |= {record_path(r.input_file) for r in rows}
    if cfg.input.retry_fetch_errors and counts.get("fetch_error"):
        import pyarrow.parquet as pq

        prefix = refused_prefix(uri_policy.fingerprint)
        fs, root = filesystem(lake.uri("images"), lake.storage_options)
        for f in image_files:
            with fs.open(f"{root.rstrip('/')}/{f['path']}", "rb") as fh:
                t = pq.read_table(fh, columns=["input_file", "error"], filters=[("status", "=", "fetch_error")])
            for path, error in zip(t["input_file"].to_pylist(), t["error"].to_pylist()):
                (refused if (error or "").startswith(prefix) else keep_out).add(record_path(path))
    kept = [v for v in input_files.read if v.path not in keep_out]
    if len(kept) < len(input_files.read):
        print(f"  input files: {len(input_files.read) - len(kept)} of those read are read again by the next run "
              "(images left in the backfill backlog, or fetch errors to retry)", file=out, flush=True)
    policy = uri_policy.fingerprint if cfg.input.retry_fetch_errors else None
    return [{"path": v.path, "size": v.size, "mtime_s": v.mtime_s, "etag": v.etag, "format": input_files.format,
             "uri_policy": policy if v.path in refused else None} for v in kept]


def _record_health(lake, cfg: JobConfig, row: dict[str, Any], out: TextIO,
                   files: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any] | None:
    """The run's health metrics and drift verdict (jobs/campaign/health.py), from its own files; None when
    they could not be written (the run itself is committed either way, so that is a warning, not a failure)."""
    from jobs.campaign.health import record_health

    try:
        return record_health(lake, cfg, row, out, files)
    except Exception as e:  # noqa: BLE001 - reported, and the committed run stands
        print(f"score_campaign: warning: run health not recorded: {type(e).__name__}: {e}", file=sys.stderr,
              flush=True)
        return None


def _dry_run_plan(lake, todo, run_id: str, n_input: int, n_erased: int, n_unique: int, n_todo: int, n_retried: int,
                  model_version: str, detector_version: str, out: TextIO, *, scoring_id: str,
                  n_backlog_left: int = 0, n_files: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """What a run would do: images to score per campaign, and an estimate of the scoring time from the
    median speed of the last five succeeded runs with the same model and detector (None without one).
    n_backlog_left: images only older identities scored that this run would leave for later runs.
    n_files: (input files it would read, files it would skip unopened as consumed: the inputs table); the
    counts are over the files it would read."""
    from pyspark.sql import functions as F

    by_campaign = {r["campaign_id"]: int(r["count"])
                   for r in todo.groupBy("campaign_id").count().orderBy(F.desc("count"), "campaign_id").collect()}
    speeds: list[float] = []
    runs = lake.table("runs")
    if runs is not None:
        df = runs.to_pandas(columns=["started_at", "status", "images_per_s", "model_version", "detector_version"])
        df = df[(df.status.isin(["succeeded", "recovered"])) & (df.model_version == model_version)
                & (df.detector_version == detector_version) & (df.images_per_s > 0)]
        speeds = df.sort_values("started_at").images_per_s.tail(5).tolist()
    speed = float(sorted(speeds)[len(speeds) // 2]) if speeds else None
    estimate = round(n_todo / speed, 1) if speed and n_todo else (0.0 if not n_todo else None)
    pending = len(lake.pending_manifests())
    print(f"dry run {run_id}: nothing written. {n_todo} images to score in {len(by_campaign)} campaign(s)"
          + (f", {pending} interrupted run(s) would be completed first" if pending else "")
          + (f"; {n_backlog_left} images scored only by older identities left for later runs" if n_backlog_left else ""),
          file=out)
    for cid, n in list(by_campaign.items())[:20]:
        print(f"  {cid}: {n}", file=out)
    if len(by_campaign) > 20:
        print(f"  ... and {len(by_campaign) - 20} more campaigns", file=out)
    print(f"  estimated scoring time: {estimate:.0f} s at {speed:.2f} images/s (median of the last {len(speeds)} "
          f"runs with {model_version} and {detector_version})" if speed and n_todo else
          "  estimated scoring time: nothing to score" if not n_todo else
          "  estimated scoring time: unknown (no earlier run with this model and detector)", file=out, flush=True)
    return {"dry_run": True, "run_id": run_id, "n_input": n_input, "n_erased": n_erased,
            "n_duplicates": n_input - n_erased - n_unique,
            "n_already_scored": n_unique - n_todo - n_backlog_left, "n_to_score": n_todo, "n_retried": n_retried,
            "n_backlog_left": n_backlog_left, "scoring_id": scoring_id,
            "n_files_read": n_files[0], "n_files_skipped": n_files[1],
            "by_campaign": by_campaign, "images_per_s": speed, "estimated_s": estimate, "pending_runs": pending,
            "model_version": model_version, "detector_version": detector_version}


def render(cfg: JobConfig) -> str:
    """Render the dashboards from the tables; returns where index.html is. A remote lake's dashboards
    are rendered locally and uploaded next to the tables (unless output.dashboards_path is local)."""
    import tempfile

    from dashboards.paths import is_campaign_page_name
    from dashboards.render import render_dashboards

    from jobs.campaign.inputs import filesystem, is_remote
    from jobs.campaign.lake import Lake

    lake = Lake(cfg.output.path, cfg.output.storage_options)
    target = cfg.dashboards_dir()
    cols = cfg.input.columns
    # dashboards read inline-bytes Parquet dumps with the default column names themselves
    loader = _policy_loader(cfg, _dump_bytes_loader(cfg) if (cols.image_id, cols.image) != ("image_id", "image")
                            else None)
    models = _model_file_versions(cfg)
    if not is_remote(target):
        return str(render_dashboards(lake.root, target, storage_options=lake.options, image_bytes_loader=loader,
                                     models=models))
    fs, path = filesystem(target, cfg.output.storage_options)
    path = path.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="dashboards-") as tmp:
        site = Path(tmp)
        if fs.exists(path):  # the last render's site: its caches let this one redo only what changed
            fs.get(path + "/", tmp.rstrip("/") + "/", recursive=True)
        before = _site_files(site)
        render_dashboards(lake.root, tmp, storage_options=lake.options, image_bytes_loader=loader, models=models)
        after = _site_files(site)
        changed = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
        for name in changed:  # files the render wrote; the rest are on the target already
            fs.put_file(str(site / name), f"{path}/{name}")
        # what the render removed (gallery files no longer shown, caches) goes there too; a user's own files stay
        removed = [f"{path}/{n}" for n in sorted(set(before) - set(after))
                   if n.startswith(("thumbs/", ".aggregates/")) or is_campaign_page_name(n)]
        pages = {p.name for p in site.glob("campaign-*.html")}
        removed += [p for p in fs.glob(path + "/campaign-*.html")
                    if is_campaign_page_name(p.rsplit("/", 1)[-1]) and p.rsplit("/", 1)[-1] not in pages
                    and f"{path}/{p.rsplit('/', 1)[-1]}" not in removed]
        if removed:  # pages of campaigns gone from the tables, as a local re-render removes them
            fs.rm(removed)
        print(f"dashboards: {len(changed)} file(s) uploaded, {len(removed)} removed, "
              f"{len(after) - len(changed)} unchanged", file=sys.stderr, flush=True)
    return target.rstrip("/") + "/index.html"


def _site_files(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file under ``root``: what a render changed (a file rewritten
    with the same bytes, such as plotly.js, is not uploaded again)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def _model_file_versions(cfg: JobConfig) -> dict[str, str]:
    """{model_version: path} when the job's model is a file, so Grad-CAM can load it for the gallery."""
    from fer_core.models.registry import is_model_path

    return {resolve_model(cfg.model.name)[0]: cfg.model.name} if is_model_path(cfg.model.name) else {}


def _policy_loader(cfg: JobConfig, parquet_loader):
    """Thumbnail bytes: a URI source is fetched through the same URI policy as scoring (its host may
    resolve elsewhere by now); an inline-bytes Parquet source goes to ``parquet_loader`` (None: the
    dashboards' own reader)."""
    from fer_core.fetch import fetch_uri

    policy = cfg.input.uri_policy()
    limit = cfg.max_bytes

    def load(image_id: str, source: str | None) -> bytes | None:
        if source and source.lower().endswith((".parquet", ".parq", ".pq")):
            return parquet_loader(image_id, source) if parquet_loader is not None else None
        return fetch_uri(source, policy, cfg.input.storage_options, limit)

    return load


def _dump_bytes_loader(cfg: JobConfig):
    """Thumbnails of images whose bytes sat inline in a Parquet dump: read that one cell back."""
    col_id, col_img = cfg.input.columns.image_id, cfg.input.columns.image

    def load(image_id: str, source: str | None) -> bytes | None:
        if not source or not source.endswith((".parquet", ".parq", ".pq")):
            return None
        import pyarrow.parquet as pq

        from jobs.campaign.inputs import filesystem, local_path

        try:
            fs, path = filesystem(source, cfg.input.storage_options)
            path = local_path(path.replace("file:", "", 1) if path.startswith("file:") else path)
            with fs.open(path, "rb") as f:
                t = pq.read_table(f, columns=[col_img], filters=[(col_id, "=", image_id)])
            return t.column(0)[0].as_py() if t.num_rows else None
        except Exception:  # a thumbnail is best effort
            return None

    return load
