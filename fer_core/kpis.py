"""Campaign KPIs: the one implementation, on pyarrow tables of images and faces rows.

The job's campaign recompute (jobs/campaign/campaigns.py, one campaign per Spark group) and the
dashboards' tiles (dashboards/aggregate.py, all campaigns at once) both call :func:`campaign_kpis`,
so a number means the same wherever it is read. The definitions (also in docs/ARCHITECTURE.md):

* a campaign's figures are those of its **current model**: the model version that scored its
  images most recently (latest ``scored_at``); rows of older versions are not mixed in;
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

__all__ = ["KPI_COLUMNS", "IMAGE_INPUTS", "FACE_INPUTS", "keep_current_model", "counted_faces", "campaign_kpis",
           "kpi_schema"]

PROB_COLUMNS = tuple(f"p_{e}" for e in EMOTIONS)
IMAGE_INPUTS: tuple[str, ...] = ("campaign_id", "status", "n_faces", "posted_at", "model_version", "scored_at")
"""The images columns the KPIs read."""
FACE_INPUTS: tuple[str, ...] = ("campaign_id", "emotion", "sentiment", "valence", "model_version", "quality",
                                 *PROB_COLUMNS, "image_id", "track_id")
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
    "good_share_neutral_sentiment", "good_net_sentiment",
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


def keep_current_model(images, faces=None):
    """Only the rows of each campaign's current model (the version with the latest ``scored_at``; on a
    tie the greater version string). Returns images, or (images, faces) when faces are given."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if images.num_rows and pc.count_distinct(images["model_version"]).as_py() > 1:
        versions = images.group_by(["campaign_id", "model_version"]).aggregate([("scored_at", "max")])
        latest: dict[Any, tuple[Any, str]] = {}
        for r in versions.to_pylist():  # one row per (campaign, model): small
            key = (r["scored_at_max"] is not None, r["scored_at_max"], r["model_version"] or "")
            if r["campaign_id"] not in latest or key > latest[r["campaign_id"]][0]:
                latest[r["campaign_id"]] = (key, r["model_version"])
        current = pa.table({"campaign_id": pa.array(list(latest), images.schema.field("campaign_id").type),
                            "model_version": pa.array([v for _, v in latest.values()], pa.string())})
        images = images.join(current, ["campaign_id", "model_version"], join_type="left semi")
    else:
        current = images.group_by(["campaign_id", "model_version"]).aggregate([])
    if faces is None:
        return images
    faces = faces.join(current.cast(pa.schema([pa.field("campaign_id", faces.schema.field("campaign_id").type),
                                               pa.field("model_version", faces.schema.field("model_version").type)])),
                       ["campaign_id", "model_version"], join_type="left semi")
    return images, faces


def counted_faces(faces):
    """Faces rows -> the faces the KPIs count: photos' faces (track_id null) as they are, and one row
    per video track (campaign, model, image, track) with its frames' mean probabilities and valence,
    the argmax emotion and the sentiment most of its frames have (see the module doc). The columns
    are the campaign_id, emotion, sentiment, valence, model_version and p_* of FACE_INPUTS."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kept = ["campaign_id", "emotion", "sentiment", "valence", "model_version", *PROB_COLUMNS]
    if "track_id" not in faces.column_names or faces.num_rows == 0 or faces["track_id"].null_count == faces.num_rows:
        return faces.select(kept)
    photo = pc.is_null(faces["track_id"])
    video = faces.filter(pc.invert(photo))
    keys = ["campaign_id", "model_version", "image_id", "track_id"]
    votes = {f"n_s_{s}": _flag(pc.equal(video["sentiment"], s)) for s in SENTIMENTS}
    unit = pa.table({**{k: video[k] for k in keys}, "valence": video["valence"].cast(pa.float64()),
                     **{c: video[c].cast(pa.float64()) for c in PROB_COLUMNS}, **votes})
    tracks = unit.group_by(keys, use_threads=False).aggregate(
        [("valence", "mean")] + [(c, "mean") for c in PROB_COLUMNS] + [(v, "sum") for v in votes])
    probs = np.column_stack([tracks[f"{c}_mean"].to_numpy(zero_copy_only=False) for c in PROB_COLUMNS])
    counts = np.column_stack([tracks[f"{v}_sum"].to_numpy(zero_copy_only=False) for v in votes])
    track_rows = pa.table({
        "campaign_id": tracks["campaign_id"].cast(faces.schema.field("campaign_id").type),
        "emotion": pa.array(np.asarray(EMOTIONS)[probs.argmax(axis=1)], faces.schema.field("emotion").type),
        "sentiment": pa.array(np.asarray(SENTIMENTS)[counts.argmax(axis=1)], faces.schema.field("sentiment").type),
        "valence": tracks["valence_mean"].cast(faces.schema.field("valence").type),
        "model_version": tracks["model_version"].cast(faces.schema.field("model_version").type),
        **{c: tracks[f"{c}_mean"].cast(faces.schema.field(c).type) for c in PROB_COLUMNS},
    })
    return pa.concat_tables([faces.filter(photo).select(kept), track_rows])


def campaign_kpis(images, faces):
    """One row per campaign of ``images`` (KPI_COLUMNS, sorted by campaign_id), from rows that are
    already those of its current model (see keep_current_model). ``faces`` may be empty; a video's
    track counts once (counted_faces)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    faces = counted_faces(faces)
    img = pa.table({
        "campaign_id": images["campaign_id"], "one": _ones(images.num_rows),
        "ok": _flag(pc.is_in(images["status"], pa.array(SCORED_STATUSES))),
        "with_faces": _flag(pc.greater(images["n_faces"], 0)), "posted_at": images["posted_at"],
        "model_version": images["model_version"],
    })
    gi = img.group_by("campaign_id", use_threads=False).aggregate([
        ("one", "sum"), ("ok", "sum"), ("with_faces", "sum"), ("posted_at", "min"), ("posted_at", "max"),
        ("model_version", "max")])
    gi = gi.rename_columns({"one_sum": "n_images", "ok_sum": "n_images_ok", "with_faces_sum": "n_images_with_faces",
                            "posted_at_min": "first_posted_at", "posted_at_max": "last_posted_at",
                            "model_version_max": "model_version"})
    good = (_flag(pc.equal(faces["quality"], "good")) if "quality" in faces.column_names
            else _flag(pa.nulls(faces.num_rows, pa.bool_())))
    fc = pa.table({
        "campaign_id": faces["campaign_id"].cast(images.schema.field("campaign_id").type),
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
    gf = fc.group_by("campaign_id", use_threads=False).aggregate(
        [(c, "sum") for c in counted] + [("valence", "mean")] + [(c, "mean") for c in PROB_COLUMNS])
    gf = gf.rename_columns({"one_sum": "n_faces", "good_sum": "n_faces_good", "valence_mean": "mean_valence",
                            **{f"{c}_mean": f"mean_{c}" for c in PROB_COLUMNS}})
    table = gi.join(gf, "campaign_id", join_type="left outer")
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
    return table.select(list(KPI_COLUMNS)).sort_by("campaign_id").cast(kpi_schema())


def kpi_schema():
    """The pyarrow schema of campaign_kpis' result (KPI_COLUMNS)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    types = {"campaign_id": pa.string(), "model_version": pa.string(), "first_posted_at": ts, "last_posted_at": ts}
    return pa.schema([pa.field(c, types.get(c, pa.int64() if c.startswith("n_") else pa.float64()))
                      for c in KPI_COLUMNS])
