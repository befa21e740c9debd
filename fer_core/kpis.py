"""Campaign KPIs: the one implementation, on pyarrow tables of images and faces rows.

The job's campaign recompute (jobs/campaign/campaigns.py, one campaign per Spark group) and the
dashboards' tiles (dashboards/aggregate.py, all campaigns at once) both call :func:`campaign_kpis`,
so a number means the same wherever it is read. The definitions (also in docs/ARCHITECTURE.md):

* a campaign has one row **per scoring identity** (fer_core.identity: model, TTA, detector policy,
  sentiment rule, ...): each row's figures are over the images that identity scored, and identities are
  never mixed in one figure. Rows written before identities existed read ``<model_version>~legacy``.
  Coverage: ``n_images_all`` is the campaign's images under any identity, ``coverage`` = n_images /
  n_images_all, and ``n_images_gone`` (the current identity's row only) the images it has not scored whose
  input file is gone, so that it never will. Which identity a page shows is :func:`shown_identities`';
* ``n_images``: its images rows (every status); ``n_images_ok``: those decoded and looked at
  (status in SCORED_STATUSES: ``ok`` or ``no_face``); ``n_images_with_faces``: ``n_faces > 0``;
* faces are counted **per track** (:func:`counted_faces`): a photo's face counts once, and so does a
  video's track (one person across its sampled frames), however many frames it was seen in, so that
  a long video does not outweigh many photos. A track's emotion is the argmax of its frames' mean
  probabilities, its sentiment the one most of its frames have (ties: positive, neutral, negative
  in that order; the run's own sentiment rule rated each frame), its valence the mean of its frames';
* ``n_faces``: those counted faces, ``n_positive|negative|neutral_sentiment`` those of each sentiment;
  ``share_<emotion>`` and ``share_positive|negative|neutral_sentiment``:
  the share of those faces whose top emotion / sentiment it is (null without faces);
  ``net_sentiment`` = share_positive - share_negative; ``mean_valence``: the mean face valence;
* ``first_posted_at`` / ``last_posted_at``: the range of its images' ``posted_at``;
* ``mean_p_<emotion>``: the mean face probabilities (the input of the confusion-adjusted mix);
* ``n_faces_good``: faces whose quality flag (fer_core.quality) is ``good``; ``good_share_<emotion>``,
  ``good_share_positive|negative|neutral_sentiment`` and ``good_net_sentiment``: the same shares over
  those faces only (null without good faces; faces scored before the flags existed have no flag and
  count in n_faces, not in n_faces_good).
"""
from __future__ import annotations

from typing import Any

from fer_core.errors import SCORED_STATUSES
from fer_core.labels import EMOTIONS
from fer_core.sentiment import SENTIMENTS

__all__ = ["KPI_COLUMNS", "IMAGE_INPUTS", "FACE_INPUTS", "with_identity", "keep_identities", "keep_latest_identity",
           "shown_identities", "TRACK_KEYS", "TRACK_COLUMNS", "video_tracks", "counted_faces", "campaign_kpis",
           "kpi_schema", "MERGE_INPUTS", "addable_row", "add_kpis"]

PROB_COLUMNS = tuple(f"p_{e}" for e in EMOTIONS)
IMAGE_INPUTS: tuple[str, ...] = ("campaign_id", "status", "n_faces", "posted_at", "model_version", "scored_at",
                                  "image_id", "scoring_id", "input_file")
"""The images columns the KPIs read (scoring_id and input_file may be missing: an older lake)."""
FACE_INPUTS: tuple[str, ...] = ("campaign_id", "emotion", "sentiment", "valence", "model_version", "quality",
                                 *PROB_COLUMNS, "image_id", "track_id", "scoring_id")
"""The faces columns the KPIs read (image_id and track_id: to count a video's track once; a table
without track_id, or a null one, is read as photos' faces)."""
SENTIMENT_SHARES: dict[str, str] = {"positive": "share_positive", "negative": "share_negative",
                                    "neutral": "share_neutral_sentiment"}
