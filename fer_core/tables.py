"""The table contract: the columns of every table the job writes, the statuses, and how one
``ImageResult`` becomes rows.

This is the one home of that contract. The job writes Parquet with these schemas
(jobs/campaign/lake_files.py), the dashboards read with :func:`read_types` (the same schemas,
widened on purpose, see :func:`read_widening`), and the tests build their lakes from them. It lives in
``fer_core`` because it is where a scored image turns into data, and because both rooms above it
(dashboards, jobs) may import it; it needs pyarrow only for the schemas, not for :func:`image_rows`.
Nothing here knows Spark or Delta.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from fer_core.errors import IMAGE_STATUSES, SCORED_STATUSES
from fer_core.labels import EMOTIONS
from fer_core.sentiment import SENTIMENTS
from fer_core.types import ImageResult

__all__ = ["EMOTIONS", "SENTIMENTS", "STATUSES", "SCORED_STATUSES", "PROB_COLUMNS", "ADJUSTED_COLUMNS",
           "TABLE_NAMES", "images_schema", "faces_schema", "campaigns_schema", "runs_schema", "erasures_schema",
           "health_schema", "tracks_schema", "inputs_schema", "INPUTS_STATS_COLUMNS", "schema_of", "read_types", "read_widening", "image_rows", "track_rows",
           "face_landmarks"]

STATUSES: tuple[str, ...] = IMAGE_STATUSES
"""Every value of ``images.status`` (derived from fer_core.errors' typed errors)."""
PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{e}" for e in EMOTIONS)
"""images and faces: one probability column per emotion, in EMOTIONS order."""
ADJUSTED_COLUMNS: tuple[str, ...] = tuple(f"adjusted_share_{e}" for e in EMOTIONS)
"""campaigns: the mix corrected for the model's confusions (fer_core.quantify); absent in older lakes."""
TABLE_NAMES: tuple[str, ...] = ("images", "faces", "tracks", "campaigns", "runs")
"""The tables of every lake the job writes (``erasures`` and ``health`` exist once something wrote them;
``tracks`` is created by the first run of a job version that has it, empty until a video is scored)."""


def _pa():
    import pyarrow as pa

    return pa


def _ts():
    return _pa().timestamp("us", tz="UTC")


def _probs(prefix: str = "p_") -> list:
    pa = _pa()
    return [pa.field(f"{prefix}{e}", pa.float64()) for e in EMOTIONS]


def images_schema(extras: Iterable[Any] = ()):
    """images: one row per (image, scoring identity); the contract columns, then the configured extra columns.

    Columns added after the first lakes were written come last among the contract columns (media_type,
    duration_s, n_frames: video posts; scoring_id: fer_core.identity; input_file: the dump file or image
    file the row was read from, so a rescore can tell an image whose dump is gone); the job adds them to
    an older lake's table on its next commit and the older rows read null."""
    pa = _pa()
    return pa.schema([
        pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()), pa.field("posted_at", _ts()),
        pa.field("platform", pa.string()), pa.field("caption", pa.string()), pa.field("source", pa.string()),
        pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("width", pa.int32()),
        pa.field("height", pa.int32()), pa.field("n_faces", pa.int32()), pa.field("dominant_emotion", pa.string()),
        *_probs(), pa.field("sentiment", pa.string()), pa.field("valence", pa.float64()),
        pa.field("model_version", pa.string()), pa.field("detector_version", pa.string()),
        pa.field("run_id", pa.string()), pa.field("scored_at", _ts()),
        pa.field("media_type", pa.string()), pa.field("duration_s", pa.float64()), pa.field("n_frames", pa.int32()),
        pa.field("scoring_id", pa.string()), pa.field("input_file", pa.string()),
        *extras,
    ])


def faces_schema():
    """faces: one row per detected face (of a video: per face per sampled frame, with frame_ms and
    track_id, which are null for photos and come last, as columns added to older lakes do)."""
    pa = _pa()
    return pa.schema([
        pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()), pa.field("face_index", pa.int32()),
        pa.field("x", pa.float64()), pa.field("y", pa.float64()), pa.field("w", pa.float64()),
        pa.field("h", pa.float64()), pa.field("det_score", pa.float64()),
        pa.field("landmarks", pa.list_(pa.float64())), pa.field("emotion", pa.string()), *_probs(),
        pa.field("sentiment", pa.string()), pa.field("valence", pa.float64()),
        pa.field("model_version", pa.string()), pa.field("run_id", pa.string()),
        pa.field("frame_ms", pa.int64()), pa.field("track_id", pa.int32()),
        *quality_fields(), pa.field("scoring_id", pa.string()),
    ])


