"""Video posts through the one scoring path: the pipeline's video results, their table rows, the
per-track campaign shares, and the real Spark job on dumps mixing photos and MP4/WebM posts (Parquet
bytes, URIs, image folders), including a lake written before the video columns and the tracks table
existed, a run that dies between its tracks and images commits, and the dashboards of such a lake
opened in Chromium.

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
from fer_core.quality import QUALITY_LABELS  # noqa: E402
from fer_core.sentiment import SENTIMENTS  # noqa: E402
from fer_core.types import Face, FaceResult, ImageResult  # noqa: E402
from tests._spark import spark  # noqa: E402,F401  (the shared local[2] session fixture)
from tests.test_job_s3 import s3_endpoint  # noqa: E402,F401  (moto S3 in its own process)

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


def test_track_rows_are_the_tracks_the_kpis_count():
    """tables.track_rows: one row per track, from the faces rows image_rows made, by the rule counted_faces
    counts a track by (so the tracks table and the campaign shares cannot disagree); photos give none."""
    p_happy = [0.1, 0, 0, 0.6, 0.1, 0.1, 0.1]
    p_sad = [0, 0, 0, 0.1, 0.8, 0, 0.1]
    faces = [_face_result(10 * k, 40, p_happy, ms, 0) for k, ms in enumerate((0, 1000, 2000))]
    faces[1].sentiment, faces[2].sentiment = "neutral", "neutral"  # most of track 0's frames: neutral
    faces += [_face_result(300, 20, p_sad, ms, 1) for ms in (1000, 2000)]
    for f in faces[3:]:
        f.sentiment, f.valence = "negative", -0.6
    result = ImageResult("ok", width=640, height=336, faces=faces, media_type="video", duration_s=3.0, n_frames=3)
    image, rows = tables.image_rows(result, {"image_id": "v", "campaign_id": "c"}, model_version="m",
                                    detector_version="d", run_id="r", scored_at=None, scoring_id="m/s")
    tracks = tables.track_rows(rows)
    pa.Table.from_pylist(tracks, schema=tables.tracks_schema())  # the types fit the contract
    assert [(t["track_id"], t["first_ms"], t["last_ms"], t["n_frames"]) for t in tracks] == [(0, 0, 2000, 3),
                                                                                          (1, 1000, 2000, 2)]
    assert [(t["emotion"], t["sentiment"]) for t in tracks] == [("happy", "neutral"), ("sad", "negative")]
    assert tracks[0]["p_happy"] == pytest.approx(0.6) and tracks[0]["valence"] == pytest.approx(0.5)
    assert {(t["image_id"], t["campaign_id"], t["model_version"], t["scoring_id"], t["run_id"]) for t in tracks} == {
        ("v", "c", "m", "m/s", "r")}
    assert image["n_faces"] == len(tracks)
    counted = counted_faces(pa.Table.from_pylist(rows, schema=tables.faces_schema())).to_pylist()
    keys = ("emotion", "sentiment", "valence", *tables.PROB_COLUMNS)
    assert [{k: c[k] for k in keys} for c in counted] == [{k: t[k] for k in keys} for t in tracks]
    _, photo_rows = tables.image_rows(ImageResult("ok", faces=[_face_result(0, 5, p_sad, None, None)]),
                                      {"image_id": "p"}, model_version="m", detector_version="d", run_id="r",
                                      scored_at=None)
    assert tables.track_rows(photo_rows) == [] and tables.track_rows([]) == []


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
    pq.write_table(_dump_table(rows, payload), folder / "dump.parquet")
    return folder


def _dump_table(rows: list[dict], payload: str) -> pa.Table:
    schema = pa.schema([pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()),
                        pa.field("platform", pa.string()), pa.field("caption", pa.string()),
                        pa.field("posted_at", pa.timestamp("us", tz="UTC")),
                        pa.field(payload, pa.binary() if payload == "image" else pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


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


def _majority(values, labels: tuple[str, ...]):
    """The label most of ``values`` are (ties: the earlier of ``labels``), None without any."""
    counts = {v: list(values).count(v) for v in labels}
    return max(labels, key=lambda v: (counts[v], -labels.index(v))) if any(counts.values()) else None


def _check_tracks(tracks, faces, images, post_id: str) -> None:
    """A video's tracks rows agree with its faces rows (computed here with pandas, not fer_core.kpis)."""
    mine, seen = tracks[tracks.image_id == post_id], faces[faces.image_id == post_id]
    assert sorted(mine.track_id) == sorted(seen.track_id.unique())
    for t in mine.itertuples():
        frames = seen[seen.track_id == t.track_id]
        assert (t.first_ms, t.last_ms, t.n_frames) == (frames.frame_ms.min(), frames.frame_ms.max(), len(frames))
        means = [frames[f"p_{e}"].mean() for e in EMOTIONS]
        assert [getattr(t, f"p_{e}") for e in EMOTIONS] == pytest.approx(means)
        assert t.emotion == EMOTIONS[int(np.argmax(means))]
        assert t.sentiment == _majority(frames.sentiment, SENTIMENTS)
        assert t.quality == _majority(frames.quality, QUALITY_LABELS)
        assert t.valence == pytest.approx(frames.valence.mean()) and t.face_px == pytest.approx(frames.face_px.mean())
        assert (t.campaign_id, t.model_version, t.scoring_id, t.run_id) == (
            frames.campaign_id.iloc[0], frames.model_version.iloc[0], frames.scoring_id.iloc[0],
            images.loc[post_id].run_id)