"""Sentiment -> its share column (``share_neutral`` is the neutral *emotion*)."""
KPI_COLUMNS: tuple[str, ...] = (
    "campaign_id", "model_version", "n_images", "n_images_ok", "n_images_with_faces", "n_faces",
    "n_positive", "n_negative", "n_neutral_sentiment", *(f"share_{e}" for e in EMOTIONS), "share_positive", "share_negative", "share_neutral_sentiment",
    "net_sentiment", "mean_valence", "first_posted_at", "last_posted_at", *(f"mean_{c}" for c in PROB_COLUMNS),
    "n_faces_good", *(f"good_share_{e}" for e in EMOTIONS), "good_share_positive", "good_share_negative",
    "good_share_neutral_sentiment", "good_net_sentiment", "scoring_id", "n_images_all", "n_images_gone", "coverage",
)


def _flag(condition) -> Any:
    """Boolean -> int64 0/1 (null counts as 0), so group_by can sum it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pc.fill_null(condition, False), pa.int64())


def _ones(n: int) -> Any:
    import numpy as np
    import pyarrow as pa

    return pa.array(np.ones(n, dtype=np.int64))


def with_identity(table):
    """``table`` with its scoring_id filled in: rows written before identities existed (null, or no
    such column) read ``legacy_scoring_id(model_version)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fer_core.identity import LEGACY_SUFFIX

    legacy = pc.binary_join_element_wise(pc.fill_null(table["model_version"].cast(pa.string()), "unknown"),
                                         LEGACY_SUFFIX, "")
    if "scoring_id" not in table.column_names:
        return table.append_column("scoring_id", legacy)
    i = table.schema.get_field_index("scoring_id")
    return table.set_column(i, "scoring_id", pc.coalesce(table["scoring_id"].cast(pa.string()), legacy))


def keep_identities(images, faces, chosen: dict[Any, str]):
    """Only the rows of the identity ``chosen`` for each campaign (campaign_id -> scoring_id); campaigns
    not in ``chosen`` keep no rows. Returns (images, faces) with scoring_id filled (with_identity)."""
    import pyarrow as pa

    images, faces = with_identity(images), with_identity(faces)
    keys = pa.table({"campaign_id": pa.array(list(chosen), images.schema.field("campaign_id").type),
                     "scoring_id": pa.array(list(chosen.values()), pa.string())})
    images = images.join(keys, ["campaign_id", "scoring_id"], join_type="left semi")
    faces = faces.join(keys.cast(pa.schema([pa.field("campaign_id", faces.schema.field("campaign_id").type),
                                            pa.field("scoring_id", pa.string())])),
                       ["campaign_id", "scoring_id"], join_type="left semi")
    return images, faces


def keep_latest_identity(images, faces):
    """The rows of each campaign's most recently used identity (latest ``scored_at``; on a tie the
    greater id): what a page shows when the lake names no current identity (see shown_identities)."""
    images = with_identity(images)
    latest: dict[Any, tuple[Any, str]] = {}
    for r in images.group_by(["campaign_id", "scoring_id"]).aggregate([("scored_at", "max")]).to_pylist():
        key = (r["scored_at_max"] is not None, r["scored_at_max"], r["scoring_id"])
        if r["campaign_id"] not in latest or key > latest[r["campaign_id"]][0]:
            latest[r["campaign_id"]] = (key, r["scoring_id"])
    return keep_identities(images, faces, {c: v for c, (_, v) in latest.items()})


