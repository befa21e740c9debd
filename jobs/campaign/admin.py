"""Lake administration: erasure on request and nightly maintenance (compaction, VACUUM).

Both run without Spark (jobs/erase.py, jobs/maintain_lake.py) and under the lake lease, so no scoring
run is between writing its files and committing them. The scoring job reads the erasure tombstones
(``erased``, ``stale_campaigns``) so it never scores an erased image again.
"""
from __future__ import annotations

import datetime
import uuid
from typing import Any, Iterable

from fer_core.tables import erasures_schema

from jobs.campaign.lake import TABLES, Lake, in_predicates

__all__ = ["AdminError", "ERASABLE", "maintain", "erase", "erased", "stale_campaigns"]

ERASABLE = ("images", "faces", "tracks", "campaigns")


class AdminError(Exception):
    """The lake cannot be erased from or maintained now, or the request is incomplete; the message says
    why and what to do."""


def maintain(lake: Lake, *, vacuum_hours: int | None = None, dry_run: bool = False,
             tables: Iterable[str] = TABLES) -> dict[str, dict[str, Any]]:
    """Compact each table's small files (one run = one file per campaign, so hourly runs pile
    them up), then VACUUM files unreferenced for more than ``vacuum_hours`` (None: no vacuum).

    Refuses while a run's manifest is pending: its Parquet files are not committed yet, and a
    vacuum would delete what the next run's recovery commits. Run it under the job's lock.
    Returns per table: files before/after, and the files vacuumed (or that would be, if dry_run).
    """
    pending = [m["run_id"] for m in lake.pending_manifests()]
    if pending:
        raise AdminError(f"runs {pending} have uncommitted files under {lake.root}; run the scoring job once "
                         "(it completes them) before maintaining the lake")
    report: dict[str, dict[str, Any]] = {}
    for name in tables:
        dt = lake.table(name)
        if dt is None:
            continue
        before = len(dt.file_uris())
        if not dry_run:
            if lake.limit_stats_columns(name):
                dt = lake.table(name)
            dt.optimize.compact()  # the new files' stats: delta-rs's, of the STATS_PROPERTY columns
            dt = lake.table(name)
        vacuumed: list[str] = []
        if vacuum_hours is not None:
            # the caller's retention is the contract (jobs/maintain_lake.py asks for >= 24 h)
            vacuumed = dt.vacuum(retention_hours=int(vacuum_hours), dry_run=dry_run,
                                 enforce_retention_duration=False)
        report[name] = {"files_before": before, "files_after": len(lake.table(name).file_uris()),
                        "vacuumed": len(vacuumed), "version": lake.table(name).version()}
    return report


