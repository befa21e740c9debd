"""Aggregates of the campaigns a run added rows to: the last render's, combined with the new rows' (issue 29).

A render keeps every campaign's aggregates (dashboards.cache.AggregateCache) with the Delta files they
were computed from. Rows leave a Delta table only with the file that held them (a delete, an erasure, a
superseded fetch error or a compaction rewrites files), so a campaign whose files only grew has, as its
new rows, exactly those of the added files. Every figure on a page is a sum, a weighted mean, a min or
max, or a top k over rows, so the campaign's new aggregates are its stored ones combined with the
aggregates of the new rows alone, computed by the same functions (dashboards.aggregate); the tiles add
through fer_core.kpis.add_kpis, the one definition of adding to KPI rows. A render then reads the rows a
run added, not the campaign's history.

A campaign is added to only where that holds and the baseline is known: its files only grew, the code,
current identity and gallery size are unchanged, it was shown under one identity (the current one) and
its new rows are all of that identity, from runs that had not scored it before, the latest of them
scoring after all its older rows (so the new latest run is the baseline's edge: the old rows are the
baseline). Any other campaign is computed from all its rows, as without a cache.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fer_core.kpis import add_kpis, addable_row, shown_identities
from fer_core.tables import SENTIMENTS

from dashboards import aggregate as ag
from dashboards.aggregate import AGGREGATE_TABLES, Aggregates
from dashboards.cache import AggregateCache
from dashboards.tables import Lake

log = logging.getLogger(__name__)


def compute(lake: Lake, *, max_gallery: int, cache: AggregateCache | None = None) -> Aggregates:
    """Every aggregate the pages need, equal to dashboards.aggregate.compute's (to float rounding). With
    ``cache`` (the last render's, in the same folder) a campaign whose key is unchanged is taken from it,
    one whose files only grew gets its new rows added (module doc), and only the others are read whole."""
    if cache is None:
        return ag.compute(lake, max_gallery=max_gallery)
    files = ag.campaign_files(lake)
    if files is None:  # not partitioned by campaign: no campaign's files are its own
        agg = ag.compute(lake, max_gallery=max_gallery)
        cache.n_computed = agg.kpis.num_rows
        return agg
    shared = ag.shared_key(lake, max_gallery)
    keys = ag.campaign_keys(lake, files, shared)
    growing = sorted(c for c in keys if cache.key(c) not in (None, keys[c]) and cache.shared == shared
                     and _only_grew(cache.files(c), files[c]))
    hits, stored = cache.load(keys, AGGREGATE_TABLES, also=growing)
    added: Aggregates | None = None
    added_to: set[str] = set()
    if growing and stored:
        new_files = {c: {t: sorted(set(files[c][t]) - set(cache.files(c)[t])) for t in ("images", "faces")}
                     for c in growing}
        try:
            added, added_to = add_rows(lake, _only(stored, set(growing)), new_files, max_gallery=max_gallery)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:  # a stored table of another shape
            log.info("aggregate cache does not fit (%s): touched campaigns computed", exc)
    misses = sorted(set(keys) - hits - added_to)
    cache.n_reused, cache.n_added, cache.n_computed = len(hits), len(added_to), len(misses) + len(added_to)
    if not keys or (misses and not hits and not added_to):  # an empty (or missing) table, or nothing to reuse
        agg = ag.compute(lake, max_gallery=max_gallery)
    else:
        parts = [_only(stored, hits)] if hits else []
        parts += [{n: getattr(added, n) for n in AGGREGATE_TABLES}] if added_to else []
        if misses:
            fresh = ag._compute(lake, max_gallery=max_gallery, campaigns=misses)
            parts.append({n: getattr(fresh, n) for n in AGGREGATE_TABLES})
        try:
            agg = Aggregates(**{n: ag.by_campaign_order(pa.concat_tables([p[n] for p in parts],
                                                                          promote_options="permissive"))
                                for n in AGGREGATE_TABLES})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # a stored table of another shape
            log.info("aggregate cache does not fit (%s): every campaign computed", exc)
            cache.n_reused, cache.n_added, cache.n_computed = 0, 0, len(keys)
            agg = ag.compute(lake, max_gallery=max_gallery)
    cache.save(keys, {n: getattr(agg, n) for n in AGGREGATE_TABLES}, files, shared)
    return agg


def _only_grew(before: ag.TableFiles | None, now: ag.TableFiles) -> bool:
    """Whether ``now`` holds every file of ``before`` and at least one images file more."""
    if before is None:
        return False
    return (set(before["images"]) <= set(now["images"]) and set(before["faces"]) <= set(now["faces"])
            and bool(set(now["images"]) - set(before["images"])))


def _only(tables: dict[str, pa.Table], campaigns: set[str]) -> dict[str, pa.Table]:
    wanted = pa.array(sorted(campaigns), pa.string())
    return {n: t.filter(pc.is_in(t["campaign_id"], wanted)) for n, t in tables.items()}


def _addable(lake: Lake, stored: dict[str, pa.Table], images: pa.Table, faces: pa.Table
             ) -> dict[str, tuple[str, str, int]]:
    """campaign -> (its shown identity, the latest new run, how many new runs), for the campaigns whose
    new rows can be added to their stored aggregates (module doc)."""
    current = ag.current_identity(lake)
    if current is None:
        return {}
    scoring = {r["campaign_id"]: r for r in stored["scoring"].to_pylist()}
    rows = {r["campaign_id"]: r for r in stored["kpi_rows"].to_pylist()}
    old_runs: dict[str, set] = {}
    old_last: dict[str, object] = {}
    for r in stored["lineage"].select(["campaign_id", "run_id", "last_scored"]).to_pylist():
        old_runs.setdefault(r["campaign_id"], set()).add(r["run_id"])
        if r["last_scored"] is not None:
            old_last[r["campaign_id"]] = max(old_last.get(r["campaign_id"], r["last_scored"]), r["last_scored"])
    new_images = ag.split_by_campaign(images)
    attached = ag.split_by_campaign(ag.attach_images(faces, images.append_column("in_baseline",
                                                                                 _falses(images.num_rows))))
    own_faces = ag.split_by_campaign(faces)
    out: dict[str, tuple[str, str, int]] = {}
    for campaign, mine in new_images.items():
        s, row = scoring.get(campaign), rows.get(campaign)
        if (s is None or row is None or s["n_identities"] != 1 or s["shown"] != current or s["current"] != current
                or not addable_row(row) or set(mine["scoring_id"].to_pylist()) != {current}):
            continue
        n_own = own_faces[campaign].num_rows if campaign in own_faces else 0
        if n_own != (attached[campaign].num_rows if campaign in attached else 0):
            continue  # faces of images outside the new files, or of another identity
        runs = mine.group_by("run_id").aggregate([("scored_at", "max")]).to_pylist()
        if any(r["run_id"] in old_runs.get(campaign, ()) or r["scored_at_max"] is None for r in runs):
            continue
        runs.sort(key=lambda r: r["scored_at_max"])
        latest = runs[-1]
        if (len(runs) > 1 and runs[-2]["scored_at_max"] == latest["scored_at_max"]) or (
                campaign in old_last and latest["scored_at_max"] <= old_last[campaign]):
            continue  # which run is the latest would not be clear
        out[campaign] = (current, latest["run_id"], len(runs))
    return out


def _falses(n: int) -> pa.Array:
    return pa.array(np.zeros(n, dtype=bool))


def add_rows(lake: Lake, stored: dict[str, pa.Table], new_files: dict[str, ag.TableFiles], *, max_gallery: int
             ) -> tuple[Aggregates | None, set[str]]:
    """The aggregates of the campaigns of ``new_files`` ({campaign: the files added since ``stored``, its
    last render's aggregates}) that can be added to (:func:`_addable`), and which those are."""
    every = {t: sorted({p for f in new_files.values() for p in f[t]}) for t in ("images", "faces")}
    images, faces = ag._read_all(lake, files=every)
    images = images.filter(pc.is_in(images["campaign_id"], pa.array(sorted(new_files), pa.string())))
    ok = _addable(lake, stored, images, faces)
    if not ok:
        return None, set()
    names = sorted(ok)
    stored = _only(stored, set(names))
    images = images.filter(pc.is_in(images["campaign_id"], pa.array(names, pa.string())))
    latest = pa.table({"campaign_id": names, "latest_run": [ok[c][1] for c in names]})
    images = ag._lookup(images, "campaign_id", latest, ["latest_run"])
    images = images.append_column("in_baseline", pc.not_equal(images["run_id"], images["latest_run"]))
    faces = ag.attach_images(faces, images)  # the detections (det_scores)
    units = ag.counted(images, faces)  # a video's track once
    base_i, base_u = images.filter(images["in_baseline"]), units.filter(units["in_baseline"])

    old_rows = stored["kpi_rows"].to_pylist()
    new_rows = ag.campaign_kpis(images, units)
    rows = _without_gone(add_kpis(old_rows, new_rows))
    new_base_rows = ag.campaign_kpis(base_i, base_u)
    grown = set(new_base_rows["campaign_id"].to_pylist())
    base_rows = pa.concat_tables([_without_gone(add_kpis([r for r in old_rows if r["campaign_id"] in grown],
                                                         new_base_rows)),
                                  pa.Table.from_pylist([r for r in old_rows if r["campaign_id"] not in grown],
                                                       schema=rows.schema)], promote_options="permissive")
    extras = _sums(pa.concat_tables([stored["kpi_extras"], ag.kpi_extras(images, units)]), ["campaign_id"],
                   ["n_undated", "n_videos", "sum_valence_sq", "n_valence_sq"])
    base_extras = _sums(pa.concat_tables([stored["kpi_extras"], ag.kpi_extras(base_i, base_u)]), ["campaign_id"],
                        ["n_undated", "n_videos", "sum_valence_sq", "n_valence_sq"])
    old_meta = {r["campaign_id"]: r for r in stored["kpis"].select(["campaign_id", *ag.BASELINE_META]).to_pylist()}
    weeks = pa.table({"campaign_id": images["campaign_id"], "week": ag._week(images["posted_at"])})
    new_week = {r["campaign_id"]: r["week_max"] for r in weeks.group_by("campaign_id").aggregate(
        [("week", "max")]).to_pylist()}
    meta = pa.Table.from_pylist([{
        "campaign_id": c, "baseline_mode": "run", "latest_run": ok[c][1],
        "latest_week": max((w for w in (old_meta[c]["latest_week"], new_week.get(c)) if w is not None), default=None),
        "n_runs": int(old_meta[c]["n_runs"] or 0) + ok[c][2]} for c in names],
        schema=stored["kpis"].select(["campaign_id", *ag.BASELINE_META]).schema)

    emo_counts, emo_means = ag.emotions(units)
    runs = lake.read("runs", ["run_id", "started_at", "finished_at", "status", "config_hash", "spark_master"],
                     optional_table=True)
    lineage = pa.concat_tables([stored["lineage"].select([*ag.LINEAGE_KEYS, "n_images", "first_scored",
                                                          "last_scored"]), ag.lineage_counts(images)],
                               promote_options="permissive")
    lineage = lineage.group_by(ag.LINEAGE_KEYS, use_threads=False).aggregate(
        [("n_images", "sum"), ("first_scored", "min"), ("last_scored", "max")])
    lineage = ag._rename(lineage, {"n_images_sum": "n_images", "first_scored_min": "first_scored",
                                   "last_scored_max": "last_scored"})
    statuses = _sums(pa.concat_tables([stored["statuses"], ag.statuses(images)[0]]), ["campaign_id", "status"],
                     ["n_images"]).sort_by([("campaign_id", "ascending"), ("n_images", "descending"),
                                            ("status", "ascending")])
    examples = ag.top_k_per_group(pa.concat_tables([stored["status_examples"], ag.statuses(images)[1]]),
                                  ["campaign_id", "status"], "image_id", 3, descending=False).drop_columns(["rank"])
    picks, gallery_images, gallery_faces = _gallery(lake, stored, images, {c: new_files[c] for c in names},
                                                    max_gallery)
    scoring = _scoring(lake, stored, images, names, ok)
    agg = Aggregates(
        kpis=ag.kpis_from(rows, extras, base_rows, base_extras, meta),
        emotions=_sums(pa.concat_tables([stored["emotions"], emo_counts]), ["campaign_id", "emotion"], ["n"]).sort_by(
            [("campaign_id", "ascending"), ("emotion", "ascending")]),
        emotion_means=_weighted(stored["emotion_means"], emo_means, stored["kpi_rows"], new_rows),
        adjusted_mix=ag.adjusted_mix(lake, pa.table({"campaign_id": names, "scoring_id": [ok[c][0] for c in names]})),
        timeline=_by_key(stored["timeline"], ag.timeline(images, units), "day"),
        platforms=_by_key(stored["platforms"], ag.platforms(images, units), "platform"),
        faces_per_image=_sums(pa.concat_tables([stored["faces_per_image"], ag.faces_per_image(images)]),
                              ["campaign_id", "n_faces"], ["n_images"]).sort_by(
            [("campaign_id", "ascending"), ("n_faces", "ascending")]),
        det_scores=_sums(pa.concat_tables([stored["det_scores"], ag.det_scores(faces)]), ["campaign_id", "bin"],
                         ["n_faces"]).sort_by([("campaign_id", "ascending"), ("bin", "ascending")]),
        face_quality=_sums(pa.concat_tables([stored["face_quality"], ag.face_quality(units)]),
                           ["campaign_id", "quality"], ["n"]).sort_by([("campaign_id", "ascending"),
                                                                       ("quality", "ascending")]),
        statuses=statuses, status_examples=examples, lineage=ag.lineage_with_runs(lineage, runs),
        gallery=picks, scoring=scoring, identity_comparison=stored["identity_comparison"],
        gallery_images=gallery_images, gallery_faces=gallery_faces, kpi_rows=rows, kpi_extras=extras)
    return agg, set(names)


def _without_gone(rows: pa.Table) -> pa.Table:
    """add_kpis rows as the pages' campaign_kpis gives them: n_images_gone is the campaigns table's (the
    pages read it from there: :func:`_scoring`), null here."""
    i = rows.schema.get_field_index("n_images_gone")
    return rows.set_column(i, "n_images_gone", pa.nulls(rows.num_rows, rows.schema.field(i).type))


def _sums(table: pa.Table, keys: list[str], columns: list[str]) -> pa.Table:
    """``columns`` summed per ``keys`` (the same column order as ``table``)."""
    g = table.select([*keys, *columns]).group_by(keys, use_threads=False).aggregate([(c, "sum") for c in columns])
    g = ag._rename(g, {f"{c}_sum": c for c in columns})
    return g.select(table.select([*keys, *columns]).column_names).cast(table.select([*keys, *columns]).schema)


def _weighted(old: pa.Table, new: pa.Table, old_rows: pa.Table, new_rows: pa.Table) -> pa.Table:
    """Per-campaign means (one row each) of old and new units, weighted by each side's n_faces."""
    weight = {}
    for side, rows in (("old", old_rows), ("new", new_rows)):
        for r in rows.select(["campaign_id", "n_faces"]).to_pylist():
            weight[side, r["campaign_id"]] = int(r["n_faces"] or 0)
    means = [c for c in old.column_names if c != "campaign_id"]
    by = {side: {r["campaign_id"]: r for r in t.to_pylist()} for side, t in (("old", old), ("new", new))}
    out = []
    for campaign in sorted(set(by["old"]) | set(by["new"])):
        parts = [(by[s].get(campaign), weight.get((s, campaign), 0)) for s in ("old", "new")]
        n = sum(w for r, w in parts if r is not None)
        row = {"campaign_id": campaign}
        for c in means:
            known = [(r[c], w) for r, w in parts if r is not None and r[c] is not None and w]
            row[c] = sum(v * w for v, w in known) / sum(w for _, w in known) if known and n else None
        out.append(row)
    return pa.Table.from_pylist(out, schema=old.schema)


def _by_key(old: pa.Table, new: pa.Table, key: str) -> pa.Table:
    """Timeline or platform rows (dashboards.aggregate._by_key_with_images) of both sides: counts summed,
    mean valence weighted by faces."""
    counts = ["n_images", "n_faces", *[f"n_{s}" for s in SENTIMENTS]]
    both = pa.concat_tables([old, new.select(old.column_names).cast(old.schema)])
    weighted = pc.multiply(pc.cast(both["n_faces"], pa.float64()), both["mean_valence"])
    both = both.append_column("valence_sum", pc.fill_null(weighted, 0.0))
    g = both.select(["campaign_id", key, *counts, "valence_sum"]).group_by(["campaign_id", key], use_threads=False
                                                                          ).aggregate([(c, "sum") for c in
                                                                                       [*counts, "valence_sum"]])
    g = ag._rename(g, {f"{c}_sum": c for c in [*counts, "valence_sum"]})
    n = pc.cast(g["n_faces"], pa.float64())
    mean = pc.if_else(pc.greater(n, 0), pc.divide(g["valence_sum"], n), pa.scalar(None, pa.float64()))
    g = g.drop_columns(["valence_sum"]).append_column("mean_valence", mean)
    return g.select(old.column_names).cast(old.schema).sort_by([("campaign_id", "ascending"), (key, "ascending")])


def _gallery(lake: Lake, stored: dict[str, pa.Table], images: pa.Table, new_files: dict[str, ag.TableFiles],
             k: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Gallery picks of the stored picks and the new candidates (each side is a top k: dashboards.aggregate
    .gallery_picks), with the details of kept picks from the store and of new ones from the new files."""
    old = stored["gallery"]
    old_sides = old.filter(pc.is_in(old["side"], pa.array(["positive", "negative"])))
    cand = pa.concat_tables([old_sides.select(ag.GALLERY_KEYS), ag.gallery_candidates(images)],
                            promote_options="permissive")
    old_videos = old.filter(pc.equal(old["side"], "video")).select(ag.GALLERY_KEYS)
    old_videos = ag._lookup(old_videos, ["image_id", "scoring_id"], stored["gallery_images"], ["posted_at"])
    videos = pa.concat_tables([old_videos, ag.video_candidates(images)], promote_options="permissive")
    picks = pa.concat_tables([ag.gallery_picks(cand, k), ag.video_picks(videos, k)])
    keys = picks.select(["image_id", "scoring_id"])
    kept_images = ag._semi_join(stored["gallery_images"], keys)
    kept_faces = ag._semi_join(stored["gallery_faces"], keys)
    known = set(zip(kept_images["image_id"].to_pylist(), kept_images["scoring_id"].to_pylist()))
    fresh = picks.filter(pa.array([(i, s) not in known for i, s in zip(picks["image_id"].to_pylist(),
                                                                         picks["scoring_id"].to_pylist())],
                                  pa.bool_()))
    every = {t: sorted({p for f in new_files.values() for p in f[t]}) for t in ("images", "faces")}
    new_images, new_faces = ag.gallery_details(lake, fresh, files=every)
    details = pa.concat_tables([kept_images, new_images], promote_options="permissive").sort_by(
        [("image_id", "ascending"), ("scoring_id", "ascending")])
    faces = pa.concat_tables([kept_faces, new_faces], promote_options="permissive")
    return picks, details, faces.sort_by([("image_id", "ascending"), ("face_index", "ascending")])


def _scoring(lake: Lake, stored: dict[str, pa.Table], images: pa.Table, names: list[str],
             ok: dict[str, tuple[str, str, int]]) -> pa.Table:
    """dashboards.aggregate.scoring of the campaigns after the add: one identity, its images counted with
    the new ones, n_images_gone from the campaigns rows."""
    old = {r["campaign_id"]: r for r in stored["scoring"].to_pylist()}
    last = {}
    for r in stored["lineage"].select(["campaign_id", "last_scored"]).to_pylist():
        if r["last_scored"] is not None:
            last[r["campaign_id"]] = max(last.get(r["campaign_id"], r["last_scored"]), r["last_scored"])
    new = {r["campaign_id"]: r for r in images.group_by("campaign_id").aggregate(
        [("image_id", "count_distinct"), ("scored_at", "max")]).to_pylist()}
    current = ok[names[0]][0]
    rows_of = lake.read("campaigns", ["campaign_id", "scoring_id", "n_images_gone"], optional_table=True)
    gone = {r["campaign_id"] or "": int(r["n_images_gone"]) for r in rows_of.to_pylist()
            if r["scoring_id"] == current and r["n_images_gone"] is not None}
    rows = []
    for c in names:
        n = int(old[c]["current_n_images"]) + int(new[c]["image_id_count_distinct"])
        rows.append({"campaign_id": c, "scoring_id": current, "n_images": n, "n_images_all": n,
                     "scored_at_max": max(v for v in (last.get(c), new[c]["scored_at_max"]) if v is not None),
                     "n_images_gone": gone.get(c, 0)})
    return ag.scoring(shown_identities(rows, current), rows)