def tracks_schema():
    """tracks: one row per (video post, track, scoring identity): a person across the sampled frames of one
    video, as the campaign KPIs count it (fer_core.kpis.video_tracks, the one per-track rule): the frames it
    was seen in (n_frames, first_ms .. last_ms), its frames' mean probabilities, valence and face_px, the
    argmax emotion, and the sentiment and quality flag most of its frames have. Derived from the faces rows
    of the same run (fer_core.tables.track_rows), so the two always agree; photos have none."""
    pa = _pa()
    return pa.schema([
        pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()), pa.field("track_id", pa.int32()),
        pa.field("first_ms", pa.int64()), pa.field("last_ms", pa.int64()), pa.field("n_frames", pa.int32()),
        *_probs(), pa.field("emotion", pa.string()), pa.field("sentiment", pa.string()),
        pa.field("valence", pa.float64()), pa.field("face_px", pa.float64()), pa.field("quality", pa.string()),
        pa.field("model_version", pa.string()), pa.field("scoring_id", pa.string()), pa.field("run_id", pa.string()),
    ])


def quality_fields() -> list:
    """faces: how readable the face is (fer_core.quality); null in rows written before the flags."""
    pa = _pa()
    return [pa.field("face_px", pa.float64()), pa.field("sharpness", pa.float64()),
            pa.field("brightness", pa.float64()), pa.field("yaw", pa.float64()), pa.field("pitch", pa.float64()),
            pa.field("quality", pa.string())]


def campaigns_schema():
    """campaigns: one row per (campaign, scoring identity): the KPIs of fer_core.kpis over the images that
    identity scored, with its coverage of the campaign (n_images of n_images_all; n_images_gone: images it
    has not scored whose input file is gone, so it never will), recomputed by every run that touches the
    campaign. Lakes written before identities had one row per campaign (scoring_id null). Between upgrades a
    run adds its own images to the stored rows (fer_core.kpis.add_kpis) instead of reading the campaign's."""
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
        *[pa.field(c, pa.float64()) for c in ADJUSTED_COLUMNS],
        pa.field("adjusted_share_positive", pa.float64()), pa.field("adjusted_share_negative", pa.float64()),
        pa.field("adjusted_share_neutral_sentiment", pa.float64()), pa.field("adjusted_net_sentiment", pa.float64()),
        # the same shares over the faces whose quality flag is good (fer_core.kpis)
        pa.field("n_faces_good", pa.int64()), *[pa.field(f"good_share_{e}", pa.float64()) for e in EMOTIONS],
        pa.field("good_share_positive", pa.float64()), pa.field("good_share_negative", pa.float64()),
        pa.field("good_share_neutral_sentiment", pa.float64()), pa.field("good_net_sentiment", pa.float64()),
        *coverage_fields(),
        # the mean face probabilities (the adjusted mix's input), which let a run add its images to the row
        *[pa.field(f"mean_{c}", pa.float64()) for c in PROB_COLUMNS],
    ])


def coverage_fields() -> list:
    """campaigns: the row's scoring identity and how much of the campaign it covers (fer_core.kpis)."""
    pa = _pa()
    return [pa.field("scoring_id", pa.string()), pa.field("n_images_all", pa.int64()),
            pa.field("n_images_gone", pa.int64()), pa.field("coverage", pa.float64())]


def runs_schema():
    """runs: one row per job run (also the runs that gave up waiting for the lake)."""
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
        # the run's scoring identity (fer_core.identity) and the upgrade backlog: images of the input new
        # to the lake, images rescored from an older identity, and those of the input still waiting for it
        pa.field("scoring_id", pa.string()), pa.field("n_new", pa.int64()), pa.field("n_backfilled", pa.int64()),
        pa.field("n_backlog_left", pa.int64()),
        # the record of consumed input files (inputs table): files listed that were skipped unopened, and read
        pa.field("n_files_skipped", pa.int64()), pa.field("n_files_read", pa.int64()),
    ])