def shown_identities(rows: list[dict[str, Any]], current: str | None) -> dict[Any, dict[str, Any]]:
    """Which identity each campaign's page shows, from its per-identity KPI rows (campaign_id, scoring_id,
    n_images, n_images_all, n_images_gone, and optionally scored_at_max):

    * the ``current`` identity (the lake's, from its latest run) once it has scored every image of the
      campaign it can (n_images + n_images_gone >= n_images_all);
    * before that, while an upgrade's backfill is under way, the other identity that scored the most of
      its images (ties: the greater id), marked as not current, with the current one's coverage;
    * the current one, however partial, when no other identity scored the campaign.

    Returns campaign_id -> {"shown": id, "current": current or None, "complete": bool, "current_row": the
    current identity's row or None}.
    """
    by_campaign: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_campaign.setdefault(r["campaign_id"], []).append(r)
    out: dict[Any, dict[str, Any]] = {}
    for campaign, rs in by_campaign.items():
        mine = next((r for r in rs if current is not None and r["scoring_id"] == current), None)
        others = [r for r in rs if r is not mine]
        complete = mine is not None and (mine["n_images"] + (mine.get("n_images_gone") or 0)
                                         >= (mine.get("n_images_all") or mine["n_images"]))
        if current is None:  # no lake-wide current identity known: the most recently used one
            best = max(rs, key=lambda r: (r.get("scored_at_max") is not None, r.get("scored_at_max"), r["scoring_id"]))
            out[campaign] = {"shown": best["scoring_id"], "current": None, "complete": True, "current_row": None}
        elif complete or not others:
            out[campaign] = {"shown": current, "current": current, "complete": complete, "current_row": mine}
        else:
            old = max(others, key=lambda r: (r["n_images"], r["scoring_id"]))
            out[campaign] = {"shown": old["scoring_id"], "current": current, "complete": False, "current_row": mine}
    return out


TRACK_KEYS: tuple[str, ...] = ("campaign_id", "model_version", "scoring_id", "image_id", "track_id")
"""What identifies one video track: a person across the sampled frames of one video, per scoring identity."""
TRACK_COLUMNS: tuple[str, ...] = (*TRACK_KEYS, "first_ms", "last_ms", "n_frames", *PROB_COLUMNS, "emotion",
                                  "sentiment", "valence", "face_px", "quality")
"""The columns of :func:`video_tracks`' result (the tracks table's, fer_core.tables.tracks_schema, minus run_id)."""


