"""Campaign aggregates, computed for all campaigns at once with pyarrow group_by/joins.

Rendering 1,000 campaigns must not mean 1,000 scans or a Python loop over a million
rows: every function here takes whole tables and returns small grouped tables keyed by
``campaign_id``; :func:`split_by_campaign` then hands each page its slice.

Face-level numbers (sentiment shares, valence, emotions) describe the *faces* seen in a
campaign's images, which is what "how the audience faces feel" means; image-level
numbers (counts, statuses, faces per image) describe the images.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fer_core.kpis import campaign_kpis, counted_faces, keep_identities, shown_identities, with_identity
from fer_core.labels import EMOTIONS
from fer_core.tables import ADJUSTED_COLUMNS, PROB_COLUMNS, SCORED_STATUSES, SENTIMENTS

from dashboards.tables import Lake

log = logging.getLogger(__name__)

MAX_FACES_BUCKET = 10
DET_BIN = 0.02
MISSING = "(missing)"

IMAGE_COLUMNS = ["image_id", "campaign_id", "posted_at", "platform", "status", "error", "n_faces",
                 "valence", "dominant_emotion", "model_version", "detector_version", "run_id", "scored_at",
                 "scoring_id", "media_type"]
FACE_COLUMNS = ["image_id", "campaign_id", "emotion", "sentiment", "valence", "det_score", "quality", "track_id",
                "model_version", "scoring_id", *PROB_COLUMNS]
GALLERY_IMAGE_COLUMNS = ["image_id", "campaign_id", "caption", "source", "width", "height", "valence",
                         "sentiment", "dominant_emotion", "n_faces", "posted_at", "platform", "model_version",
                         "scoring_id", "media_type", "duration_s", "n_frames"]
GALLERY_FACE_COLUMNS = ["image_id", "campaign_id", "face_index", "x", "y", "w", "h", "det_score",
                        "landmarks", "emotion", "sentiment", "valence", "model_version", "scoring_id", *PROB_COLUMNS,
                        "frame_ms", "track_id", "face_px", "quality"]


@dataclass
class Aggregates:
    """Everything the pages show except thumbnails, as small tables keyed by campaign_id."""

    kpis: pa.Table
    emotions: pa.Table
    emotion_means: pa.Table
    adjusted_mix: pa.Table
    timeline: pa.Table
    platforms: pa.Table
    faces_per_image: pa.Table
    det_scores: pa.Table
    face_quality: pa.Table
    statuses: pa.Table
    status_examples: pa.Table
    lineage: pa.Table
    gallery: pa.Table
    scoring: pa.Table
    identity_comparison: pa.Table
    gallery_images: pa.Table
    gallery_faces: pa.Table
    kpi_rows: pa.Table
    """What the tiles are drawn from and a later render adds a run's rows to (dashboards.increment): the
    fer_core.kpis rows of every shown image, and the sums only the pages use (:func:`kpi_extras`)."""
    kpi_extras: pa.Table


# ----------------------------------------------------------------------------- helpers


def _fill(table: pa.Table, column: str, value) -> pa.Table:
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pc.fill_null(table.column(column), value))


def _ratio(num: pa.ChunkedArray | pa.Array, den: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """num/den as float64, null where den is 0 (an empty campaign has no share, not 0 %)."""
    num_f, den_f = pc.cast(num, pa.float64()), pc.cast(den, pa.float64())
    return pc.if_else(pc.greater(den_f, 0), pc.divide(num_f, pc.if_else(pc.greater(den_f, 0), den_f, 1.0)),
                      pa.scalar(None, pa.float64()))


def _flag(condition) -> pa.ChunkedArray:
    """Boolean -> int64 0/1 (nulls count as 0) so group_by can sum it."""
    return pc.cast(pc.fill_null(condition, False), pa.int64())


def _group_starts(codes: np.ndarray) -> np.ndarray:
    """True where a new group starts, for group codes already sorted."""
    change = np.ones(len(codes), dtype=bool)
    change[1:] = codes[1:] != codes[:-1]
    return change


def top_k_per_group(table: pa.Table, keys: list[str], sort_by: str, k: int, *,
                    descending: bool) -> pa.Table:
    """The first ``k`` rows of each ``keys`` group ordered by ``sort_by`` (a vectorised window).

    pyarrow has no window functions; sorting once and ranking rows with numpy keeps
    this O(n log n) in C instead of a Python loop per campaign.
    """
    ordered, rank, _ = _ranked(table, keys, sort_by, descending=descending)
    return ordered.append_column("rank", pa.array(rank, pa.int64())).filter(pa.array(rank < k))


def _codes(table: pa.Table, keys: list[str]) -> np.ndarray:
    """One int64 group code per row for ``keys`` (dictionary indices: cheap to sort, unlike strings)."""
    code = np.zeros(table.num_rows, dtype=np.int64)
    for key in keys:
        enc = pc.dictionary_encode(table.column(key).combine_chunks())
        idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1  # null -> 0
        code = code * (len(enc.dictionary) + 1) + idx
    return code


def _ranked(table: pa.Table, keys: list[str], sort_by: str, *, descending: bool
            ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``table`` sorted by group then ``sort_by``; each row's rank and its group's size.

    Nulls sort last, so a missing score never outranks a real one. Ties go by image_id where there is
    one, so the picks do not depend on the order the rows were read in (nor on whether a render computed
    them from all rows or added a run's to the last render's picks).
    """
    if table.num_rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return table, empty, empty
    codes = _codes(table, keys)
    keyed = table.append_column("__group", pa.array(codes))
    order = "descending" if descending else "ascending"
    ties = [("image_id", "ascending")] if "image_id" in table.column_names and sort_by != "image_id" else []
    idx = pc.sort_indices(keyed, sort_keys=[("__group", "ascending"), (sort_by, order), *ties])
    ordered = table.take(idx)
    change = _group_starts(codes[idx.to_numpy()])
    starts = np.flatnonzero(change)
    group = np.cumsum(change) - 1
    sizes = np.diff(np.append(starts, ordered.num_rows))
    return ordered, np.arange(ordered.num_rows) - starts[group], sizes[group]