def erasures_schema():
    """erasures: one row per erased campaign or image (a tombstone the scoring job honours)."""
    pa = _pa()
    return pa.schema([
        pa.field("erasure_id", pa.string()), pa.field("kind", pa.string()), pa.field("id", pa.string()),
        pa.field("campaign_id", pa.string()), pa.field("reason", pa.string()), pa.field("erased_at", _ts()),
    ])


def health_schema():
    """health: one row per committed run, its metrics and drift verdict (jobs/campaign/health.py)."""
    pa = _pa()
    return pa.schema([
        pa.field("run_id", pa.string()), pa.field("finished_at", _ts()), pa.field("n_scored", pa.int64()),
        *[pa.field(f"n_{s}", pa.int64()) for s in STATUSES], pa.field("n_faces", pa.int64()),
        pa.field("images_per_s", pa.float64()), pa.field("error_share", pa.float64()),
        pa.field("faces_per_image", pa.float64()), pa.field("mean_det_score", pa.float64()),
        *[pa.field(f"share_{e}", pa.float64()) for e in EMOTIONS],
        pa.field("newest_posted_at", _ts()), pa.field("lag_s", pa.float64()),
        pa.field("drift_checked", pa.bool_()), pa.field("drift", pa.bool_()), pa.field("drift_reasons", pa.string()),
        pa.field("n_trailing", pa.int64()),
    ])


def inputs_schema():
    """inputs: the record of consumed input files, one row per (file version, scoring identity, reader): a dump
    file or image file whose every image this identity has scored (or that were erased or duplicates), as the
    run that read it committed them. A later run skips a listed file whose (path, size, mtime_s, etag) has a
    row for its scoring identity and reader without opening it (Spark's file-source checkpoint, in the lake).

    path: the file as listed (a local absolute path, or ``s3://bucket/key``); size in bytes; mtime_s: its
    modification time (epoch seconds; S3's LastModified); etag: S3's ETag (null for local files); format:
    parquet | folders; reader: a hash of the input settings that decide which rows a file yields
    (jobs/campaign/inputs.reader_key: columns, payload, extra columns, retry of fetch errors ...), so a
    changed mapping re-reads every file; uri_policy: the fingerprint of the URI policy that refused a fetch of
    one of its images (fer_core.fetch), null when none was refused: the record holds under that policy only,
    since another would fetch those URIs; run_id: the run that committed it; committed_at: when."""
    pa = _pa()
    return pa.schema([
        pa.field("path", pa.string()), pa.field("size", pa.int64()), pa.field("mtime_s", pa.float64()),
        pa.field("etag", pa.string()), pa.field("format", pa.string()), pa.field("scoring_id", pa.string()),
        pa.field("reader", pa.string()), pa.field("uri_policy", pa.string()), pa.field("run_id", pa.string()),
        pa.field("committed_at", _ts()),
    ])


INPUTS_STATS_COLUMNS: tuple[str, ...] = ("scoring_id", "reader", "run_id", "committed_at")
"""The inputs table's columns with statistics in the Delta log (a reader prunes by identity); never path: an
erased image file's name would stay in the log's history."""


SCHEMAS: dict[str, Callable[[], Any]] = {
    "images": images_schema, "faces": faces_schema, "tracks": tracks_schema, "campaigns": campaigns_schema,
    "runs": runs_schema, "erasures": erasures_schema, "health": health_schema, "inputs": inputs_schema,
}


def schema_of(name: str):
    """The pyarrow schema of table ``name`` (images without extra columns)."""
    if name not in SCHEMAS:
        raise KeyError(f"unknown table {name!r}; the tables are {sorted(SCHEMAS)}")
    return SCHEMAS[name]()


def read_widening() -> dict[Any, Any]:
    """The one widening readers apply: narrower integers and floats are read as int64 / float64, so
    sums and means never overflow or lose precision, whatever a producer wrote (a Spark job writes
    int32 counts, another tool float32 probabilities)."""
    pa = _pa()
    return {pa.int8(): pa.int64(), pa.int16(): pa.int64(), pa.int32(): pa.int64(),
            pa.float16(): pa.float64(), pa.float32(): pa.float64()}


