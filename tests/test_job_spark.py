"""The job end to end on local Spark (local[2]) and real Delta tables (deltalake).

Fast config (Haar detector, 320x240 photos) except test_default_retinaface_path. Marked slow+spark.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests._spark import (campaigns_as_recomputed, campaigns_comparable, fast_config, make_dump,  # noqa: F401
                          read_table, run_job_in_process, spark, table_version)

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(1200)]

BAD = {"bad-truncated": "decode_error", "bad-zero-bytes": "empty", "bad-random-bytes": "decode_error",
       "bad-huge-dimensions": "too_large", "bad-null-cell": "empty"}


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    return make_dump(tmp_path_factory.mktemp("sample"), n_images=8, days=2)


@pytest.fixture(scope="module")
def one_shot(spark, dump, tmp_path_factory):  # noqa: F811
    lake = tmp_path_factory.mktemp("lake_one_shot")
    row = run_job_in_process(spark, fast_config(dump["dump"], lake), run_id="one-shot")
    return lake, row


def test_one_run_writes_every_row_once(one_shot, dump):
    lake, row = one_shot
    images = read_table(f"{lake}/images")
    faces = read_table(f"{lake}/faces")
    n_unique = dump["images"] + dump["bad"]
    assert len(images) == n_unique and images.image_id.is_unique  # the duplicate id is deduped
    assert row["n_input"] == n_unique + 1 and row["n_duplicates"] == 1 and row["n_scored"] == n_unique
    for image_id, status in BAD.items():
        r = images[images.image_id == image_id].iloc[0]
        assert r.status == status and r.error, (image_id, r.status, r.error)
        assert r.n_faces == 0 and r.p_happy != r.p_happy  # null probabilities without faces
    assert set(images.status) <= {"ok", "no_face", "decode_error", "fetch_error", "too_large", "empty"}
    assert (images.model_version == row["model_version"]).all() and (images.run_id == "one-shot").all()
    assert "likes" in images.columns and images.caption.notna().all()
    # faces agree with the image rows; image probabilities are a weighted mean (sum to 1)
    assert len(faces) == images.n_faces.sum() == row["n_faces"]
    assert not faces.duplicated(["image_id", "face_index"]).any()
    ok = images[images.status == "ok"]
    assert (ok.n_faces > 0).all() and len(ok) > 0
    probs = ok[[c for c in ok.columns if c.startswith("p_")]].sum(axis=1)
    assert ((probs - 1).abs() < 1e-4).all()
    assert faces.landmarks.isna().all()  # haar gives no landmarks
    from deltalake import DeltaTable

    # every table as written is the contract's schema (fer_core.tables), the images table plus its extras
    from fer_core import tables

    for name in ("images", "faces", "campaigns", "runs"):
        written = pa.schema(DeltaTable(f"{lake}/{name}").schema())
        contract = tables.schema_of(name)
        assert [(f.name, f.type) for f in written][:len(contract)] == [(f.name, f.type) for f in contract], name
        assert name == "images" or len(written) == len(contract), name
    # campaigns: recomputed from the tables
    camps = read_table(f"{lake}/campaigns")
    assert camps.n_images.sum() == n_unique and camps.n_faces.sum() == len(faces)
    from fer_core.labels import EMOTIONS
    from fer_core.models.registry import get_spec
    from fer_core.quantify import adjusted_mix

    matrix = get_spec("default").mix_matrix(tta=False)  # fast_config: the default model, no TTA
    adjusted = [f"adjusted_share_{e}" for e in EMOTIONS]
    for _, c in camps.iterrows():
        f = faces[faces.campaign_id == c.campaign_id]
        if len(f):
            assert abs(c.share_happy - (f.emotion == "happy").mean()) < 1e-9
            assert abs(c.net_sentiment - (c.share_positive - c.share_negative)) < 1e-9
            # the confusion-adjusted mix, recomputed here from the faces' probabilities
            expected = adjusted_mix(f[[f"p_{e}" for e in EMOTIONS]].to_numpy().mean(0), matrix)
            np.testing.assert_allclose(c[adjusted].to_numpy(float), expected, atol=1e-9)
            assert abs(c.adjusted_share_positive - c.adjusted_share_happy - c.adjusted_share_surprise) < 1e-9
            assert abs(c.adjusted_share_neutral_sentiment - c.adjusted_share_neutral) < 1e-9
            assert abs(c.adjusted_net_sentiment - (c.adjusted_share_positive - c.adjusted_share_negative)) < 1e-9
        else:
            assert c[adjusted].isna().all()
    runs = read_table(f"{lake}/runs")
    assert len(runs) == 1 and runs.iloc[0].n_scored == n_unique
    # the closing summary's mix is the faces table's
    assert row["emotions"] == {e: int((faces.emotion == e).sum()) for e in EMOTIONS}
    assert row["sentiments"] == {s: int((faces.sentiment == s).sum()) for s in ("positive", "neutral", "negative")}
    top, n_top = min(faces.emotion.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))  # ties: by name
    assert f"faces: {len(faces)}\n  emotions: {top} {n_top} ({n_top / len(faces):.0%})" in row["_log"]
    assert sum(runs.iloc[0][f"n_{s}"] for s in ("ok", "no_face", "decode_error", "fetch_error", "too_large", "empty")) == n_unique


def test_committed_files_carry_delta_stats_but_not_of_image_id(one_shot):
    """Readers skip files by posted_at / run_id / status: the executors' footers became Delta stats."""
    import pyarrow as pa
    from deltalake import DeltaTable

    lake, _ = one_shot
    images = read_table(f"{lake}/images")
    for table, columns in (("images", ("posted_at", "scored_at", "run_id", "status", "n_faces")),
                           ("faces", ("run_id", "emotion", "det_score", "valence"))):
        actions = pa.table(DeltaTable(f"{lake}/{table}").get_add_actions(flatten=True)).to_pylist()
        assert actions
        for a in actions:
            assert all(a[f"null_count.{c}"] is not None for c in columns), a
            assert a["min.run_id"] == a["max.run_id"] == "one-shot"
            assert not any(k.endswith(".image_id") for k in a), sorted(a)
        if table == "images":
            assert min(a["min.posted_at"] for a in actions) == images.posted_at.min().floor("ms")
            assert {a["min.status"] for a in actions} | {a["max.status"] for a in actions} <= set(images.status)