def split_by_campaign(table: pa.Table, key: str = "campaign_id") -> dict[str, pa.Table]:
    """One zero-copy slice per campaign; cost is per campaign, not per row."""
    if table.num_rows == 0:
        return {}
    ordered = table.take(pc.sort_indices(table, sort_keys=[(key, "ascending")]))
    starts = np.flatnonzero(_group_starts(_codes(ordered, [key])))
    ends = np.append(starts[1:], ordered.num_rows)
    names = ordered.column(key).take(pa.array(starts)).to_pylist()
    return {name: ordered.slice(int(s), int(e - s)) for name, s, e in zip(names, starts, ends)}


def _lookup(table: pa.Table, key: str | list[str], other: pa.Table, columns: list[str]) -> pa.Table:
    """Append ``columns`` of ``other`` to ``table`` by a key unique in ``other`` (a left join).

    A hash lookup (index_in) plus take: several times faster than an Acero join for the
    million-row case, and the row order of ``table`` is kept.
    """
    keys = [key] if isinstance(key, str) else key
    left = table[keys[0]] if len(keys) == 1 else _composite_key(table, keys)
    right = other[keys[0]] if len(keys) == 1 else _composite_key(other, keys)
    pos = pc.index_in(left, value_set=right.combine_chunks())
    for c in columns:
        table = table.append_column(c, other[c].take(pos))
    return table


def _composite_key(table: pa.Table, keys: list[str]) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(*[pc.cast(table[k], pa.string()) for k in keys], "\x1f")


def _semi_join(table: pa.Table, keys: pa.Table) -> pa.Table:
    """Rows of ``table`` whose key columns match a row of ``keys`` (works with list columns,
    which Acero joins refuse to carry)."""
    names = keys.column_names
    return table.filter(pc.is_in(_composite_key(table, names), value_set=_composite_key(keys, names).combine_chunks()))


def _rename(table: pa.Table, mapping: dict[str, str]) -> pa.Table:
    return table.rename_columns([mapping.get(c, c) for c in table.column_names])