def _check_lake(lake: Path | str, posts: dict, storage_options: dict | None = None) -> None:
    from functools import partial

    from tests._spark import read_table

    read_table = partial(read_table, storage_options=storage_options)
    images = read_table(f"{lake}/images").set_index("image_id")
    faces = read_table(f"{lake}/faces")
    tracks = read_table(f"{lake}/tracks")
    # one tracks row per moving face, none for photos; never two rows of one track (a replay adds none)
    assert sorted(tracks[tracks.image_id.isin(posts)].image_id) == ["video-mp4", "video-webm"]
    assert not tracks.duplicated(["image_id", "track_id", "scoring_id"]).any()
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
        _check_tracks(tracks, faces, images, post_id)
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


@pytest.fixture(scope="module")
def bytes_lake(spark, posts, tmp_path_factory):  # noqa: F811
    """A Parquet-bytes dump of the posts scored by a run that dies after its tracks commit (before images),
    then completed by the next run's recovery: (dump, lake, the recovering run's row)."""
    from jobs.campaign import job
    from tests._spark import read_table, run_job_in_process

    class Crash(RuntimeError):
        pass

    def crash_at(name: str) -> None:
        if name == "after_tracks_commit":
            raise Crash(name)

    tmp = tmp_path_factory.mktemp("bytes")
    dump = _write_dump(tmp / "dump", posts, "image")
    lake = tmp / "lake"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job, "_fail_point", crash_at)
        with pytest.raises(Crash):
            run_job_in_process(spark, _config(dump, lake), run_id="bytes")
    assert (lake / "_job" / "pending" / "bytes.json").exists()
    assert len(read_table(f"{lake}/tracks")) == 2 and len(read_table(f"{lake}/images")) == 0
    row = run_job_in_process(spark, _config(dump, lake), run_id="recovers")
    return dump, lake, row


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1200)
def test_job_scores_video_posts_in_parquet_bytes(bytes_lake, posts):
    """...and the replayed manifest commits the images once and the tracks not again."""
    from tests._spark import read_table

    _, lake, row = bytes_lake
    assert "recovering run bytes" in row["_log"] and row["n_scored"] == 0
    runs = read_table(f"{lake}/runs").set_index("run_id")
    assert runs.loc["bytes"].status == "recovered"
    assert runs.loc["bytes"].n_scored == len(posts) and runs.loc["bytes"].n_decode_error == 2
    assert not (lake / "_job" / "pending" / "bytes.json").exists()
    _check_lake(lake, posts)


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
    assert not (lake / "tracks").exists()
    dump = _write_dump(tmp_path / "dump", posts, "uri")
    run_job_in_process(spark, _config(dump, lake, payload="uri"), run_id="uris")
    _check_lake(lake, posts)  # the tracks table, which this older lake lacked, was created
    for name in ("images", "faces", "tracks"):
        have = pa.schema(DeltaTable(str(lake / name)).schema().to_arrow())
        assert set(tables.schema_of(name).names) <= set(have.names), name
    images = read_table(f"{lake}/images").set_index("image_id")
    old = images.loc["old-photo"]
    assert old.media_type is None and np.isnan(old.duration_s) and old.status == "ok"
    faces = read_table(f"{lake}/faces")
    assert faces[faces.image_id == "old-photo"].track_id.isna().all()


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.s3
@pytest.mark.timeout(1200)
def test_job_scores_video_uris_on_s3(spark, posts, s3_endpoint):  # noqa: F811
    """The dump on (moto) S3, its URIs pointing at the photo and video files in its bucket, the lake on S3:
    the same rows as a local dump (PyAV decodes the bytes fetched from S3 in memory)."""
    from jobs.campaign.lake import delta_options
    from tests._spark import fast_config, run_job_in_process
    from tests.test_job_s3 import moto_buckets

    opts, fs = moto_buckets(s3_endpoint, "clips", "video-lake")
    rows = []
    for k, (post_id, (suffix, data)) in enumerate(posts.items()):
        fs.pipe(f"clips/media/{post_id}{suffix}", data)
        rows.append({**_meta(post_id, k), "uri": f"s3://clips/media/{post_id}{suffix}"})
    with fs.open("clips/dump/part-0.parquet", "wb") as f:
        pq.write_table(_dump_table(rows, "uri"), f)
    cfg = fast_config("s3://clips/dump/", "s3://video-lake/l",
                      input={"path": "s3://clips/dump/", "storage_options": opts, "extra_columns": []},
                      output={"path": "s3://video-lake/l", "storage_options": opts})
    row = run_job_in_process(spark, cfg, run_id="s3")
    assert row["n_scored"] == len(posts) and row["n_decode_error"] == 2
    _check_lake("s3://video-lake/l", posts, delta_options(opts))


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