def test_rerun_changes_nothing(spark, one_shot, dump):  # noqa: F811
    lake, _ = one_shot
    before = {t: table_version(f"{lake}/{t}") for t in ("images", "faces", "campaigns")}
    row = run_job_in_process(spark, fast_config(dump["dump"], lake))
    assert row["n_scored"] == 0
    assert {t: table_version(f"{lake}/{t}") for t in ("images", "faces", "campaigns")} == before
    # the same run id again is a no-op even for the runs table (exactly-once per run id)
    runs_v = table_version(f"{lake}/runs")
    run_job_in_process(spark, fast_config(dump["dump"], lake), run_id="one-shot")
    assert table_version(f"{lake}/runs") == runs_v and len(read_table(f"{lake}/runs")) == 2


def test_dry_run_plans_without_writing(spark, one_shot, dump, tmp_path):  # noqa: F811
    lake, row = one_shot
    tables = ("images", "faces", "campaigns", "runs")
    before = {t: table_version(f"{lake}/{t}") for t in tables}
    plan = run_job_in_process(spark, fast_config(dump["dump"], lake), dry_run=True)
    assert plan["dry_run"] and plan["n_to_score"] == 0 and plan["by_campaign"] == {}
    # every dump file is recorded as consumed by the one-shot run: none would be opened, no image looked up
    n_files = len(list(__import__("pathlib").Path(dump["dump"]).rglob("*.parquet")))
    assert (plan["n_files_read"], plan["n_files_skipped"]) == (0, n_files) and row["n_files_read"] == n_files
    assert plan["n_already_scored"] == 0 and plan["estimated_s"] == 0.0
    assert plan["images_per_s"] == pytest.approx(row["images_per_s"])  # the one-shot run's speed
    assert {t: table_version(f"{lake}/{t}") for t in tables} == before
    # a new lake: everything is to score, counted per campaign; nothing is created there
    fresh = tmp_path / "fresh-lake"
    plan = run_job_in_process(spark, fast_config(dump["dump"], fresh), dry_run=True)
    scored = read_table(f"{lake}/images").campaign_id.value_counts().to_dict()
    assert plan["by_campaign"] == scored and plan["n_to_score"] == sum(scored.values())
    assert plan["estimated_s"] is None and "unknown (no earlier run" in plan["_log"]
    assert not fresh.exists() or not any(fresh.iterdir())