def video_tracks(faces):
    """Faces rows of video frames (track_id not null) -> one row per track (TRACK_KEYS): the frames it was
    seen in (``n_frames``, ``first_ms`` .. ``last_ms``), its frames' mean probabilities, valence and face_px,
    the argmax emotion of those means, and the sentiment and quality flag most of its frames have (ties go to
    the earlier label of SENTIMENTS / QUALITY_LABELS; no flag on any frame: null). The one per-track rule:
    the campaign KPIs count these rows (:func:`counted_faces`) and the tracks table stores them
    (fer_core.tables.track_rows). Photos' faces (track_id null) are left out. Columns: TRACK_COLUMNS; a table
    without frame_ms / face_px / quality (an older lake, a reader that did not ask) reads them null."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from fer_core.quality import QUALITY_LABELS

    faces = with_identity(faces)
    optional = {"frame_ms": pa.int64(), "face_px": pa.float64(), "quality": pa.string(), "track_id": pa.int32()}
    for name, kind in optional.items():
        if name not in faces.column_names:
            faces = faces.append_column(name, pa.nulls(faces.num_rows, kind))
    video = faces.filter(pc.is_valid(faces["track_id"]))
    sentiment, flag = video["sentiment"].cast(pa.string()), video["quality"].cast(pa.string())
    votes = {f"n_s_{s}": _flag(pc.equal(sentiment, s)) for s in SENTIMENTS}
    flags = {f"n_q_{q}": _flag(pc.equal(flag, q)) for q in QUALITY_LABELS}
    unit = pa.table({**{k: video[k] for k in TRACK_KEYS}, "frame_ms": video["frame_ms"].cast(pa.int64()),
                     "one": _ones(video.num_rows), "valence": video["valence"].cast(pa.float64()),
                     "face_px": video["face_px"].cast(pa.float64()),
                     **{c: video[c].cast(pa.float64()) for c in PROB_COLUMNS}, **votes, **flags})
    tracks = unit.group_by(list(TRACK_KEYS), use_threads=False).aggregate(
        [("frame_ms", "min"), ("frame_ms", "max"), ("one", "sum"), ("valence", "mean"), ("face_px", "mean")]
        + [(c, "mean") for c in PROB_COLUMNS] + [(v, "sum") for v in (*votes, *flags)])
    tracks = tracks.sort_by([(k, "ascending") for k in TRACK_KEYS])

    def column_stack(names: list[str], width: int) -> Any:
        if not tracks.num_rows:
            return np.zeros((0, width))
        return np.column_stack([tracks[n].to_numpy(zero_copy_only=False) for n in names])

    probs = column_stack([f"{c}_mean" for c in PROB_COLUMNS], len(PROB_COLUMNS))
    counts = column_stack([f"{v}_sum" for v in votes], len(votes))
    q_counts = column_stack([f"{v}_sum" for v in flags], len(flags))
    quality = np.where(q_counts.sum(axis=1) > 0, np.asarray(QUALITY_LABELS, object)[q_counts.argmax(axis=1)], None)
    return pa.table({
        **{k: tracks[k] for k in TRACK_KEYS},
        "first_ms": tracks["frame_ms_min"], "last_ms": tracks["frame_ms_max"], "n_frames": tracks["one_sum"],
        **{c: tracks[f"{c}_mean"] for c in PROB_COLUMNS},
        "emotion": pa.array(np.asarray(EMOTIONS, object)[probs.argmax(axis=1)].tolist(), pa.string()),
        "sentiment": pa.array(np.asarray(SENTIMENTS, object)[counts.argmax(axis=1)].tolist(), pa.string()),
        "valence": tracks["valence_mean"], "face_px": tracks["face_px_mean"],
        "quality": pa.array(quality.tolist(), pa.string()),
    })


def counted_faces(faces):
    """Faces rows -> the faces the KPIs count: photos' faces (track_id null) as they are, and one row
    per video track (:func:`video_tracks`: its frames' mean probabilities and valence, the argmax emotion,
    and the sentiment and quality flag most of its frames have; see the module doc). The columns are the
    campaign_id, emotion, sentiment, valence, model_version, scoring_id, quality and p_* of FACE_INPUTS, and
    image_id where the input has it (the dashboards look up each counted face's post)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    faces = with_identity(faces)
    if "quality" not in faces.column_names:  # a lake from before the flags
        faces = faces.append_column("quality", pa.nulls(faces.num_rows, pa.string()))
    kept = ["campaign_id", "emotion", "sentiment", "valence", "model_version", "scoring_id", "quality", *PROB_COLUMNS]
    kept += ["image_id"] if "image_id" in faces.column_names else []
    if "track_id" not in faces.column_names or faces.num_rows == 0 or faces["track_id"].null_count == faces.num_rows:
        return faces.select(kept)
    tracks = video_tracks(faces).select(kept)
    tracks = tracks.cast(pa.schema([faces.schema.field(c) for c in kept]))
    return pa.concat_tables([faces.filter(pc.is_null(faces["track_id"])).select(kept), tracks])


def _coverage(images, current: str | None, gone_files: Any) -> Any:
    """(campaign_id, scoring_id) -> n_images_all (the campaign's distinct images under any identity)
    and n_images_gone (for the current identity only: its unscored images whose input file is gone)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    gone: dict[Any, int] = {}
    if "image_id" not in images.column_names:  # rows without ids (a hand-made table): each identity alone
        return {}, gone
    all_ids = images.group_by("campaign_id", use_threads=False).aggregate([("image_id", "count_distinct")])
    n_all = dict(zip(all_ids["campaign_id"].to_pylist(), all_ids["image_id_count_distinct"].to_pylist()))
    if current is not None and gone_files and "input_file" in images.column_names:
        mine = images.filter(pc.equal(images["scoring_id"], current))["image_id"]
        lacking = images.filter(pc.invert(pc.is_in(images["image_id"], mine)))
        lost = lacking.filter(pc.fill_null(pc.is_in(lacking["input_file"], pa.array(sorted(gone_files), pa.string())),
                                           False))
        g = lost.group_by("campaign_id", use_threads=False).aggregate([("image_id", "count_distinct")])
        gone = dict(zip(g["campaign_id"].to_pylist(), g["image_id_count_distinct"].to_pylist()))
    return n_all, gone


def campaign_kpis(images, faces, *, current: str | None = None, gone_files: Any = ()):
    """One row per (campaign, scoring identity) of ``images`` (KPI_COLUMNS, sorted by campaign_id and
    scoring_id). ``faces`` may be empty; a video's track counts once (counted_faces). ``current``: the
    lake's current identity, whose rows get n_images_gone, counted against ``gone_files`` (the input
    files known to be gone; the job checks them, the dashboards read its figure)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    images = with_identity(images)
    n_all, gone = _coverage(images, current, gone_files)
    faces = counted_faces(faces)
    keys = ["campaign_id", "scoring_id"]
    img = pa.table({
        "campaign_id": images["campaign_id"], "scoring_id": images["scoring_id"], "one": _ones(images.num_rows),
        "ok": _flag(pc.is_in(images["status"], pa.array(SCORED_STATUSES))),
        "with_faces": _flag(pc.greater(images["n_faces"], 0)), "posted_at": images["posted_at"],
        "model_version": images["model_version"],
    })
    gi = img.group_by(keys, use_threads=False).aggregate([
        ("one", "sum"), ("ok", "sum"), ("with_faces", "sum"), ("posted_at", "min"), ("posted_at", "max"),
        ("model_version", "max")])
    gi = gi.rename_columns({"one_sum": "n_images", "ok_sum": "n_images_ok", "with_faces_sum": "n_images_with_faces",
                            "posted_at_min": "first_posted_at", "posted_at_max": "last_posted_at",
                            "model_version_max": "model_version"})
    good = _flag(pc.equal(faces["quality"], "good"))
    fc = pa.table({
        "campaign_id": faces["campaign_id"].cast(images.schema.field("campaign_id").type),
        "scoring_id": faces["scoring_id"],
        "one": _ones(faces.num_rows), "good": good,
        **{f"n_{e}": _flag(pc.equal(faces["emotion"], e)) for e in EMOTIONS},
        **{f"n_s_{s}": _flag(pc.equal(faces["sentiment"], s)) for s in SENTIMENTS},
        **{f"g_{e}": pc.multiply(good, _flag(pc.equal(faces["emotion"], e))) for e in EMOTIONS},
        **{f"g_s_{s}": pc.multiply(good, _flag(pc.equal(faces["sentiment"], s))) for s in SENTIMENTS},
        "valence": faces["valence"].cast(pa.float64()),
        **{c: faces[c].cast(pa.float64()) for c in PROB_COLUMNS},
    })
    counted = ["one", "good", *(f"n_{e}" for e in EMOTIONS), *(f"n_s_{s}" for s in SENTIMENTS),
               *(f"g_{e}" for e in EMOTIONS), *(f"g_s_{s}" for s in SENTIMENTS)]
    gf = fc.group_by(keys, use_threads=False).aggregate(
        [(c, "sum") for c in counted] + [("valence", "mean")] + [(c, "mean") for c in PROB_COLUMNS])
    gf = gf.rename_columns({"one_sum": "n_faces", "good_sum": "n_faces_good", "valence_mean": "mean_valence",
                            **{f"{c}_mean": f"mean_{c}" for c in PROB_COLUMNS}})
    table = gi.join(gf, keys, join_type="left outer")
    n_faces = pc.fill_null(table["n_faces"], 0)
    table = table.set_column(table.schema.get_field_index("n_faces"), "n_faces", n_faces)
    has = pc.greater(n_faces, 0)
    den = pc.cast(pc.if_else(has, n_faces, 1), pa.float64())

    def share(column: str):
        return pc.if_else(has, pc.divide(pc.cast(pc.fill_null(table[column], 0), pa.float64()), den),
                          pa.scalar(None, pa.float64()))

    columns = {f"n_{s}" if s != "neutral" else "n_neutral_sentiment": pc.fill_null(table[f"n_s_{s}_sum"], 0)
               for s in SENTIMENTS}
    columns.update({f"share_{e}": share(f"n_{e}_sum") for e in EMOTIONS})
    columns.update({SENTIMENT_SHARES[s]: share(f"n_s_{s}_sum") for s in SENTIMENTS})
    columns["net_sentiment"] = pc.subtract(columns["share_positive"], columns["share_negative"])
    n_good = pc.fill_null(table["n_faces_good"], 0)
    has_good = pc.greater(n_good, 0)
    den_good = pc.cast(pc.if_else(has_good, n_good, 1), pa.float64())

    def good_share(column: str):
        return pc.if_else(has_good, pc.divide(pc.cast(pc.fill_null(table[column], 0), pa.float64()), den_good),
                          pa.scalar(None, pa.float64()))

    columns["n_faces_good"] = n_good
    columns.update({f"good_share_{e}": good_share(f"g_{e}_sum") for e in EMOTIONS})
    columns.update({f"good_{SENTIMENT_SHARES[s]}": good_share(f"g_s_{s}_sum") for s in SENTIMENTS})
    columns["good_net_sentiment"] = pc.subtract(columns["good_share_positive"], columns["good_share_negative"])
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, values)
        else:
            table = table.append_column(name, values)
    for c in ("n_images", "n_images_ok", "n_images_with_faces", "n_faces"):
        table = table.set_column(table.schema.get_field_index(c), c, table[c].cast(pa.int64()))
    campaigns, ids = table["campaign_id"].to_pylist(), table["scoring_id"].to_pylist()
    all_n = pa.array([n_all.get(c, n) for c, n in zip(campaigns, table["n_images"].to_pylist())], pa.int64())
    table = table.append_column("n_images_all", all_n)
    table = table.append_column("n_images_gone", pa.array(
        [gone.get(c, 0) if current is not None and i == current else None for c, i in zip(campaigns, ids)], pa.int64()))
    table = table.append_column("coverage", pc.divide(pc.cast(table["n_images"], pa.float64()),
                                                      pc.cast(pc.max_element_wise(all_n, 1), pa.float64())))
    return (table.select(list(KPI_COLUMNS)).sort_by([("campaign_id", "ascending"), ("scoring_id", "ascending")])
            .cast(kpi_schema()))