def _input_files_of(images_dt, campaigns: list[str], images: list[str]) -> list[str]:
    """The input files (as the inputs table names them) that the images rows of these campaigns / images came
    from; none for a lake from before images.input_file."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.campaign.inputs import record_path

    if images_dt is None or "input_file" not in pa.schema(images_dt.schema()).names:
        return []
    tests = [pc.field(column).isin(pa.array(values, pa.string()))
             for column, values in (("campaign_id", campaigns), ("image_id", images)) if values]
    if not tests:
        return []
    wanted = tests[0] if len(tests) == 1 else tests[0] | tests[1]
    found = images_dt.to_pyarrow_dataset().to_table(columns=["input_file"], filter=wanted)
    return sorted({record_path(p) for p in found["input_file"].to_pylist() if p})


def erased(lake: Lake) -> tuple[set[str], set[str]]:
    """(erased campaign ids, erased image ids): the scoring job never scores these again."""
    dt = lake.table("erasures")
    if dt is None:
        return set(), set()
    rows = dt.to_pyarrow_table(columns=["kind", "id"]).to_pylist()
    return ({r["id"] for r in rows if r["kind"] == "campaign"}, {r["id"] for r in rows if r["kind"] == "image"})


def stale_campaigns(lake: Lake) -> set[str]:
    """Campaigns that lost images to an erasure after their campaigns row was computed; the next
    scoring run recomputes them."""
    erasures, campaigns = lake.table("erasures"), lake.table("campaigns")
    if erasures is None or campaigns is None:
        return set()
    latest: dict[str, Any] = {}
    for r in erasures.to_pyarrow_table(columns=["kind", "campaign_id", "erased_at"]).to_pylist():
        if r["kind"] == "image" and r["campaign_id"] is not None:
            latest[r["campaign_id"]] = max(latest.get(r["campaign_id"], r["erased_at"]), r["erased_at"])
    updated = {r["campaign_id"]: r["updated_at"]
               for r in campaigns.to_pyarrow_table(columns=["campaign_id", "updated_at"]).to_pylist()}
    return {c for c, t in latest.items() if c in updated and (updated[c] is None or updated[c] < t)}


def erase(lake: Lake, *, campaigns: Iterable[str] = (), images: Iterable[str] = (), reason: str,
          vacuum: bool = True, dry_run: bool = False) -> dict[str, Any]:
    """Delete every row of these campaigns / images from images, faces, tracks and campaigns, and record a
    tombstone in ``erasures`` first, so no later run scores them again (the dump may still hold them).

    vacuum: then VACUUM those tables with zero retention, so the deleted rows' files are gone from
    storage too (time travel to before the erasure stops working). Run it under the scoring job's
    lock: a run writing files meanwhile would lose them. An image erasure leaves its campaign's
    campaigns row stale until the next scoring run recomputes it. Refused while a run is pending.
    Returns rows deleted per table, the affected campaigns, files vacuumed, and how many records of consumed
    input files it deleted (``inputs_forgotten``: those files are read again by the next run).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable, write_deltalake

    campaigns, images = sorted(set(campaigns)), sorted(set(images))
    if not campaigns and not images:
        raise AdminError("nothing to erase: name at least one campaign or image id")
    if not reason.strip():
        raise AdminError("give a reason for the erasure (it is kept in the erasures table as the record)")
    pending = [m["run_id"] for m in lake.pending_manifests()]
    if pending:
        raise AdminError(f"runs {pending} have uncommitted files under {lake.root}; run the scoring job once "
                         "(it completes them) before erasing")
    image_campaign: dict[str, str | None] = {i: None for i in images}
    counts: dict[str, int] = {}
    images_dt = lake.table("images")
    if images_dt is not None and images:
        found = images_dt.to_pyarrow_dataset().to_table(
            columns=["image_id", "campaign_id"], filter=pc.field("image_id").isin(images))
        image_campaign.update(zip(found["image_id"].to_pylist(), found["campaign_id"].to_pylist()))
    affected = sorted(set(campaigns) | {c for c in image_campaign.values() if c is not None})
    source_files = _input_files_of(images_dt, campaigns, images)
    if dry_run:
        for name in ERASABLE:
            dt = lake.table(name)
            if dt is None:
                continue
            present = set(pa.schema(dt.schema()).names)
            table = dt.to_pyarrow_table(columns=[c for c in ("campaign_id", "image_id") if c in present])
            mask = pc.is_in(table["campaign_id"], pa.array(campaigns, pa.string()))
            if images and "image_id" in present:
                mask = pc.or_(mask, pc.is_in(table["image_id"], pa.array(images, pa.string())))
            counts[name] = int(pc.sum(pc.cast(mask, "int64")).as_py() or 0)
        return {"deleted": counts, "campaigns": affected, "vacuumed": 0, "dry_run": True,
                "inputs_forgotten": len(source_files)}
    now = datetime.datetime.now(datetime.timezone.utc)
    erasure_id = uuid.uuid4().hex[:12]
    tombstones = [{"erasure_id": erasure_id, "kind": "campaign", "id": c, "campaign_id": c, "reason": reason,
                   "erased_at": now} for c in campaigns]
    tombstones += [{"erasure_id": erasure_id, "kind": "image", "id": i, "campaign_id": c, "reason": reason,
                    "erased_at": now} for i, c in image_campaign.items()]
    write_deltalake(lake.uri("erasures"), pa.Table.from_pylist(tombstones, schema=erasures_schema()),
                    mode="append", storage_options=lake.options)
    vacuumed = 0
    # the record of consumed input files forgets the erased rows' files: it names no erased image's file
    # (an image folder's file name is the image's), and the next run reads those files again, once (the
    # tombstones keep the erased images out, their other images are skipped by id) and records them anew
    forgotten = lake.forget_inputs(source_files)
    if vacuum and forgotten:
        vacuumed += len(DeltaTable(lake.uri("inputs"), storage_options=lake.options).vacuum(
            retention_hours=0, dry_run=False, enforce_retention_duration=False))
    for name in ERASABLE:
        lake.limit_stats_columns(name)  # the rewritten files' stats must not list image ids
        table = lake.table(name)
        if table is None:
            continue
        predicates = in_predicates("campaign_id", campaigns)
        if name != "campaigns":  # the campaigns table has no image rows
            predicates += in_predicates("image_id", images)
        if not predicates:
            continue
        counts[name] = sum(int(table.delete(p).get("num_deleted_rows", 0) or 0) for p in predicates)
        if vacuum:
            vacuumed += len(DeltaTable(lake.uri(name), storage_options=lake.options).vacuum(
                retention_hours=0, dry_run=False, enforce_retention_duration=False))
    return {"deleted": counts, "campaigns": affected, "vacuumed": vacuumed, "dry_run": False,
            "erasure_id": erasure_id, "inputs_forgotten": forgotten}