def test_erased_images_and_campaigns_are_never_scored_again(spark, dump, tmp_path):  # noqa: F811
    """After jobs/erase.py, rerunning the same dump skips what was erased, and the campaign that lost
    an image gets its campaigns row recomputed even though nothing new was scored."""
    from jobs.campaign.admin import erase
    from jobs.campaign.lake import Lake

    lake = tmp_path / "lake"
    run_job_in_process(spark, fast_config(dump["dump"], lake), run_id="before")
    images = read_table(f"{lake}/images")
    ok = images[images.status == "ok"]
    counts = images.campaign_id.value_counts()
    assert len(counts) >= 3
    its_campaign, emptied, gone_campaign = counts.index[0], counts.index[1], counts.index[-1]
    gone_image = ok[ok.campaign_id == its_campaign].image_id.iloc[0]
    emptied_images = list(images[images.campaign_id == emptied].image_id)  # erased one by one
    erase(Lake(str(lake)), campaigns=[gone_campaign], images=[gone_image, *emptied_images], reason="test")

    row = run_job_in_process(spark, fast_config(dump["dump"], lake), run_id="after")
    n_gone = int(counts[gone_campaign]) + 1 + len(emptied_images)
    skipped = re.search(r"(\d+) of erased images or campaigns skipped", row["_log"])
    assert skipped and int(skipped.group(1)) >= n_gone  # input rows: a duplicated id counts twice
    assert row["n_scored"] == 0
    after = read_table(f"{lake}/images")
    assert gone_image not in set(after.image_id) and not {gone_campaign, emptied} & set(after.campaign_id)
    assert len(after) == len(images) - n_gone
    faces = read_table(f"{lake}/faces")
    assert gone_image not in set(faces.image_id) and gone_campaign not in set(faces.campaign_id)
    camps = read_table(f"{lake}/campaigns").set_index("campaign_id")
    assert gone_campaign not in camps.index
    assert emptied not in camps.index  # its last image erased: the next run drops its row
    assert camps.loc[its_campaign, "n_images"] == int(counts[its_campaign]) - 1  # recomputed by the run
    assert camps.loc[its_campaign, "n_faces"] == int((faces.campaign_id == its_campaign).sum())


def test_incremental_day_by_day_equals_one_shot(spark, one_shot, dump, tmp_path):  # noqa: F811
    lake_a, _ = one_shot
    lake_b = tmp_path / "lake_incremental"
    days = sorted(p.name for p in __import__("pathlib").Path(dump["dump"]).iterdir())
    first = run_job_in_process(spark, fast_config(f"{dump['dump']}/{days[0]}", lake_b))
    second = run_job_in_process(spark, fast_config(f"{dump['dump']}/date=*", lake_b))
    # day 1 is not scored again, nor read: its file is recorded as consumed (the inputs table), so it is skipped
    # unopened and the second run's input rows are the other days' only
    assert first["n_files_read"] == 1 and (second["n_files_read"], second["n_files_skipped"]) == (len(days) - 1, 1)
    assert second["n_skipped"] - second["n_duplicates"] == 0
    assert second["campaigns_added"] >= 1  # campaigns day 1 had: the run's rows added to their stored rows
    a = campaigns_comparable(read_table(f"{lake_a}/campaigns"))
    b = campaigns_comparable(read_table(f"{lake_b}/campaigns"))
    import pandas as pd

    pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert len(read_table(f"{lake_b}/images")) == len(read_table(f"{lake_a}/images"))


def test_folders_input_campaign_from_path(spark, tmp_path):  # noqa: F811
    info = make_dump(tmp_path / "f", n_images=4, days=1, mode="folders", bad=False)
    cfg = fast_config(info["dump"], tmp_path / "lake", input={"format": "folders", "path": info["dump"],
                                                              "extra_columns": []})
    row = run_job_in_process(spark, cfg)
    images = read_table(f"{tmp_path}/lake/images")
    assert row["n_scored"] == 4 and len(images) == 4
    from jobs.make_sample_dump import CAMPAIGNS

    assert set(images.campaign_id) <= set(CAMPAIGNS)
    assert images.source.str.contains("campaign_id=").all() and images.posted_at.notna().all()