VIDEO_CARDS = """Array.from(document.querySelectorAll('#gallery-video figure.video-post')).map(f => {
  const strip = f.querySelector('div.chart.strip'), thumb = f.querySelector('img.thumb');
  return {id: f.querySelector('.shot-meta code').textContent, drawn: !!(strip && strip.querySelector('svg.main-svg')),
          x: strip && strip.data ? strip.data.map(t => t.x) : null, y: strip && strip.data ? strip.data.map(t => t.y) : null,
          points: strip ? strip.querySelectorAll('.scatterlayer .point').length : 0,
          thumb: thumb ? thumb.naturalWidth : 0, people: f.querySelectorAll('ol.faces li').length,
          cams: Array.from(f.querySelectorAll('img.cam')).map(i => i.naturalWidth),
          head: f.querySelector('.video-head').textContent.replace(/\\s+/g, ' ').trim()};
})"""


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.browser
@pytest.mark.timeout(1200)
def test_dashboards_show_the_video_posts_in_chromium(bytes_lake, posts):
    """The job's own render of the lake (jobs.campaign.job.render: thumbnails read back from the inline-bytes
    dump, Grad-CAM with the job's model), opened in headless Chromium: the campaign page splits its posts into
    photos and videos, shows each video post with the frame it sampled, its person and its emotion-over-time
    strip (the faces rows' frame times and valences), and the index counts the videos; no console error,
    every chart drawn, every image loaded."""
    from _browser import CHARTS_DRAWN, PAGE_REPORT, Chromium, require_browser

    from dashboards.paths import campaign_page_name
    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import render
    from tests._spark import read_table

    require_browser()
    dump, lake, _ = bytes_lake
    cfg = _config(dump, lake)
    index = Path(render(job_config_from_dict({**cfg, "output": {**cfg["output"], "dashboards": True}})))
    faces = read_table(f"{lake}/faces")
    with Chromium() as chromium:
        browser = chromium.new_page()
        browser.goto((index.parent / campaign_page_name("launch")).as_uri())
        assert browser.wait_for(CHARTS_DRAWN, timeout=60)
        report = browser.evaluate(PAGE_REPORT)
        assert browser.console_errors() == [] and report["xss"] is None
        assert all(c["svg"] for c in report["charts"]) and all(i["ok"] for i in report["images"]), report
        assert browser.evaluate("document.querySelector('.media-split').textContent") == "6 posts: 2 photos · 4 videos"
        cards = {c["id"]: c for c in browser.evaluate(VIDEO_CARDS)}
        assert sorted(cards) == ["video-mp4", "video-webm"]  # the videos with faces; not the broken ones
        for post_id, card in cards.items():
            mine = faces[faces.image_id == post_id].sort_values("frame_ms")
            assert card["drawn"] and card["points"] == SECONDS and card["thumb"] > 0 and card["people"] == 1, card
            assert card["x"] == [(mine.frame_ms / 1000).tolist()]
            assert card["y"] == [pytest.approx(mine.valence.tolist())]
            assert card["cams"] and all(w > 0 for w in card["cams"]), card  # Grad-CAM on the sampled frame
            assert "3.0 s · 3 frame(s) scored · 1 person (tracks)" in card["head"], card["head"]
        assert "a person in a video (a track across its frames) counts once" in report["text"]
        browser.goto(index.as_uri())
        assert browser.wait_for(CHARTS_DRAWN, timeout=60) and browser.console_errors() == []
        assert "6 posts, 4 of them videos" in browser.evaluate(PAGE_REPORT)["text"]
        col = browser.evaluate("Array.from(document.querySelectorAll('#campaign-table th'))"
                               ".findIndex(th => th.textContent.trim() === 'Videos')")
        assert browser.evaluate(f"document.querySelector('#campaign-table tbody tr').cells[{col}].textContent") == "4"
        browser.close()