def read_types(name: str) -> dict[str, Any]:
    """Column -> the type a reader (the dashboards) brings it to: the written type, widened."""
    pa = _pa()
    widen = read_widening()
    out: dict[str, Any] = {}
    for f in schema_of(name):
        t = f.type
        if pa.types.is_list(t) and t.value_type in widen:
            t = pa.list_(widen[t.value_type])
        out[f.name] = widen.get(t, t)
    return out


# ---------------------------------------------------------------- ImageResult -> rows


def face_landmarks(landmarks: Any) -> list[float] | None:
    """The 5 (x, y) landmarks as the faces table's flat list of 10, or None when unknown (NaN)."""
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, np.float64).reshape(-1)
    return lm.tolist() if lm.size and np.isfinite(lm).all() else None


def _quality_columns(q: Any) -> dict[str, Any]:
    if q is None:
        return {"face_px": None, "sharpness": None, "brightness": None, "yaw": None, "pitch": None, "quality": None}
    return {"face_px": q.face_px, "sharpness": q.sharpness, "brightness": q.brightness, "yaw": q.yaw,
            "pitch": q.pitch, "quality": q.quality}


def image_rows(result: ImageResult, meta: Mapping[str, Any], *, model_version: str, detector_version: str,
               run_id: str, scored_at: Any, sentiment: Any = None, scoring_id: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One scored image -> (its images row, its faces rows).

    meta: the input row's columns that the images table keeps as they came (image_id, campaign_id,
    posted_at, platform, caption, source, input_file and any configured extra column). sentiment: the
    SentimentConfig that rates the image-level probabilities (fer_core.pipeline.image_summary).
    scoring_id: the pipeline's scoring identity (fer_core.identity), on both kinds of row.
    """
    from fer_core.pipeline import image_summary

    image_id, campaign_id = meta.get("image_id"), meta.get("campaign_id")
    faces = []
    for k, fr in enumerate(result.faces):
        x, y, w, h = (float(v) for v in fr.face.box)
        faces.append({
            "image_id": image_id, "campaign_id": campaign_id, "face_index": k, "x": x, "y": y, "w": w, "h": h,
            "det_score": float(fr.face.score), "landmarks": face_landmarks(fr.face.landmarks),
            "emotion": fr.emotion, **{c: float(p) for c, p in zip(PROB_COLUMNS, fr.probabilities)},
            "sentiment": fr.sentiment, "valence": float(fr.valence), "model_version": model_version,
            "run_id": run_id, "frame_ms": fr.frame_ms, "track_id": fr.track_id, **_quality_columns(fr.quality),
            "scoring_id": scoring_id,
        })
    kept = {k: v for k, v in meta.items() if k != "input_file"}  # a contract column of its own, placed below
    image = {**kept, "status": result.status, "error": result.error, "width": result.width,
             "height": result.height, **image_summary(result, sentiment), "model_version": model_version,
             "detector_version": detector_version, "run_id": run_id, "scored_at": scored_at,
             "media_type": result.media_type, "duration_s": result.duration_s, "n_frames": result.n_frames,
             "scoring_id": scoring_id, "input_file": meta.get("input_file")}
    return image, faces


def track_rows(faces: list[dict[str, Any]], *, run_id: str | None = None) -> list[dict[str, Any]]:
    """The tracks rows of one scored image: its faces rows (``image_rows``' second result) grouped per video
    track by fer_core.kpis.video_tracks, the rule the campaign KPIs count a track by, so the table and the
    KPIs cannot disagree. A photo's faces (track_id None) give none. run_id: the run's (default: the faces')."""
    if not any(f.get("track_id") is not None for f in faces):
        return []
    from fer_core.kpis import TRACK_COLUMNS, video_tracks

    pa = _pa()
    schema = faces_schema()
    table = pa.Table.from_pylist([{n: f.get(n) for n in schema.names} for f in faces], schema=schema)
    runs = {f.get("run_id") for f in faces}
    run = run_id if run_id is not None else (runs.pop() if len(runs) == 1 else None)
    scoring_id = faces[0].get("scoring_id")  # as its faces rows carry it (video_tracks reads None as legacy)
    return [{**row, "scoring_id": scoring_id, "run_id": run}
            for row in video_tracks(table).select(list(TRACK_COLUMNS)).to_pylist()]