def test_folders_read_phone_formats_in_any_case_and_name_what_they_leave_out(spark, tmp_path):  # noqa: F811
    """An iPhone export (IMG_0001.HEIC), AVIF and upper-case .JPG are scored like the JPEGs they were made
    from; a file that is no image is left out and named in the run's output, never dropped silently."""
    import io

    from PIL import Image

    info = make_dump(tmp_path / "f", n_images=3, days=1, mode="folders", bad=False, seed=4)
    originals = sorted(Path(info["dump"]).rglob("*.jpg"))
    folder = originals[0].parent
    for src, name, fmt in zip(originals, ("IMG_0001.HEIC", "IMG_0002.avif", "IMG_0003.JPG"), ("HEIF", "AVIF", "JPEG")):
        buf = io.BytesIO()
        Image.open(src).save(buf, fmt, quality=95)
        (folder / name).write_bytes(buf.getvalue())
    (folder / "notes.txt").write_text("shot list")
    (folder / ".DS_Store").write_bytes(b"\0Bud1")
    cfg = fast_config(info["dump"], tmp_path / "lake", input={"format": "folders", "path": info["dump"],
                                                              "extra_columns": []},
                      progress={"interval_s": 3600})  # no periodic line, only the closing one
    row = run_job_in_process(spark, cfg)
    images = read_table(f"{tmp_path}/lake/images")
    assert row["n_input"] == 6 and len(images) == 6
    assert "progress: 6/6 images (100.0%)" in row["_log"], row["_log"]  # images, not images + faces
    assert "1 of 7 files" in row["_log"] and "notes.txt" in row["_log"] and "DS_Store" not in row["_log"]
    by_name = {Path(s).name: r for s, r in zip(images.source, images.itertuples())}
    for src, name in zip(originals, ("IMG_0001.HEIC", "IMG_0002.avif", "IMG_0003.JPG")):
        copy, original = by_name[name], by_name[src.name]
        assert copy.status == original.status and copy.status in ("ok", "no_face"), (name, copy.error)
        assert (copy.width, copy.height, copy.n_faces) == (original.width, original.height, original.n_faces)
    assert images.n_faces.sum() > 0


def test_default_retinaface_path(spark, tmp_path):  # noqa: F811
    """The default detector (RetinaFace, weights broadcast as bytes) finds the faces with landmarks."""
    info = make_dump(tmp_path / "s", n_images=3, days=1, bad=False, seed=3)
    cfg = fast_config(info["dump"], tmp_path / "lake", detector={"name": "retinaface"})
    row = run_job_in_process(spark, cfg)
    faces = read_table(f"{tmp_path}/lake/faces")
    assert row["detector_version"].startswith("retinaface") and row["n_faces"] >= 1
    assert faces.landmarks.map(lambda v: v is not None and len(v) == 10).all()
    assert (faces.det_score >= 0.9).all()