def _day(ts: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(pc.floor_temporal(ts, unit="day"), pa.timestamp("us", tz="UTC")).cast(pa.date32())


def _week(ts: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.floor_temporal(ts, unit="week", week_starts_monday=True)


# ----------------------------------------------------------------------------- loading


def _of_campaigns(campaigns: list[str] | None) -> pc.Expression | None:
    """The scan filter of ``campaigns`` ('' stands for a null campaign_id); None: every campaign. The
    tables are partitioned by campaign_id, so it prunes files."""
    if campaigns is None:
        return None
    named = pc.field("campaign_id").isin([c for c in campaigns if c])
    return named | pc.field("campaign_id").is_null() if "" in campaigns else named


def _read_all(lake: Lake, campaigns: list[str] | None = None, files: dict[str, list[str]] | None = None
              ) -> tuple[pa.Table, pa.Table]:
    """Every images and faces row (of ``campaigns`` only, if given; of ``files``, {table: Delta add paths},
    only, if given), every scoring identity (scoring_id filled: fer_core.kpis.with_identity)."""
    files = files or {}
    images = lake.read("images", IMAGE_COLUMNS, filter=_of_campaigns(campaigns), files=files.get("images"))
    for column, value in (("campaign_id", ""), ("status", "unknown"), ("n_faces", 0),
                          ("model_version", ""), ("run_id", ""), ("platform", MISSING), ("media_type", "image")):
        images = _fill(images, column, value)  # media_type: rows from before video posts are photos
    faces = lake.read("faces", FACE_COLUMNS, filter=_of_campaigns(campaigns), optional_table=True,
                      files=files.get("faces"))
    for column, value in (("campaign_id", ""), ("model_version", ""), ("sentiment", "neutral"),
                          ("emotion", MISSING)):
        faces = _fill(faces, column, value)
    return with_identity(images), with_identity(faces)


def current_identity(lake: Lake) -> str | None:
    """The lake's current scoring identity: that of its latest succeeded (or recovered) run; None for a
    lake whose runs predate identities (each campaign then shows its most recently used one)."""
    runs = lake.read("runs", ["started_at", "status", "scoring_id"], optional_table=True)
    runs = runs.filter(pc.and_(pc.is_in(runs["status"], pa.array(["succeeded", "recovered"])),
                               pc.is_valid(runs["scoring_id"])))
    if not runs.num_rows:
        return None
    return runs.sort_by([("started_at", "descending")])["scoring_id"][0].as_py()


def identity_rows(lake: Lake, images: pa.Table, current: str | None) -> list[dict]:
    """Per (campaign, identity): n_images, n_images_all, scored_at_max, and for the current identity the
    job's n_images_gone (its campaigns rows: only the job knows which dumps are gone)."""
    per = images.group_by(["campaign_id", "scoring_id"]).aggregate([("image_id", "count_distinct"),
                                                                    ("scored_at", "max")])
    every = images.group_by("campaign_id").aggregate([("image_id", "count_distinct")])
    n_all = dict(zip(every["campaign_id"].to_pylist(), every["image_id_count_distinct"].to_pylist()))
    gone: dict[tuple, int] = {}
    if current is not None:
        rows = lake.read("campaigns", ["campaign_id", "scoring_id", "n_images_gone"], optional_table=True)
        rows = rows.filter(pc.and_(pc.equal(rows["scoring_id"], current), pc.is_valid(rows["n_images_gone"])))
        gone = {(r["campaign_id"], r["scoring_id"]): int(r["n_images_gone"]) for r in rows.to_pylist()}
    return [{"campaign_id": r["campaign_id"], "scoring_id": r["scoring_id"], "n_images": r["image_id_count_distinct"],
             "n_images_all": n_all[r["campaign_id"]], "scored_at_max": r["scored_at_max"],
             "n_images_gone": gone.get((r["campaign_id"], r["scoring_id"]), 0)} for r in per.to_pylist()]


def _shown(lake: Lake, images: pa.Table) -> tuple[dict, list[dict]]:
    current = current_identity(lake)
    rows = identity_rows(lake, images, current)
    return shown_identities(rows, current), rows


def _by_campaign(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r["campaign_id"], []).append(r)
    return out


def _keep_shown(images: pa.Table, faces: pa.Table, shown: dict) -> tuple[pa.Table, pa.Table]:
    """The rows of the identity each campaign shows, never two identities in one figure; faces take
    their campaign, date, platform and baseline flag from their image."""
    images, faces = keep_identities(images, faces, {c: v["shown"] for c, v in shown.items()})
    images = _mark_baseline(images)
    return images, attach_images(faces, images)


def attach_images(faces: pa.Table, images: pa.Table) -> pa.Table:
    """Faces with their image's campaign, date, platform and baseline flag; faces of unknown images dropped."""
    faces = _lookup(faces.drop_columns(["campaign_id"]), ["image_id", "scoring_id"], images,
                    ["campaign_id", "posted_at", "platform", "in_baseline"])
    return faces.filter(pc.is_valid(faces["campaign_id"]))


def counted(images: pa.Table, faces: pa.Table) -> pa.Table:
    """The faces every face-level figure counts: fer_core.kpis.counted_faces (a photo's face once, a video's
    track once, as the campaigns table's shares), each with its post's campaign, date, platform and
    baseline flag. Only the detection-confidence histogram counts detections (faces rows) instead."""
    units = counted_faces(faces).drop_columns(["campaign_id"])
    return _lookup(units, ["image_id", "scoring_id"], images, ["campaign_id", "posted_at", "platform", "in_baseline"])


def load_current(lake: Lake) -> tuple[pa.Table, pa.Table]:
    """Images and faces of the scoring identity each campaign's page shows (fer_core.kpis.shown_identities:
    the lake's current identity once it has rescored the campaign, the older one until then), with
    baseline flags. The tables hold one row per (image_id, scoring_id); counting two identities would
    double every number and mix two models in one figure."""
    images, faces = _read_all(lake)
    shown, _ = _shown(lake, images)
    return _keep_shown(images, faces, shown)


def scoring(shown: dict, rows: list[dict]) -> pa.Table:
    """Per campaign: the identity shown, the current one, and the current one's coverage."""
    out = []
    per = _by_campaign(rows)
    for campaign, info in shown.items():
        mine = info["current_row"] or {}
        theirs = per.get(campaign, [])
        out.append({"campaign_id": campaign, "shown": info["shown"], "current": info["current"],
                    "complete": info["complete"], "current_n_images": mine.get("n_images", 0),
                    "n_images_all": max((r["n_images_all"] for r in theirs), default=0),
                    "current_n_gone": mine.get("n_images_gone", 0), "n_identities": len(theirs)})
    schema = pa.schema([("campaign_id", pa.string()), ("shown", pa.string()), ("current", pa.string()),
                        ("complete", pa.bool_()), ("current_n_images", pa.int64()), ("n_images_all", pa.int64()),
                        ("current_n_gone", pa.int64()), ("n_identities", pa.int64())])
    return pa.Table.from_pylist(out, schema=schema)


def identity_comparison(images: pa.Table, faces: pa.Table, shown: dict, rows: list[dict]) -> pa.Table:
    """Where the current identity and an older one both scored the same images of a campaign: how many,
    the share of them (with faces under both) whose dominant emotion agrees, and each identity's emotion
    and sentiment shares and net sentiment over those images only (fer_core.kpis), so that a model
    change can be told from a real change. The older one is the other identity with the most images."""
    per = _by_campaign(rows)
    pairs: dict = {}  # campaign -> (older identity, current identity): campaigns under an upgrade only
    for campaign, info in shown.items():
        current = info["current"]
        others = [r for r in per.get(campaign, []) if r["scoring_id"] != current]
        if current is not None and info["current_row"] is not None and others:
            pairs[campaign] = (max(others, key=lambda r: (r["n_images"], r["scoring_id"]))["scoring_id"], current)
    wanted = pa.array(sorted(pairs), images.schema.field("campaign_id").type)
    looked = images.filter(pc.and_(pc.is_in(images["campaign_id"], wanted),
                                   pc.is_in(images["status"], pa.array(SCORED_STATUSES))))
    images_of = split_by_campaign(looked)  # one filter of each table, then a slice per campaign
    faces_of = split_by_campaign(faces.filter(pc.is_in(faces["campaign_id"], wanted.cast(faces.schema.field(
        "campaign_id").type))))
    out = []
    for campaign, (old, current) in pairs.items():
        mine = images_of.get(campaign, looked.slice(0, 0))
        campaign_faces = faces_of.get(campaign, faces.slice(0, 0))
        a = mine.filter(pc.equal(mine["scoring_id"], old))
        b = mine.filter(pc.equal(mine["scoring_id"], current))
        common = pc.unique(pc.filter(a["image_id"], pc.is_in(a["image_id"], b["image_id"])))
        if not len(common):
            continue
        pair = {}
        for name, ident, table in (("old", old, a), ("new", current, b)):
            imgs = table.filter(pc.is_in(table["image_id"], common))
            fcs = campaign_faces.filter(pc.and_(pc.equal(campaign_faces["scoring_id"], ident),
                                                pc.is_in(campaign_faces["image_id"], common)))
            (k,) = campaign_kpis(imgs, fcs).to_pylist() or [{}]
            pair[name] = (imgs, k)
        dom = {name: dict(zip(t["image_id"].to_pylist(), zip(t["dominant_emotion"].to_pylist(), t["n_faces"].to_pylist())))
               for name, (t, _) in pair.items()}
        both = [i for i in dom["old"] if dom["old"][i][1] and dom["new"].get(i, (None, 0))[1]]
        agree = sum(dom["old"][i][0] == dom["new"][i][0] for i in both)
        row = {"campaign_id": campaign, "old": old, "new": current, "n_common": len(common),
               "n_compared": len(both), "agreement": agree / len(both) if both else None}
        for name, (_, k) in pair.items():
            row[f"{name}_n_faces"] = k.get("n_faces")
            row[f"{name}_net_sentiment"] = k.get("net_sentiment")
            for e in EMOTIONS:
                row[f"{name}_share_{e}"] = k.get(f"share_{e}")
            for s in ("share_positive", "share_negative", "share_neutral_sentiment"):
                row[f"{name}_{s}"] = k.get(s)
        out.append(row)
    names = ["campaign_id", "old", "new", "n_common", "n_compared", "agreement"]
    fields = [pa.field(n, pa.string() if n in ("campaign_id", "old", "new") else
                       pa.int64() if n.startswith("n_") else pa.float64()) for n in names]
    for name in ("old", "new"):
        fields += [pa.field(f"{name}_n_faces", pa.int64()), pa.field(f"{name}_net_sentiment", pa.float64())]
        fields += [pa.field(f"{name}_share_{e}", pa.float64()) for e in EMOTIONS]
        fields += [pa.field(f"{name}_{s}", pa.float64())
                   for s in ("share_positive", "share_negative", "share_neutral_sentiment")]
    return pa.Table.from_pylist(out, schema=pa.schema(fields))


def _mark_baseline(images: pa.Table) -> pa.Table:
    """Add ``in_baseline``: rows that existed before the campaign's latest slice.

    The slice is the latest run when the campaign has images from more than one run
    (so the delta reads "what this run changed"); otherwise the latest posted_at week.
    Campaigns with neither get no baseline and their tiles say so.
    """
    images = images.append_column("week", _week(images.column("posted_at")))
    runs = images.group_by(["campaign_id", "run_id"]).aggregate([("scored_at", "max")])
    latest_run = top_k_per_group(runs, ["campaign_id"], "scored_at_max", 1, descending=True)
    n_runs = runs.group_by("campaign_id").aggregate([("run_id", "count")])
    weeks = images.group_by("campaign_id").aggregate([("week", "max"), ("week", "count_distinct")])
    meta = (latest_run.select(["campaign_id", "run_id"]).rename_columns(["campaign_id", "latest_run"])
            .join(n_runs.rename_columns(["campaign_id", "n_runs"]), "campaign_id")
            .join(weeks.rename_columns(["campaign_id", "latest_week", "n_weeks"]), "campaign_id"))
    mode = pc.if_else(pc.greater(meta["n_runs"], 1), "run",
                      pc.if_else(pc.greater(meta["n_weeks"], 1), "week", "none"))
    meta = meta.append_column("baseline_mode", mode)
    images = _lookup(images, "campaign_id", meta, ["latest_run", "n_runs", "latest_week", "n_weeks",
                                                    "baseline_mode"])
    by_run = pc.not_equal(images["run_id"], images["latest_run"])
    by_week = pc.fill_null(pc.less(images["week"], images["latest_week"]), True)  # undated: not "latest"
    in_base = pc.if_else(pc.equal(images["baseline_mode"], "run"), by_run,
                         pc.if_else(pc.equal(images["baseline_mode"], "week"), by_week, False))
    return images.append_column("in_baseline", pc.fill_null(in_base, False))


# ----------------------------------------------------------------------------- aggregates


TILE_NAMES: dict[str, str] = {"n_images_with_faces": "n_with_faces", "share_neutral_sentiment": "share_neutral",
                              "n_neutral_sentiment": "n_neutral",
                              "first_posted_at": "first_posted", "last_posted_at": "last_posted"}
"""fer_core.kpis columns -> the names the pages use (on a page, "neutral" is the sentiment)."""


def kpi_extras(images: pa.Table, faces: pa.Table) -> pa.Table:
    """Per campaign, the sums the tiles need beyond fer_core.kpis: undated images, video posts, and the sum
    and count of squared face valence (for intervals). Sums, so a run's add to them (dashboards.increment)."""
    flags = pa.table({"campaign_id": images["campaign_id"], "undated": _flag(pc.is_null(images["posted_at"])),
                      "video": _flag(pc.equal(images["media_type"], "video"))})
    flags = _rename(flags.group_by("campaign_id").aggregate([("undated", "sum"), ("video", "sum")]),
                    {"undated_sum": "n_undated", "video_sum": "n_videos"})
    squares = pa.table({"campaign_id": faces["campaign_id"].cast(images.schema.field("campaign_id").type),
                        "valence_sq": pc.multiply(faces["valence"], faces["valence"])})
    squares = _rename(squares.group_by("campaign_id").aggregate([("valence_sq", "sum"), ("valence_sq", "count")]),
                      {"valence_sq_sum": "sum_valence_sq", "valence_sq_count": "n_valence_sq"})
    table = flags.join(squares, "campaign_id", join_type="left outer")
    return _fill(_fill(table, "sum_valence_sq", 0.0), "n_valence_sq", 0).sort_by("campaign_id")


def _tiles(rows: pa.Table, extras: pa.Table) -> pa.Table:
    """The campaign KPIs of fer_core.kpis ``rows`` (the one definition; the campaigns table holds the same
    numbers) under TILE_NAMES, plus what only the pages show (``extras``: :func:`kpi_extras`): problem
    images (``n_bad``: not looked at), undated images, the photos / videos split (``n_photos``,
    ``n_videos``: posts by images.media_type), the share of images with faces and the mean squared
    valence (for intervals)."""
    kpi = rows.select(["campaign_id", "n_images", "n_images_ok", "n_images_with_faces", "n_faces", "n_positive",
                       "n_negative", "n_neutral_sentiment", "share_positive",
                       "share_negative", "share_neutral_sentiment", "net_sentiment", "mean_valence",
                       "first_posted_at", "last_posted_at"]).rename_columns(TILE_NAMES)
    table = kpi.join(extras, "campaign_id", join_type="left outer")
    n_sq = pc.cast(table["n_valence_sq"], pa.float64())
    mean_sq = pc.if_else(pc.greater(n_sq, 0), pc.divide(pc.cast(table["sum_valence_sq"], pa.float64()), n_sq),
                         pa.scalar(None, pa.float64()))
    table = table.drop_columns(["sum_valence_sq", "n_valence_sq"]).append_column("mean_valence_sq", mean_sq)
    table = table.append_column("n_bad", pc.subtract(table["n_images"], table["n_images_ok"]))
    table = table.append_column("n_photos", pc.subtract(table["n_images"], table["n_videos"]))
    return table.append_column("share_with_faces", _ratio(table["n_with_faces"], table["n_images"]))


KPI_FIELDS: tuple[str, ...] = ("n_images", "share_with_faces", "n_faces", "share_positive", "share_neutral",
                               "share_negative", "net_sentiment", "mean_valence")
CHANGE_TESTED: dict[str, str] = {
    # KPI that is a mean over units: those units ("images" or "faces", counted in n_<units>)
    "share_with_faces": "images", "share_positive": "faces", "share_neutral": "faces",
    "share_negative": "faces", "net_sentiment": "faces", "mean_valence": "faces",
}
NOISE_P = 0.05
"""A change whose p-value is at least this is drawn as within sampling noise."""


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    return table[column].to_numpy(zero_copy_only=False).astype(np.float64)


def _second_moment(table: pa.Table, field: str) -> np.ndarray:
    """Mean of the squared per-unit values behind a KPI: a 0/1 share is its own; net sentiment is
    the mean of +1/0/-1, so positive + negative share; valence has its own column."""
    if field == "net_sentiment":
        return _floats(table, "share_positive") + _floats(table, "share_negative")
    if field == "mean_valence":
        return _floats(table, "mean_valence_sq")
    return _floats(table, field)


def change_p_values(table: pa.Table) -> pa.Table:
    """Append ``<kpi>_change_p``: is the latest slice different from the baseline it is compared with?

    The baseline is a subset of the current rows, so the new slice is recovered from the two sets of
    means (n, mean, mean of squares). Pooled two-sample z-test of new vs baseline units (faces or
    images) with the variance of all current units, which for shares is the two-proportion z-test
    (= chi-square without continuity correction). Null where either side has no units. Faces of
    one image are not independent, so this is a lower bound on the noise.
    """
    from math import erfc, sqrt

    for field, unit in CHANGE_TESTED.items():
        n_now, n_base = _floats(table, f"n_{unit}"), _floats(table, f"n_{unit}_base")
        m_now, m_base = _floats(table, field), _floats(table, f"{field}_base")
        q_now = _second_moment(table, field)
        p_values: list[float | None] = []
        for nn, nb, mn, mb, qn in zip(n_now, n_base, m_now, m_base, q_now):
            n_new = nn - nb
            if not (n_new > 0 and nb > 0) or np.isnan([mn, mb, qn]).any():
                p_values.append(None)
                continue
            mean_new = (nn * mn - nb * mb) / n_new
            variance = max(qn - mn * mn, 0.0)
            se = sqrt(variance * (1 / n_new + 1 / nb))
            if se < 1e-12:
                p_values.append(1.0 if abs(mean_new - mb) < 1e-12 else 0.0)
            else:
                p_values.append(erfc(abs(mean_new - mb) / se / sqrt(2)))
        table = table.append_column(f"{field}_change_p", pa.array(p_values, pa.float64()))
    return table


def interval_columns(table: pa.Table, z: float = 1.959964) -> pa.Table:
    """Append ``<kpi>_ci_low`` / ``<kpi>_ci_high``: a 95% interval for each tested KPI from its own units
    (Wilson for shares; mean +- z standard errors for net sentiment and valence), so a small campaign's
    figure is read with its uncertainty. Faces of one image are not independent: a lower bound."""
    from math import sqrt

    from fer_core.metrics import wilson_interval

    for field, unit in CHANGE_TESTED.items():
        n, mean, second = _floats(table, f"n_{unit}"), _floats(table, field), _second_moment(table, field)
        low: list[float | None] = []
        high: list[float | None] = []
        for nn, mm, qq in zip(n, mean, second):
            if not nn > 0 or np.isnan([mm, qq]).any():
                low.append(None)
                high.append(None)
            elif field.startswith("share_"):
                lo, hi = wilson_interval(int(round(mm * nn)), int(nn), z)
                low.append(lo)
                high.append(hi)
            else:
                half = z * sqrt(max(qq - mm * mm, 0.0) / nn)
                low.append(mm - half)
                high.append(mm + half)
        table = table.append_column(f"{field}_ci_low", pa.array(low, pa.float64()))
        table = table.append_column(f"{field}_ci_high", pa.array(high, pa.float64()))
    return table


BASELINE_META: tuple[str, ...] = ("baseline_mode", "latest_run", "latest_week", "n_runs")


def kpi_parts(images: pa.Table, faces: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table, pa.Table]:
    """What :func:`kpis_from` draws the tiles from: fer_core.kpis rows and :func:`kpi_extras` of all the
    shown rows and of the baseline's (``in_baseline``), and each campaign's BASELINE_META."""
    mask_i, mask_f = images["in_baseline"], faces["in_baseline"]
    base_images, base_faces = images.filter(mask_i), faces.filter(mask_f)
    meta = images.group_by("campaign_id", use_threads=False).aggregate([(c, "first") for c in BASELINE_META])
    meta = _rename(meta, {f"{c}_first": c for c in BASELINE_META})
    return (campaign_kpis(images, faces), kpi_extras(images, faces), campaign_kpis(base_images, base_faces),
            kpi_extras(base_images, base_faces), meta)


def kpis_from(rows: pa.Table, extras: pa.Table, base_rows: pa.Table, base_extras: pa.Table,
              meta: pa.Table) -> pa.Table:
    """One row per campaign: the KPI tiles, the same numbers for the baseline (``*_base``), how
    likely the change is noise (``*_change_p``) and 95% intervals (``*_ci_low``, ``*_ci_high``)."""
    now = _tiles(rows, extras)
    base_fields = [*KPI_FIELDS, "mean_valence_sq"]
    base = _tiles(base_rows, base_extras).select(["campaign_id", *base_fields])
    base = base.rename_columns(["campaign_id", *[f"{c}_base" for c in base_fields]])
    table = now.join(base, "campaign_id", join_type="left outer").join(meta, "campaign_id", join_type="left outer")
    return interval_columns(change_p_values(table.sort_by("campaign_id")))


def kpis(images: pa.Table, faces: pa.Table) -> pa.Table:
    """:func:`kpis_from` the shown images and their counted faces (with baseline flags)."""
    return kpis_from(*kpi_parts(images, faces))


def _sentiment_counts(faces: pa.Table, keys: list[str]) -> pa.Table:
    fc = pa.table({**{k: faces[k] for k in keys},
                   "one": pa.chunked_array([pa.array(np.ones(faces.num_rows, dtype=np.int64))]),
                   **{s: _flag(pc.equal(faces["sentiment"], s)) for s in SENTIMENTS},
                   "valence": faces["valence"]})
    g = fc.group_by(keys).aggregate([("one", "sum"), *[(s, "sum") for s in SENTIMENTS], ("valence", "mean")])
    return _rename(g, {"one_sum": "n_faces", "valence_mean": "mean_valence",
                       **{f"{s}_sum": f"n_{s}" for s in SENTIMENTS}})


def _count(table: pa.Table, keys: list[str], name: str) -> pa.Table:
    g = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    return _rename(g, {"count_all": name})


def _by_key_with_images(images: pa.Table, faces: pa.Table, key: str, images_key: pa.ChunkedArray,
                        faces_key: pa.ChunkedArray) -> pa.Table:
    """Image counts and face sentiment counts per (campaign, key); keys with images but no faces keep 0s."""
    img = pa.table({"campaign_id": images["campaign_id"], key: images_key})
    n_img = _count(img, ["campaign_id", key], "n_images")
    fc = faces.select(["campaign_id", "sentiment", "valence"]).append_column(key, faces_key)
    joined = n_img.join(_sentiment_counts(fc, ["campaign_id", key]), ["campaign_id", key],
                        join_type="full outer")
    for c in ("n_images", "n_faces", *[f"n_{s}" for s in SENTIMENTS]):
        joined = _fill(joined, c, 0)
    return joined.sort_by([("campaign_id", "ascending"), (key, "ascending")])


def timeline(images: pa.Table, faces: pa.Table) -> pa.Table:
    """Per campaign and posted_at day (UTC): images, faces by sentiment, mean face valence."""
    dated_i = images.filter(pc.is_valid(images["posted_at"]))
    dated_f = faces.filter(pc.is_valid(faces["posted_at"]))
    return _by_key_with_images(dated_i, dated_f, "day", _day(dated_i["posted_at"]), _day(dated_f["posted_at"]))


def platforms(images: pa.Table, faces: pa.Table) -> pa.Table:
    """Per campaign and platform: images, faces by sentiment, mean face valence."""
    return _by_key_with_images(images, faces, "platform", images["platform"], faces["platform"])


def emotions(faces: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Faces per top emotion, and the mean probability of each emotion, per campaign."""
    counts = _count(faces, ["campaign_id", "emotion"], "n").sort_by([("campaign_id", "ascending"),
                                                                      ("emotion", "ascending")])
    means = faces.group_by("campaign_id").aggregate([(c, "mean") for c in PROB_COLUMNS])
    return counts, means


def adjusted_mix(lake: Lake, images: pa.Table) -> pa.Table:
    """The campaigns table's confusion-adjusted mix, for campaigns whose row is of the scoring identity
    the pages show (a row of another identity would not describe these faces)."""
    rows = lake.read("campaigns", ["campaign_id", "model_version", "scoring_id", *ADJUSTED_COLUMNS],
                     optional_table=True)
    rows = with_identity(rows.filter(pc.is_valid(rows[ADJUSTED_COLUMNS[0]])))
    shown = images.group_by(["campaign_id", "scoring_id"]).aggregate([])
    return rows.join(shown, keys=["campaign_id", "scoring_id"], join_type="inner").drop_columns(
        ["model_version", "scoring_id"])


def faces_per_image(images: pa.Table) -> pa.Table:
    """Histogram of faces per decoded image; the last bucket holds MAX_FACES_BUCKET or more."""
    looked = images.filter(pc.is_in(images["status"], pa.array(SCORED_STATUSES)))
    bucket = pc.min_element_wise(pc.cast(looked["n_faces"], pa.int64()), MAX_FACES_BUCKET)
    return _count(pa.table({"campaign_id": looked["campaign_id"], "n_faces": bucket}),
                  ["campaign_id", "n_faces"], "n_images").sort_by([("campaign_id", "ascending"),
                                                                   ("n_faces", "ascending")])


def det_scores(faces: pa.Table) -> pa.Table:
    """Histogram of detector confidence in DET_BIN-wide bins (bin = lower edge)."""
    scored = faces.filter(pc.is_valid(faces["det_score"]))
    score = pc.min_element_wise(pc.max_element_wise(scored["det_score"], 0.0), 1.0 - 1e-9)
    lower = pc.multiply(pc.floor(pc.divide(score, DET_BIN)), DET_BIN)
    return _count(pa.table({"campaign_id": scored["campaign_id"], "bin": pc.round(lower, 2)}),
                  ["campaign_id", "bin"], "n_faces").sort_by([("campaign_id", "ascending"), ("bin", "ascending")])


def face_quality(faces: pa.Table) -> pa.Table:
    """Faces per quality flag (fer_core.quality; "unmeasured" for faces scored before the flags), per campaign."""
    flags = pc.fill_null(faces["quality"], "unmeasured")
    return _count(pa.table({"campaign_id": faces["campaign_id"], "quality": flags}), ["campaign_id", "quality"],
                  "n").sort_by([("campaign_id", "ascending"), ("quality", "ascending")])


def statuses(images: pa.Table, examples_per_status: int = 3) -> tuple[pa.Table, pa.Table]:
    """Status counts per campaign, and a few example rows (image_id, error) per non-ok status."""
    counts = _count(images, ["campaign_id", "status"], "n_images").sort_by(  # ties by name: the same order each render
        [("campaign_id", "ascending"), ("n_images", "descending"), ("status", "ascending")])
    bad = images.filter(pc.not_equal(images["status"], "ok")).select(["campaign_id", "status", "image_id", "error"])
    examples = top_k_per_group(bad, ["campaign_id", "status"], "image_id", examples_per_status, descending=False)
    return counts, examples.drop_columns(["rank"])


LINEAGE_KEYS: list[str] = ["campaign_id", "run_id", "model_version", "detector_version"]


def lineage_counts(images: pa.Table) -> pa.Table:
    """Per campaign, run, model and detector: images scored, first and last scored_at."""
    g = images.group_by(LINEAGE_KEYS).aggregate([([], "count_all"), ("scored_at", "min"), ("scored_at", "max")])
    return _rename(g, {"count_all": "n_images", "scored_at_min": "first_scored", "scored_at_max": "last_scored"})


def lineage(images: pa.Table, runs: pa.Table) -> pa.Table:
    """Per campaign, each run that scored its images, with model, detector and run times."""
    return lineage_with_runs(lineage_counts(images), runs)


def lineage_with_runs(counts: pa.Table, runs: pa.Table) -> pa.Table:
    """:func:`lineage_counts` with each run's times, status and config (the latest runs row of each run)."""
    run_cols = runs.select(["run_id", "started_at", "finished_at", "status", "config_hash", "spark_master"])
    run_cols = run_cols.rename_columns(["run_id", "started_at", "finished_at", "run_status", "config_hash",
                                        "spark_master"])
    if run_cols.num_rows:
        run_cols = top_k_per_group(run_cols.append_column("image_id", run_cols["run_id"]), ["run_id"],
                                   "started_at", 1, descending=True).drop_columns(["rank", "image_id"])
    return counts.join(run_cols, "run_id", join_type="left outer").sort_by(
        [("campaign_id", "ascending"), ("last_scored", "descending"), ("run_id", "ascending"),
         ("model_version", "ascending"), ("detector_version", "ascending")])


def gallery(images: pa.Table, k: int) -> pa.Table:
    """The ``k`` most positive and ``k`` most negative images with faces, per campaign.

    Ranked by the image's valence. An image is listed once; with fewer than 2k candidates
    the upper half is "positive" and the lower half "negative".
    """
    return gallery_picks(gallery_candidates(images), k)


GALLERY_KEYS: list[str] = ["campaign_id", "image_id", "model_version", "scoring_id", "valence"]


def gallery_candidates(images: pa.Table) -> pa.Table:
    """The images :func:`gallery` ranks: with faces and a valence."""
    cand = images.filter(pc.and_(pc.greater(images["n_faces"], 0), pc.is_valid(images["valence"])))
    return cand.select(GALLERY_KEYS)


def gallery_picks(cand: pa.Table, k: int) -> pa.Table:
    """:func:`gallery` of its candidates. The picks of a set of candidates and a later set are those of
    the first set's picks and the later set (each side is a top k; with fewer than 2k candidates every
    candidate is picked)."""
    # One sort gives both ends: rank from the top, and (size - 1 - rank) from the bottom.
    # A campaign with fewer than 2k candidates splits them in halves, so its "most positive"
    # side never fills up with its most negative images.
    ordered, rank, size = _ranked(cand, ["campaign_id"], "valence", descending=True)
    k_pos = np.minimum((size + 1) // 2, k)
    k_neg = np.minimum(size - (size + 1) // 2, k)
    from_bottom = size - 1 - rank
    pos_mask, neg_mask = rank < k_pos, from_bottom < k_neg
    pos = ordered.filter(pa.array(pos_mask)).append_column("rank", pa.array(rank[pos_mask]))
    neg = ordered.filter(pa.array(neg_mask)).append_column("rank", pa.array(from_bottom[neg_mask]))
    pos = pos.append_column("side", pa.array(["positive"] * pos.num_rows, pa.string()))
    neg = neg.append_column("side", pa.array(["negative"] * neg.num_rows, pa.string()))
    neg = neg.take(pc.sort_indices(neg, sort_keys=[("campaign_id", "ascending"), ("rank", "ascending")]))
    return pa.concat_tables([pos, neg])


def video_gallery(images: pa.Table, k: int) -> pa.Table:
    """The ``k`` newest video posts with faces per campaign (side "video"), whatever their valence: the
    positive / negative sides rank every post, and a campaign's videos should be seen even where no video
    is at either end. Same columns as :func:`gallery`; undated videos come last."""
    return video_picks(video_candidates(images), k)


def video_candidates(images: pa.Table) -> pa.Table:
    """The posts :func:`video_gallery` ranks: videos with faces."""
    cand = images.filter(pc.and_(pc.equal(images["media_type"], "video"), pc.greater(images["n_faces"], 0)))
    return cand.select([*GALLERY_KEYS, "posted_at"])


def video_picks(cand: pa.Table, k: int) -> pa.Table:
    """:func:`video_gallery` of its candidates (a top k by posted_at: mergeable like gallery_picks)."""
    picks = top_k_per_group(cand, ["campaign_id"], "posted_at", k, descending=True).drop_columns(["posted_at"])
    return picks.append_column("side", pa.array(["video"] * picks.num_rows, pa.string()))


def _compute(lake: Lake, *, max_gallery: int, campaigns: list[str] | None = None) -> Aggregates:
    """Every aggregate of ``campaigns`` (None: all), from one read of their rows. Every figure is per
    campaign, so the aggregates of a set of campaigns are those campaigns' rows of all campaigns' ones."""
    every_image, every_face = _read_all(lake, campaigns)
    shown, identities = _shown(lake, every_image)
    images, faces = _keep_shown(every_image, every_face, shown)
    runs = lake.read("runs", ["run_id", "started_at", "finished_at", "status", "config_hash", "spark_master"],
                     optional_table=True)
    units = counted(images, faces)  # a video's track once: what the tiles and the campaigns table count
    emo_counts, emo_means = emotions(units)
    status_counts, status_examples = statuses(images)
    picks = pa.concat_tables([gallery(images, max_gallery), video_gallery(images, max_gallery)])
    gallery_images, gallery_faces = gallery_details(lake, picks, campaigns)
    parts = kpi_parts(images, units)
    return Aggregates(
        kpis=kpis_from(*parts), emotions=emo_counts, emotion_means=emo_means,
        adjusted_mix=adjusted_mix(lake, images),
        timeline=timeline(images, units), platforms=platforms(images, units),
        faces_per_image=faces_per_image(images), det_scores=det_scores(faces), face_quality=face_quality(units),
        statuses=status_counts, status_examples=status_examples, lineage=lineage(images, runs),
        gallery=picks, scoring=scoring(shown, identities),
        identity_comparison=identity_comparison(every_image, every_face, shown, identities),
        gallery_images=gallery_images, gallery_faces=gallery_faces, kpi_rows=parts[0], kpi_extras=parts[1])


AGGREGATE_TABLES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Aggregates))


TableFiles = dict[str, list[str]]
"""{"images": [...], "faces": [...]}: a campaign's Delta files (add paths) in each table."""


def campaign_files(lake: Lake) -> dict[str, TableFiles] | None:
    """campaign_id ('' for null) -> its images and faces files, off the Delta logs (no data file opened);
    None when images or faces are not partitioned by campaign_id (then no campaign's files are its own)."""
    images, faces = lake.files_by_campaign("images"), lake.files_by_campaign("faces")
    if images is None or faces is None:
        return None
    return {c: {"images": files, "faces": faces.get(c, [])} for c, files in images.items()}


def shared_key(lake: Lake, max_gallery: int) -> str:
    """What every campaign's aggregates depend on: the dashboards' code, the lake's current identity and
    the gallery size."""
    from dashboards.cache import code_fingerprint, fingerprint

    return fingerprint(code_fingerprint(), current_identity(lake), int(max_gallery))


def campaign_keys(lake: Lake, files: dict[str, TableFiles], shared: str) -> dict[str, str]:
    """campaign_id -> a fingerprint of everything its aggregates are computed from: its images and faces
    ``files`` (:func:`campaign_files`), its campaigns rows (the job's n_images_gone and adjusted mix) and
    ``shared`` (:func:`shared_key`)."""
    from dashboards.cache import fingerprint

    rows = lake.read("campaigns", ["campaign_id", "scoring_id", "n_images_gone", "run_id", *ADJUSTED_COLUMNS],
                     optional_table=True).to_pylist()
    by_campaign: dict[str, list] = {}
    for r in rows:
        by_campaign.setdefault(r["campaign_id"] or "", []).append(sorted(r.items()))
    return {c: fingerprint(shared, f["images"], f["faces"], sorted(by_campaign.get(c, []), key=str))
            for c, f in files.items()}


def by_campaign_order(table: pa.Table) -> pa.Table:
    """Rows in campaign order, each campaign's rows in the order they were computed in (a stable sort):
    the same whether the campaigns came from one computation or from several."""
    if table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[("campaign_id", "ascending")]))


def compute(lake: Lake, *, max_gallery: int) -> Aggregates:
    """Every aggregate the pages need, from all rows (dashboards.increment.compute reuses a last render's)."""
    agg = _compute(lake, max_gallery=max_gallery)
    return Aggregates(**{n: by_campaign_order(getattr(agg, n)) for n in AGGREGATE_TABLES})


def gallery_details(lake: Lake, picks: pa.Table, campaigns: list[str] | None = None,
                    files: TableFiles | None = None) -> tuple[pa.Table, pa.Table]:
    """Caption, source and face rows of the picked gallery images only (a filtered scan, of ``campaigns``'
    files only if given, or of ``files`` only); a video's faces rows are one per face per sampled frame
    (frame_ms, track_id), of the identity its page shows."""
    files = files or {}
    ids = pc.unique(picks["image_id"])
    keys = picks.select(["image_id", "scoring_id"])
    scope = _of_campaigns(campaigns)
    only = pc.field("image_id").isin(ids) if scope is None else (pc.field("image_id").isin(ids) & scope)
    imgs = lake.read("images", GALLERY_IMAGE_COLUMNS, filter=only, files=files.get("images"))
    imgs = _semi_join(with_identity(_fill(_fill(_fill(imgs, "model_version", ""), "media_type", "image"),
                                          "campaign_id", "")), keys)
    fcs = lake.read("faces", GALLERY_FACE_COLUMNS, filter=only, optional_table=True, files=files.get("faces"))
    fcs = _semi_join(with_identity(_fill(_fill(fcs, "model_version", ""), "campaign_id", "")), keys)
    return imgs.sort_by([("image_id", "ascending"), ("scoring_id", "ascending")]), fcs.sort_by(
        [("image_id", "ascending"), ("face_index", "ascending")])