def kpi_schema():
    """The pyarrow schema of campaign_kpis' result (KPI_COLUMNS)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    types = {"campaign_id": pa.string(), "model_version": pa.string(), "first_posted_at": ts, "last_posted_at": ts,
             "scoring_id": pa.string()}
    return pa.schema([pa.field(c, types.get(c, pa.int64() if c.startswith("n_") else pa.float64()))
                      for c in KPI_COLUMNS])


MERGE_INPUTS: tuple[str, ...] = (
    "campaign_id", "scoring_id", "model_version", "n_images", "n_images_ok", "n_images_with_faces", "n_faces",
    *(f"share_{e}" for e in EMOTIONS), "share_positive", "share_negative", "share_neutral_sentiment", "mean_valence",
    "first_posted_at", "last_posted_at", *(f"mean_{c}" for c in PROB_COLUMNS), "n_faces_good",
    *(f"good_share_{e}" for e in EMOTIONS), "good_share_positive", "good_share_negative",
    "good_share_neutral_sentiment")
"""What :func:`add_kpis` needs of a stored campaigns row: a row with any of them null (where it must not
be: an older lake's row, written before the column existed) cannot be added to and is recomputed."""

_SHARES = (*(f"share_{e}" for e in EMOTIONS), "share_positive", "share_negative", "share_neutral_sentiment")
_GOOD_SHARES = tuple(f"good_{c}" for c in _SHARES)
_MEANS = ("mean_valence", *(f"mean_{c}" for c in PROB_COLUMNS))


def addable_row(row: dict[str, Any]) -> bool:
    """Whether a stored campaigns row holds every figure :func:`add_kpis` adds to (see MERGE_INPUTS)."""
    if any(row.get(c) is None for c in ("n_images", "n_images_ok", "n_images_with_faces", "n_faces",
                                        "n_faces_good")):
        return False
    if row["n_faces"] and any(row.get(c) is None for c in (*_SHARES, *_MEANS)):
        return False
    return not (row["n_faces_good"] and any(row.get(c) is None for c in _GOOD_SHARES))


def add_kpis(base: list[dict[str, Any]], delta, *, removed: dict[Any, int] | None = None):
    """The KPI rows of (campaign, identity) after adding new images: ``base`` (the stored campaigns rows of
    those keys, :func:`addable_row`) plus ``delta`` (:func:`campaign_kpis` of the new images and faces rows
    alone), equal to campaign_kpis over both (counts exactly; means to float rounding). For the steady
    state between upgrades only, where every image of a campaign has the one identity: n_images_all is
    n_images, n_images_gone 0. ``removed``: per campaign, earlier images rows the run deleted (superseded
    fetch errors: no faces, not ok) that ``base`` still counts. A key of delta without a base row is new.

    Counts come back from stored shares by rounding (share x n is an integer up to float rounding), so
    shares add exactly; the means are weighted by their counts."""
    import pyarrow as pa

    removed = removed or {}
    stored = {(r["campaign_id"], r["scoring_id"]): r for r in base}
    out: list[dict[str, Any]] = []
    for d in delta.to_pylist():
        b = stored.get((d["campaign_id"], d["scoring_id"]))
        if b is None:
            out.append(d)
            continue
        gone = removed.get(d["campaign_id"], 0)
        row = dict(d)
        for c in ("n_images", "n_images_ok", "n_images_with_faces", "n_faces", "n_faces_good"):
            row[c] = int(b[c]) + int(d[c])
        row["n_images"] -= gone
        n, n_good = row["n_faces"], row["n_faces_good"]

        def counts(r: dict[str, Any], column: str, of: str) -> int:
            return round(r[column] * r[of]) if r[of] else 0

        for c in _SHARES:
            row[c] = (counts(b, c, "n_faces") + counts(d, c, "n_faces")) / n if n else None
        for c in _GOOD_SHARES:
            row[c] = (counts(b, c, "n_faces_good") + counts(d, c, "n_faces_good")) / n_good if n_good else None
        for c in _MEANS:
            row[c] = (((b[c] or 0.0) * b["n_faces"] + (d[c] or 0.0) * d["n_faces"]) / n) if n else None
        row["n_positive"], row["n_negative"], row["n_neutral_sentiment"] = (
            round(row[c] * n) if n else 0 for c in ("share_positive", "share_negative", "share_neutral_sentiment"))
        for c, pick in (("first_posted_at", min), ("last_posted_at", max)):
            known = [v for v in (b.get(c), d[c]) if v is not None]
            row[c] = pick(known) if known else None
        row["net_sentiment"] = None if n == 0 else row["share_positive"] - row["share_negative"]
        row["good_net_sentiment"] = None if n_good == 0 else row["good_share_positive"] - row["good_share_negative"]
        row["n_images_all"], row["n_images_gone"] = row["n_images"], 0
        row["coverage"] = row["n_images"] / max(row["n_images_all"], 1)
        out.append(row)
    return (pa.Table.from_pylist(out, schema=kpi_schema())
            .sort_by([("campaign_id", "ascending"), ("scoring_id", "ascending")]))