def test_wrong_column_type_fails_up_front(spark, tmp_path):  # noqa: F811
    """Types are checked on the Spark schema before anything is scored; the error names the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.inputs import InputError, read_input

    d = tmp_path / "dump"
    d.mkdir()
    pq.write_table(pa.table({"image_id": ["a"], "campaign_id": ["c"], "posted_at": ["yesterday"],
                             "image": [b"x"]}), d / "part.parquet")
    cfg = job_config_from_dict(fast_config(str(d), str(tmp_path / "lake"), input={"path": str(d), "extra_columns": []}))
    with pytest.raises(InputError, match="posted_at.*string"):
        read_input(spark, cfg.input)
    pq.write_table(pa.table({"image_id": ["a"], "campaign_id": ["c"], "image": ["not bytes"]}), d / "part.parquet")
    with pytest.raises(InputError, match="'image'.*binary"):
        read_input(spark, cfg.input)


def test_a_tta_mode_the_model_cannot_serve_fails_before_anything_is_scored(spark, dump, tmp_path):  # noqa: F811
    """model.tta ten_crop with the whole-face default model: the driver refuses it with the reason, instead
    of every task failing its images; nothing is written."""
    from deltalake import DeltaTable

    from fer_core.errors import ConfigError

    lake = tmp_path / "lake"
    with pytest.raises(ConfigError, match=r"tta 'ten_crop': view 'tl' needs a crop-trained model.*use tta 'flip'"):
        run_job_in_process(spark, fast_config(dump["dump"], lake, model={"tta": "ten_crop"}))
    assert not DeltaTable.is_deltatable(str(lake / "images"))


def test_fetch_errors_are_retried_and_keep_one_row(spark, tmp_path):  # noqa: F811
    """A URI that failed to fetch is fetched again by the next run; the image always has exactly
    one row (the newest) and the campaign counts do not double."""
    import shutil

    import pandas as pd

    info = make_dump(tmp_path / "u", n_images=3, days=1, mode="uri", bad=True, seed=5)
    lake = tmp_path / "lake"
    missing = tmp_path / "u" / "images" / "does-not-exist.jpg"

    def config(**inputs):  # the sample's images sit beside the dump folder, so the URI policy lists them
        return fast_config(info["dump"], lake, input={"uri_allow": [str(tmp_path / "u" / "images")], **inputs})

    def row_of(image_id):
        images = read_table(f"{lake}/images")
        assert images.image_id.is_unique
        return images.set_index("image_id").loc[image_id], len(images)

    first = run_job_in_process(spark, config(), run_id="first")
    row, n_images = row_of("bad-missing-uri")
    assert row.status == "fetch_error" and first["n_fetch_error"] == 1

    off = run_job_in_process(spark, config(retry_fetch_errors=False))
    assert off["n_scored"] == 0 and row_of("bad-missing-uri")[0].run_id == "first"

    still = run_job_in_process(spark, config(), run_id="still-missing")
    assert still["n_scored"] == 1 and "1 earlier fetch errors retried" in still["_log"]
    row, n = row_of("bad-missing-uri")
    assert (row.status, row.run_id, n) == ("fetch_error", "still-missing", n_images)

    # the object appears (the outage is over): a good image at the missing path
    images = read_table(f"{lake}/images")
    shutil.copy(images[images.status == "ok"].iloc[0].source, missing)
    fixed = run_job_in_process(spark, config(), run_id="fixed")
    assert fixed["n_scored"] == 1 and fixed["n_fetch_error"] == 0
    row, n = row_of("bad-missing-uri")
    assert (row.status, row.run_id, n) == ("ok", "fixed", n_images) and row.n_faces > 0
    faces = read_table(f"{lake}/faces")
    camps = read_table(f"{lake}/campaigns")
    assert len(faces) == read_table(f"{lake}/images").n_faces.sum()
    assert camps.n_images.sum() == n_images and camps.n_faces.sum() == len(faces)
    pd.testing.assert_frame_equal(*campaigns_as_recomputed(str(lake)), check_dtype=False)
    assert run_job_in_process(spark, config())["n_scored"] == 0  # nothing left to retry


def test_a_one_file_dump_is_scored_by_every_task(spark, dump, tmp_path):  # noqa: F811
    """A small dump is read as one partition, which already satisfies the dedupe window and the
    anti-join, so without the job's explicit repartition one task (one core) scored the whole run."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    one_file = tmp_path / "dump"
    one_file.mkdir()
    pq.write_table(ds.dataset(str(dump["dump"]), format="parquet").to_table(), one_file / "all.parquet")
    lake = tmp_path / "lake"
    run_job_in_process(spark, fast_config(str(one_file), lake, spark={"images_per_task": 4}), run_id="spread")
    images = read_table(f"{lake}/images")
    # one Parquet file per task and campaign: one task would have written one file per campaign
    n_files = len(DeltaTable(f"{lake}/images").file_uris())
    assert n_files > images.campaign_id.nunique(), (n_files, images.campaign_id.nunique())


def test_a_lake_from_before_the_quality_columns_gains_them(spark, dump, tmp_path):  # noqa: F811
    """Tables created before a contract column existed get it on the next run (a hand-made append commit
    would otherwise keep the old schema and the new column would never be read)."""
    from deltalake import DeltaTable

    from fer_core import tables

    lake = tmp_path / "lake"
    old_faces = pa.schema([f for f in tables.faces_schema() if f.name not in {q.name for q in tables.quality_fields()}])
    DeltaTable.create(str(lake / "faces"), old_faces, partition_by=["campaign_id"])
    run_job_in_process(spark, fast_config(dump["dump"], lake), run_id="after-upgrade")
    written = pa.schema(DeltaTable(str(lake / "faces")).schema())
    assert {q.name for q in tables.quality_fields()} <= set(written.names)
    faces = read_table(f"{lake}/faces")
    assert len(faces) and faces.quality.notna().all() and faces.face_px.notna().all()
    assert set(faces.quality) <= {"good", "small", "blurred", "dark", "turned"}
