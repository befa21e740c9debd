"""Video posts through the one scoring path: the pipeline's video results, their table rows, the
per-track campaign shares, and the real Spark job on dumps mixing photos and MP4/WebM posts (Parquet
bytes, URIs, image folders), including a lake written before the video columns existed.

The clips are real H.264/VP9 files (tests/_videos.py) of scikit-image's astronaut moving across the
frame, large enough for the fast config's Haar detector to find her in every sampled frame.
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _images import astronaut, encode  # noqa: E402
from _videos import audio_only_mp4, encode_clip, sliding_face  # noqa: E402

from fer_core import tables  # noqa: E402
from fer_core.kpis import campaign_kpis, counted_faces  # noqa: E402
from fer_core.labels import EMOTIONS  # noqa: E402
from fer_core.types import Face, FaceResult, ImageResult  # noqa: E402
from tests._spark import spark  # noqa: E402,F401  (the shared local[2] session fixture)

SECONDS = 3  # each clip: 30 frames at 10 fps -> frames sampled at 0, 1000, 2000 ms (video.sample_fps 1)
UTC = dt.timezone.utc


def moving_astronaut(kind: str) -> bytes:
    """About half a face width per second (Haar's box is ~95 px): a person moving in the frame, which the
    tracker links across 1 fps samples (a jump of more than a face size in one sample would be a new track)."""
    face = astronaut()[0:256, 80:400]
    frame_at, _ = sliding_face(face, canvas_hw=(336, 640), n_frames=10 * SECONDS, x0=0, x1=160, y=40)
    return encode_clip(frame_at, 10 * SECONDS, kind=kind, fps=10)


@pytest.fixture(scope="module")
def posts() -> dict[str, tuple[str, bytes]]:
    """post id -> (file suffix, bytes): two photos, an MP4 and a WebM post, a truncated and an audio-only MP4."""
    mp4 = moving_astronaut("h264")
    return {
        "photo-face": (".jpg", encode(astronaut(), "JPEG")),
        "photo-blank": (".png", encode(np.full((240, 320, 3), 200, np.uint8), "PNG")),
        "video-mp4": (".mp4", mp4),
        "video-webm": (".webm", moving_astronaut("vp9")),
        "video-truncated": (".mp4", mp4[: len(mp4) // 3]),
        "video-audio-only": (".MP4", audio_only_mp4()),
    }


# ---------------------------------------------------------------- rows and KPIs (no Spark)


def _face_result(x: float, size: float, probs: list[float], ms: int | None, track: int | None) -> FaceResult:
    p = np.asarray(probs, np.float32)
    return FaceResult(Face((x, 10.0, size, size), 0.99), p, EMOTIONS[int(np.argmax(p))], "positive", 0.5,
                      frame_ms=ms, track_id=track)


def test_a_videos_image_row_aggregates_its_tracks_by_area_times_frames_seen():
    happy, sad = [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]
    # track 0: a small face (10x10) seen in 3 frames; track 1: a big face (20x20) seen once
    faces = [_face_result(0, 10, happy, ms, 0) for ms in (0, 1000, 2000)] + [_face_result(50, 20, sad, 1000, 1)]
    result = ImageResult("ok", width=640, height=336, faces=faces, media_type="video", duration_s=3.0, n_frames=3)
    image, rows = tables.image_rows(result, {"image_id": "v", "campaign_id": "c"}, model_version="m",
                                    detector_version="d", run_id="r", scored_at=None)
    assert image["n_faces"] == 2  # tracks, not face rows
    assert (image["media_type"], image["duration_s"], image["n_frames"]) == ("video", 3.0, 3)
    # weights: 3 x 100 for happy, 1 x 400 for sad
    assert image["p_happy"] == pytest.approx(300 / 700) and image["p_sad"] == pytest.approx(400 / 700)
    assert image["dominant_emotion"] == "sad"
    assert [(r["frame_ms"], r["track_id"]) for r in rows] == [(0, 0), (1000, 0), (2000, 0), (1000, 1)]
    pa.Table.from_pylist([image], schema=tables.images_schema())  # the types fit the contract
    pa.Table.from_pylist(rows, schema=tables.faces_schema())

    photo = ImageResult("ok", width=10, height=10, faces=[_face_result(0, 5, happy, None, None)], n_frames=1)
    image, rows = tables.image_rows(photo, {"image_id": "p"}, model_version="m", detector_version="d",
                                    run_id="r", scored_at=None)
    assert (image["media_type"], image["n_frames"], image["n_faces"]) == ("image", 1, 1)
    assert rows[0]["frame_ms"] is None and rows[0]["track_id"] is None


def test_campaign_shares_count_a_video_track_once():
    """Per track: a 3-frame happy track (its frames voting positive twice) weighs what one sad photo face does."""
    p_happy = [0.1, 0, 0, 0.6, 0.1, 0.1, 0.1]
    p_sad = [0, 0, 0, 0.1, 0.8, 0, 0.1]
    faces = pa.table({
        "campaign_id": ["c"] * 4, "image_id": ["v", "v", "v", "p"], "track_id": pa.array([0, 0, 0, None], pa.int32()),
        "emotion": ["happy", "happy", "neutral", "sad"], "sentiment": ["positive", "neutral", "positive", "negative"],
        "valence": [0.6, 0.3, 0.3, -0.7], "model_version": ["m"] * 4,
        **{f"p_{e}": [p_happy[i]] * 3 + [p_sad[i]] for i, e in enumerate(EMOTIONS)},
    })
    units = counted_faces(faces)
    assert units.num_rows == 2
    images = pa.table({"campaign_id": ["c", "c"], "status": ["ok", "ok"], "n_faces": pa.array([1, 1], pa.int32()),
                       "posted_at": pa.array([None, None], pa.timestamp("us", tz="UTC")),
                       "model_version": ["m", "m"], "scored_at": pa.array([None, None], pa.timestamp("us", tz="UTC"))})
    (k,) = campaign_kpis(images, faces).to_pylist()
    assert k["n_faces"] == 2 and k["share_happy"] == 0.5 and k["share_sad"] == 0.5
    assert k["share_positive"] == 0.5 and k["share_negative"] == 0.5 and k["net_sentiment"] == 0.0
    assert k["mean_valence"] == pytest.approx(((0.6 + 0.3 + 0.3) / 3 - 0.7) / 2)
    # a faces table without track_id (an older lake, a reader that does not ask for it): every row counts
    (old,) = campaign_kpis(images, faces.drop_columns(["track_id", "image_id"])).to_pylist()
    assert old["n_faces"] == 4


# ---------------------------------------------------------------- the Spark job

def _meta(post_id: str, k: int) -> dict:
    return {"image_id": post_id, "campaign_id": "launch", "platform": "tiktok", "caption": f"post {post_id}",
            "posted_at": dt.datetime(2026, 5, 1, 12, k, tzinfo=UTC)}


def _write_dump(folder: Path, posts: dict, payload: str) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for k, (post_id, (suffix, data)) in enumerate(posts.items()):
        row = _meta(post_id, k)
        if payload == "image":
            row["image"] = data
        else:
            (folder / "media").mkdir(exist_ok=True)
            (folder / "media" / f"{post_id}{suffix}").write_bytes(data)
            row["uri"] = f"media/{post_id}{suffix}"
        rows.append(row)
    schema = pa.schema([pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()),
                        pa.field("platform", pa.string()), pa.field("caption", pa.string()),
                        pa.field("posted_at", pa.timestamp("us", tz="UTC")),
                        pa.field(payload, pa.binary() if payload == "image" else pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "dump.parquet")
    return folder


def _old_schema(schema: pa.Schema, new: tuple[str, ...]) -> pa.Schema:
    return pa.schema([f for f in schema if f.name not in new])


def _write_lake_before_video(lake: Path) -> None:
    """images/faces tables as the job wrote them before the video columns: one old photo with a face."""
    from deltalake import write_deltalake

    images_old = _old_schema(tables.images_schema(), ("media_type", "duration_s", "n_frames"))
    faces_old = _old_schema(tables.faces_schema(), ("frame_ms", "track_id"))
    ts = dt.datetime(2026, 4, 1, tzinfo=UTC)
    image = {c: None for c in images_old.names}
    image.update(image_id="old-photo", campaign_id="old", posted_at=ts, status="ok", width=100, height=100,
                 n_faces=1, dominant_emotion="happy", model_version="old@1", run_id="old-run", scored_at=ts,
                 **{f"p_{e}": float(e == "happy") for e in EMOTIONS})
    face = {c: None for c in faces_old.names}
    face.update(image_id="old-photo", campaign_id="old", face_index=0, x=1.0, y=1.0, w=50.0, h=50.0,
                det_score=0.99, emotion="happy", sentiment="positive", valence=1.0, model_version="old@1",
                run_id="old-run", **{f"p_{e}": float(e == "happy") for e in EMOTIONS})
    write_deltalake(str(lake / "images"), pa.Table.from_pylist([image], schema=images_old), partition_by=["campaign_id"])
    write_deltalake(str(lake / "faces"), pa.Table.from_pylist([face], schema=faces_old), partition_by=["campaign_id"])


def _check_lake(lake: Path, posts: dict) -> None:
    from tests._spark import read_table

    images = read_table(f"{lake}/images").set_index("image_id")
    faces = read_table(f"{lake}/faces")
    assert set(posts) <= set(images.index)  # nothing lost: one images row per post
    for post_id in ("video-mp4", "video-webm"):
        r = images.loc[post_id]
        assert (r.status, r.media_type, r.width, r.height) == ("ok", "video", 640, 336), (post_id, r.error)
        assert r.n_frames == SECONDS and r.duration_s == pytest.approx(SECONDS, abs=0.15)
        assert r.n_faces == 1  # one moving face = one track
        mine = faces[faces.image_id == post_id].sort_values("frame_ms")
        assert mine.frame_ms.tolist() == [0, 1000, 2000] and mine.track_id.tolist() == [0, 0, 0]
        assert mine.x.is_monotonic_increasing and mine.x.iloc[-1] - mine.x.iloc[0] > 80
        assert abs(sum(r[f"p_{e}"] for e in EMOTIONS) - 1) < 1e-4
    photo = images.loc["photo-face"]
    assert (photo.status, photo.media_type, photo.n_frames, photo.n_faces) == ("ok", "image", 1, 1)
    assert np.isnan(photo.duration_s)
    pf = faces[faces.image_id == "photo-face"]
    assert pf.frame_ms.isna().all() and pf.track_id.isna().all()
    assert images.loc["photo-blank"].status == "no_face"
    bad = images.loc["video-truncated"]
    assert bad.status == "decode_error" and "corrupt or truncated" in bad.error and bad.media_type == "video"
    audio = images.loc["video-audio-only"]
    assert audio.status == "decode_error" and "no video stream" in audio.error
    campaigns = read_table(f"{lake}/campaigns").set_index("campaign_id")
    # per track: the photo's face and one track per video post
    assert campaigns.loc["launch"].n_faces == 3 and campaigns.loc["launch"].n_images == len(posts)


def _config(input_path: Path, lake: Path, **input_over) -> dict:
    from tests._spark import fast_config

    return fast_config(input_path, lake, input={"path": str(input_path), "extra_columns": [], **input_over})


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1200)
def test_job_scores_video_posts_in_parquet_bytes(spark, posts, tmp_path):  # noqa: F811
    from tests._spark import run_job_in_process

    dump = _write_dump(tmp_path / "dump", posts, "image")
    row = run_job_in_process(spark, _config(dump, tmp_path / "lake"), run_id="bytes")
    assert row["n_scored"] == len(posts) and row["n_decode_error"] == 2
    _check_lake(tmp_path / "lake", posts)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1200)
def test_job_scores_video_uris_into_a_lake_written_before_video_columns(spark, posts, tmp_path):  # noqa: F811
    """The lake's images/faces tables lack the video columns: the run adds them, the older rows read null."""
    from deltalake import DeltaTable

    from tests._spark import read_table, run_job_in_process

    lake = tmp_path / "lake"
    _write_lake_before_video(lake)
    assert "media_type" not in DeltaTable(str(lake / "images")).schema().to_arrow().names
    dump = _write_dump(tmp_path / "dump", posts, "uri")
    run_job_in_process(spark, _config(dump, lake, payload="uri"), run_id="uris")
    _check_lake(lake, posts)
    for name in ("images", "faces"):
        have = pa.schema(DeltaTable(str(lake / name)).schema().to_arrow())
        assert set(tables.schema_of(name).names) <= set(have.names), name
    images = read_table(f"{lake}/images").set_index("image_id")
    old = images.loc["old-photo"]
    assert old.media_type is None and np.isnan(old.duration_s) and old.status == "ok"
    faces = read_table(f"{lake}/faces")
    assert faces[faces.image_id == "old-photo"].track_id.isna().all()


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1200)
def test_job_scores_video_files_in_image_folders(spark, posts, tmp_path):  # noqa: F811
    """Folders: .mp4/.webm (and .MP4) files are picked up next to photos, in any case."""
    from tests._spark import run_job_in_process

    root = tmp_path / "folders"
    folder = root / "campaign_id=launch"
    folder.mkdir(parents=True)
    for post_id, (suffix, data) in posts.items():
        (folder / f"{post_id}{suffix}").write_bytes(data)
    row = run_job_in_process(spark, _config(root, tmp_path / "lake", format="folders"), run_id="folders")
    assert row["n_scored"] == len(posts)
    from tests._spark import read_table

    images = read_table(f"{tmp_path}/lake/images")
    # folder rows are keyed by file, not by post id: map them back by the file name in source
    by_name = {Path(s).stem: r for s, r in zip(images.source, images.itertuples())}
    assert set(by_name) == set(posts)
    assert by_name["video-mp4"].media_type == "video" and by_name["video-mp4"].n_frames == SECONDS
    assert by_name["video-webm"].n_faces == 1 and by_name["video-audio-only"].status == "decode_error"
    assert by_name["photo-face"].media_type == "image"
