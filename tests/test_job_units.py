"""Fast tests of the job's pieces that need no Spark: config, sample dump, cache, progress, lake helpers."""
from __future__ import annotations

import io

import numpy as np
import pytest

from tests._spark import fast_config, make_dump


def test_default_config_loads_and_overrides():
    from jobs.campaign.config import load_job_config

    cfg = load_job_config(None, input="dumps/date=*/", output="s3://b/lake")
    assert cfg.input.format == "parquet" and cfg.input.path == "dumps/date=*/"
    assert cfg.output.path == "s3://b/lake" and cfg.dashboards_dir() == "s3://b/lake/dashboards"
    core = cfg.pipeline_config()
    assert core.detector.name == "retinaface" and core.model.batch_size == cfg.model.batch_size
    assert core.runtime.device == "auto"


@pytest.mark.parametrize("bad, key", [
    ({"input": {"columns": {"imgae": "x"}}}, "input.columns.imgae"),
    ({"model": {"batch_size": "big"}}, "model.batch_size"),
    ({"runtime": {"device": "tpu"}}, "runtime.device"),
    ({"spark": {"images_per_task": 0}}, "spark.images_per_task"),
    # keys the one pipeline schema moved are refused with where they went
    ({"tta": True}, "tta: unknown key, moved to model.tta"),
    ({"inference": {"batch_size": 64}}, "inference: unknown key, this section was split"),
    ({"input": {"max_fetch_bytes": 100}}, "input.max_fetch_bytes: unknown key, moved to the top-level max_bytes"),
    ({"model": "default"}, "model: expected a mapping for ModelOptions"),
    ({"output": {"target_file_rows": 0}}, "target_file_rows"),
    # detector values are checked when the config is read (on the driver), not on each executor
    ({"detector": {"score_threshold": 2}}, "detector.score_threshold"),
    ({"detector": {"engine": "onnx"}}, "detector.engine"),
    ({"detector": {"name": "haar", "engine": "tf"}}, "detector.engine"),
    ({"detector": {"name": "mtcnn"}}, "detector.name"),
])
def test_config_errors_name_the_key(tmp_path, bad, key):
    from fer_core.errors import ConfigError

    from jobs.campaign.config import load_job_config
    from tests._spark import write_yaml

    path = write_yaml(tmp_path / "c.yaml", bad)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_job_config(path)
    section = key.split(".")[0]
    assert f"{section}.{section}." not in str(info.value)  # the section is named once


def test_example_configs_validate():
    from pathlib import Path

    from jobs.campaign.config import load_job_config

    conf = Path(__file__).resolve().parents[1] / "conf"
    for name in ("default.yaml", "gpu.yaml", "folders.yaml", "s3.yaml"):
        cfg = load_job_config(conf / name)
        assert cfg.input.path
    gpu = load_job_config(conf / "gpu.yaml")
    assert gpu.spark.conf["spark.executor.resource.gpu.amount"] == "1"
    assert gpu.spark.conf["spark.task.resource.gpu.amount"] == "0.25"


def test_config_hash_ignores_paths():
    from jobs.campaign.config import config_hash, job_config_from_dict

    a = job_config_from_dict(fast_config("a", "b"))
    b = job_config_from_dict(fast_config("c", "d"))
    c = job_config_from_dict(fast_config("a", "b", detector={"name": "retinaface"}))
    assert config_hash(a) == config_hash(b) != config_hash(c)
    engines = {config_hash(job_config_from_dict(fast_config("a", "b", detector={"name": "retinaface", "engine": e})))
               for e in ("tf", "tflite", "auto")}
    assert engines == {config_hash(c)}  # the engines give the same rows, so the same configuration


def test_model_cache_loads_once_and_evicts():
    from jobs.campaign.scoring import ModelCache

    cache = ModelCache(capacity=2)
    calls = []
    make = lambda k: (lambda: calls.append(k) or k.upper())  # noqa: E731
    assert cache.get("a", make("a")) == "A"
    assert cache.get("a", make("a")) == "A"
    cache.get("b", make("b"))
    cache.get("c", make("c"))  # evicts a (least recently used)
    cache.get("a", make("a"))
    assert calls == ["a", "b", "c", "a"] and cache.loads == 4


def test_pipeline_fn_uses_the_imported_module_cache():
    """The closure must not carry its own cache copy when pickled (cloudpickle copies globals)."""
    from pyspark import cloudpickle

    from jobs.campaign import scoring

    fn = scoring.make_pipeline_fn(None, None, None, "k-test")
    scoring.MODEL_CACHE._items["k-test"] = "sentinel"
    try:
        clone = cloudpickle.loads(cloudpickle.dumps(fn))
        assert clone() == "sentinel"
    finally:
        scoring.MODEL_CACHE.clear()


def test_progress_line_and_summary():
    from jobs.campaign.progress import Progress, fmt_duration, format_summary

    class Acc:
        value = 50

    t = [0.0]
    p = Progress(None, 200, interval_s=0, out=io.StringIO(), clock=lambda: t[0])
    p.accumulator = Acc()
    t[0] = 10.0
    line = p.line()
    assert "50/200 images (25.0%)" in line and "5.0 images/s" in line and "ETA 30s" in line
    Acc.value = 210  # a task that ran twice counts twice: never a negative ETA
    assert "ETA 0s" in p.line()
    assert fmt_duration(3725) == "1h02m05s"
    assert fmt_duration(47 * 3600 + 59) == "47h00m59s" and fmt_duration(21905 * 3600 + 1627) == "912d17h"
    row = {"run_id": "r", "status": "succeeded", "n_scored": 3, "duration_s": 2.0, "images_per_s": 1.5,
           "n_input": 4, "n_duplicates": 1, "n_skipped": 1, "n_ok": 2, "n_empty": 1, "n_faces": 3,
           "model_version": "m", "detector_version": "d", "config_hash": "h", "input": "in", "output": "out"}
    text = format_summary(row)
    assert "ok=2" in text and "empty=1" in text and "faces: 3" in text
    assert "faces: 3\n  model" in text  # no mix without counts (a row without them, or no faces)
    row.update(emotions={"angry": 1, "happy": 2, "sad": 0}, sentiments={"positive": 2, "neutral": 0, "negative": 1})
    text = format_summary(row)
    assert "faces: 3\n  emotions: happy 2 (67%), angry 1 (33%)\n  sentiment: positive 2 (67%), negative 1 (33%)\n" in text
    assert "  scoring ?: 0 new images\n" in text  # a row from before identities
    row.update(scoring_id="m/haar@min20/0a0b0c0d", n_new=1, n_backfilled=2, n_backlog_left=5)
    assert ("  scoring m/haar@min20/0a0b0c0d: 1 new images, 2 rescored from older scorings, 5 of the input still "
            "to rescore (later runs)\n") in format_summary(row)
    row.update(n_videos=1, n_tracks=2)  # a video's faces count per sampled frame here, per track on the dashboards
    assert "faces: 3; video posts: 1, their tracks: 2 (here, and in the mix below, a video's faces count in every " \
           "sampled frame; the dashboards count each track once)\n  emotions:" in format_summary(row)


def test_partition_dir_is_safe():
    from jobs.campaign.lake_files import partition_dir

    assert partition_dir("summer_sale") == "campaign_id=summer_sale"
    odd = partition_dir("a b/ü%")
    assert odd.startswith("campaign_id=a_b_") and "/" not in odd[len("campaign_id="):]
    assert partition_dir("a b/ü%") != partition_dir("a_b_ü%")


def test_storage_option_translation():
    from fer_core.storage import fsspec_options
    from jobs.campaign.lake import delta_options

    opts = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    f = fsspec_options("s3://bucket/dump", opts)
    assert f == {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9",
                                                              "region_name": "us-east-1"}}
    assert fsspec_options("S3A://bucket/x", f) == f  # translating twice changes nothing
    assert fsspec_options("/data/dump", opts) == {} and fsspec_options("file:///data/dump", opts) == {}
    assert fsspec_options("gs://bucket/x", {**opts, "token": "anon"}) == {"token": "anon"}  # AWS_* only for s3
    assert delta_options(opts)["AWS_ALLOW_HTTP"] == "true"


def test_write_part_files_one_file_per_campaign(tmp_path):
    import pyarrow.parquet as pq

    from fer_core.tables import faces_schema
    from jobs.campaign.lake_files import write_part_files

    row = {**{f.name: None for f in faces_schema()}, "image_id": "i", "face_index": 0, "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0, "det_score": 0.9,
           "landmarks": None, "emotion": "happy", **{f"p_{e}": 1 / 7 for e in
                                                       ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")},
           "sentiment": "neutral", "valence": 0.0, "model_version": "m", "run_id": "r", "face_px": 3.0,
           "sharpness": 1.0, "brightness": 100.0, "yaw": None, "pitch": None, "quality": "small"}
    rows = [{**row, "campaign_id": "a"}, {**row, "campaign_id": "b"}, {**row, "campaign_id": "a", "face_index": 1}]
    meta = write_part_files(str(tmp_path), rows, faces_schema(), "r", None)
    assert sorted((m["campaign_id"], m["num_records"]) for m in meta) == [("a", 2), ("b", 1)]
    t = pq.read_table(tmp_path / meta[0]["path"])
    assert "campaign_id" not in t.column_names and t.num_rows == meta[0]["num_records"]


def test_campaigns_table_from_before_the_adjusted_columns_and_identities_gains_them(tmp_path):
    """A lake written by an older version (no adjusted_share_* columns, one row per campaign with no
    scoring_id) takes the new rows: MERGE evolves the schema, the recomputed campaign's pre-identity row is
    replaced by its identity's row, and the campaign the new run did not touch keeps its row, reading null
    in the new columns."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from fer_core.tables import campaigns_schema, coverage_fields
    from jobs.campaign.lake import Lake

    schema = campaigns_schema()
    added = {f.name for f in coverage_fields()}
    old_schema = pa.schema([f for f in schema if not f.name.startswith("adjusted_") and f.name not in added])

    def rows(campaign, table_schema, value):
        return pa.Table.from_pylist([{f.name: (campaign if f.name == "campaign_id" else "fer-vgg@5/x" if f.name ==
                                               "scoring_id" else value if pa.types.is_floating(f.type) else None)
                                      for f in table_schema}], schema=table_schema)
    lake = Lake(str(tmp_path))
    write_deltalake(lake.uri("campaigns"), pa.concat_tables([rows("old", old_schema, 0.5), rows("new", old_schema, 0.5)]))
    new_rows = rows("new", schema, 0.25)
    assert lake.merge_campaigns(new_rows, "run-2")
    assert lake.drop_stale_campaign_rows(["new"], new_rows) == 1  # the pre-identity row of "new"
    assert lake.drop_stale_campaign_rows(["new"], new_rows) == 0  # idempotent: a replay deletes nothing
    got = DeltaTable(lake.uri("campaigns")).to_pandas().set_index("campaign_id")
    assert set(schema.names) <= set(got.columns) | {"campaign_id"} and len(got) == 2
    assert got.loc["new", "adjusted_share_happy"] == 0.25 and got.loc["new", "share_happy"] == 0.25
    assert got.loc["new", "scoring_id"] == "fer-vgg@5/x" and got.loc["old", "scoring_id"] is None
    assert got.loc["old", "share_happy"] == 0.5 and got.loc["old", "adjusted_share_happy"] != got.loc["old", "adjusted_share_happy"]


# ---------------------------------------------------------------- sample dump


def test_composite_faces_places_faces_inside_canvas():
    from jobs.make_sample_dump import builtin_face_patches, composite_faces

    rng = np.random.default_rng(0)
    patches = builtin_face_patches(max_lfw=3)
    img, boxes = composite_faces(patches[:3], rng, canvas=(300, 400), face_px=(50, 90))
    assert img.shape == (300, 400, 3) and img.dtype == np.uint8
    assert 1 <= len(boxes) <= 3
    for x, y, w, h in boxes:
        assert 0 <= x and 0 <= y and x + w <= 400 and y + h <= 300 and 45 <= w <= 95


def test_sample_dump_bytes_has_bad_inputs(tmp_path):
    import pyarrow.dataset as ds

    info = make_dump(tmp_path, n_images=6, days=2)
    t = ds.dataset(info["dump"], format="parquet", partitioning="hive").to_table().to_pandas()
    assert len(t) == 6 + 5 + 1  # photos, bad inputs, one duplicate id
    assert {"bad-truncated", "bad-zero-bytes", "bad-random-bytes", "bad-huge-dimensions", "bad-null-cell"} <= set(t.image_id)
    assert t.image_id.duplicated().sum() == 1
    assert {"image_id", "campaign_id", "posted_at", "platform", "caption", "image", "likes"} <= set(t.columns)
    assert t.campaign_id.nunique() >= 2 and t.posted_at.dt.date.nunique() == 2


def test_huge_png_header_is_too_large_for_fer_core():
    from fer_core.decode import decode_image
    from fer_core.errors import ImageTooLargeError

    from jobs.make_sample_dump import huge_png_header

    with pytest.raises(ImageTooLargeError):
        decode_image(huge_png_header())


def test_sample_dump_with_fer_csv_keeps_labels(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(1)
    rows = [{"emotion": int(i % 7), "pixels": " ".join(map(str, rng.integers(0, 255, 48 * 48))),
             "Usage": "PublicTest" if i % 3 else "Training"} for i in range(30)]
    csv = tmp_path / "fer.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    info = make_dump(tmp_path / "out", n_images=8, days=1, fer_csv=str(csv), usage="PublicTest", bad=False)
    labels = pd.read_parquet(info["labels"])
    assert {"image_id", "face_index", "x", "y", "w", "h", "emotion", "emotion_code"} <= set(labels.columns)
    assert len(labels) > 0 and labels.emotion.isin(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]).all()
    assert labels.fer_row.str.startswith("fer2013:").all()


def test_bad_parquet_and_missing_column_fail_up_front(tmp_path):
    """Checked from footers on the driver, before Spark reads anything."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.inputs import InputError, read_input

    d = tmp_path / "dump"
    d.mkdir()
    pq.write_table(pa.table({"image_id": ["a"], "campaign_id": ["c"], "image": [b"x"]}), d / "good.parquet")
    (d / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    cfg = job_config_from_dict(fast_config(str(d), str(tmp_path / "lake"), input={"path": str(d), "extra_columns": []}))
    with pytest.raises(InputError, match="unreadable Parquet file .*broken.parquet"):
        read_input(None, cfg.input)
    (d / "broken.parquet").unlink()
    pq.write_table(pa.table({"image_id": ["a"], "campaign": ["c"], "image": [b"x"]}), d / "other.parquet")
    with pytest.raises(InputError, match="other.parquet has no column 'campaign_id'"):
        read_input(None, cfg.input)
    cfg2 = job_config_from_dict(fast_config(str(tmp_path / "nothing-here"), "x"))
    with pytest.raises(InputError, match="no input"):
        read_input(None, cfg2.input)


def test_superseded_fetch_errors_are_dropped_with_quoted_ids(tmp_path):
    """Only the earlier fetch_error rows of the retried ids go; hostile ids are quoted, not run."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs.campaign.lake import Lake

    ids = ["plain", "it's", "x' OR '1'='1", "keep-me"]
    rows = [  # (image_id, status, run_id, scoring_id)
        ("plain", "fetch_error", "r1", "m@1"), ("plain", "ok", "r2", "m@1"),
        ("it's", "fetch_error", "r1", "m@1"), ("it's", "fetch_error", "r2", "m@1"),
        ("x' OR '1'='1", "fetch_error", "r1", "m@1"),
        ("keep-me", "fetch_error", "r1", "m@1"), ("plain", "fetch_error", "r1", "other@2"),
    ]
    table = pa.table({k: [r[i] for r in rows] for i, k in enumerate(("image_id", "status", "run_id", "scoring_id"))})
    write_deltalake(str(tmp_path / "images"), table)
    lake = Lake(str(tmp_path))
    assert lake.drop_superseded_fetch_errors(ids[:3], "m@1", "r2") == 3
    left = sorted(tuple(r.values()) for r in lake.table("images").to_pyarrow_table().to_pylist())
    assert left == sorted([("plain", "ok", "r2", "m@1"), ("it's", "fetch_error", "r2", "m@1"),
                           ("keep-me", "fetch_error", "r1", "m@1"), ("plain", "fetch_error", "r1", "other@2")])
    assert lake.drop_superseded_fetch_errors(ids[:3], "m@1", "r2") == 0  # a replay deletes nothing more


def test_erase_deletes_rows_and_files_and_leaves_a_tombstone(tmp_path, capsys):
    """Erasing campaign b and image "it's" (a quote in the id) removes their rows from every table and,
    after the zero-retention VACUUM, from every Parquet file on disk; the tombstones stay."""
    import datetime as dt
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, write_deltalake

    from jobs.campaign.admin import AdminError, erase, erased, stale_campaigns
    from jobs.campaign.lake import Lake
    from jobs.erase import main

    images = {"a": ["a1", "it's", "a3"], "b": ["b1", "b2"]}
    for cid, ids in images.items():  # two appends per campaign, like two runs
        for i in ids:
            write_deltalake(str(tmp_path / "images"), pa.table({"image_id": [i], "campaign_id": [cid],
                                                                "caption": [f"secret caption of {i}"]}),
                            mode="append", partition_by=["campaign_id"])
    write_deltalake(str(tmp_path / "faces"), pa.table({"image_id": ["a1", "it's", "it's", "b1"],
                                                       "campaign_id": ["a", "a", "a", "b"], "face_index": [0, 0, 1, 0]}),
                    partition_by=["campaign_id"])
    write_deltalake(str(tmp_path / "tracks"), pa.table({"image_id": ["it's", "b2", "a3"],
                                                        "campaign_id": ["a", "b", "a"],
                                                        "track_id": pa.array([0, 0, 0], pa.int32())}),
                    partition_by=["campaign_id"])  # video posts' tracks
    long_ago = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    write_deltalake(str(tmp_path / "campaigns"), pa.table({"campaign_id": ["a", "b"], "n_images": [3, 2],
                                                           "updated_at": pa.array([long_ago] * 2, pa.timestamp("us", tz="UTC"))}))
    lake = Lake(str(tmp_path))
    versions = {t: lake.table(t).version() for t in ("images", "faces", "tracks", "campaigns")}
    plan = erase(lake, campaigns=["b"], images=["it's"], reason="test", dry_run=True)
    assert plan["deleted"] == {"images": 3, "faces": 3, "tracks": 2, "campaigns": 1} and plan["campaigns"] == ["a", "b"]
    assert {t: lake.table(t).version() for t in versions} == versions and lake.table("erasures") is None

    assert main(["--lake", str(tmp_path), "--campaign", "b", "--image", "it's", "--reason", "subject request 17"]) == 0
    out = capsys.readouterr().out
    assert "images: deleted 3 rows" in out and "faces: deleted 3 rows" in out and "campaigns: deleted 1 rows" in out
    assert "tracks: deleted 2 rows" in out
    assert lake.table("tracks").to_pyarrow_table().column("image_id").to_pylist() == ["a3"]
    assert sorted(lake.table("images").to_pyarrow_table().column("image_id").to_pylist()) == ["a1", "a3"]
    assert lake.table("faces").to_pyarrow_table().column("image_id").to_pylist() == ["a1"]
    assert lake.table("campaigns").to_pyarrow_table().column("campaign_id").to_pylist() == ["a"]
    for table in ("images", "faces", "tracks"):  # gone from storage too, not only from the current version
        for root, _, files in os.walk(tmp_path / table):
            for f in files:
                if f.endswith(".parquet"):
                    ids = set(pq.read_table(os.path.join(root, f)).column("image_id").to_pylist())
                    assert not ids & {"it's", "b1", "b2"}, (table, f, ids)
    tomb = DeltaTable(str(tmp_path / "erasures")).to_pyarrow_table().to_pylist()
    assert sorted((r["kind"], r["id"], r["campaign_id"], r["reason"]) for r in tomb) == [
        ("campaign", "b", "b", "subject request 17"), ("image", "it's", "a", "subject request 17")]
    assert erased(lake) == ({"b"}, {"it's"})
    assert stale_campaigns(lake) == {"a"}  # its campaigns row still counts the erased image

    assert main(["--lake", str(tmp_path), "--reason", "x"]) == 2  # nothing named
    assert "nothing to erase" in capsys.readouterr().err
    lake.write_manifest("run-x", {"run_id": "run-x"})
    with pytest.raises(AdminError, match="run-x"):
        erase(lake, images=["a1"], reason="test")


def test_maintain_lake_compacts_vacuums_and_refuses_pending_runs(tmp_path, capsys):
    """Many small appends -> one file per partition, same rows; vacuum deletes the old files;
    a pending run's manifest blocks maintenance (its files are not committed yet)."""
    import os

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from jobs.campaign.admin import maintain
    from jobs.campaign.lake import Lake
    from jobs.maintain_lake import main

    uri = str(tmp_path / "images")
    for i in range(6):  # six runs, two campaigns each
        write_deltalake(uri, pa.table({"image_id": [f"a{i}", f"b{i}"], "campaign_id": ["a", "b"]}),
                        mode="append", partition_by=["campaign_id"])
    rows = sorted(DeltaTable(uri).to_pyarrow_table().column("image_id").to_pylist())
    parquet_on_disk = lambda: sum(f.endswith(".parquet") for _, _, fs in os.walk(uri) for f in fs)  # noqa: E731
    assert len(DeltaTable(uri).file_uris()) == 12 == parquet_on_disk()

    assert main(["--lake", str(tmp_path), "--vacuum-hours", "1"]) == 2  # too short: refused
    assert "below 24" in capsys.readouterr().err
    assert main(["--lake", str(tmp_path), "--vacuum-hours", "168", "--dry-run"]) == 0
    assert "images: 12 -> 12 files, would vacuum 0" in capsys.readouterr().out
    assert main(["--lake", str(tmp_path)]) == 0
    assert "images: 12 -> 2 files" in capsys.readouterr().out
    assert sorted(DeltaTable(uri).to_pyarrow_table().column("image_id").to_pylist()) == rows
    assert parquet_on_disk() == 14  # old files stay until vacuumed (time travel)
    report = maintain(Lake(str(tmp_path)), vacuum_hours=0)
    assert report["images"]["vacuumed"] == 12 and parquet_on_disk() == 2
    assert sorted(DeltaTable(uri).to_pyarrow_table().column("image_id").to_pylist()) == rows

    Lake(str(tmp_path)).write_manifest("run-x", {"run_id": "run-x"})
    assert main(["--lake", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run-x" in err and "run the scoring job once" in err
    assert main(["--lake", str(tmp_path / "nothing")]) == 2


def test_image_glob_matches_every_suffix_in_any_case() -> None:
    import fnmatch

    from fer_core.decode import IMAGE_SUFFIXES, image_glob
    from jobs.campaign.inputs import _expand_braces

    patterns = _expand_braces(image_glob())
    names = [f"IMG_0001{s}" for s in IMAGE_SUFFIXES] + [f"a{s.upper()}" for s in IMAGE_SUFFIXES] + ["b.JpG"]
    for name in names:
        assert any(fnmatch.fnmatchcase(name, p) for p in patterns), name
    for name in ("notes.txt", "clip.mov", "IMG_0001.jpg.json", "photo.psd", "jpg"):
        assert not any(fnmatch.fnmatchcase(name, p) for p in patterns), name


@pytest.mark.parametrize("threads", [1, 4])
def test_payloads_keep_row_order_with_concurrent_fetches(tmp_path, threads) -> None:
    """Fetched bytes, inline bytes, empty cells and fetch errors each land on their own row."""
    import pandas as pd

    from fer_core.errors import FetchError, ImageTooLargeError
    from fer_core.fetch import UriPolicy
    from jobs.campaign.scoring import ScoringContext, fetch_payloads

    files = []
    for i in range(12):
        f = tmp_path / f"img{i}.bin"
        f.write_bytes(bytes([i]) * (100 + i))
        files.append(str(f))
    rows = [(None, files[i]) for i in range(12)]
    rows[3] = (None, str(tmp_path / "missing.jpg"))
    rows[5] = (b"inline", None)
    rows[7] = (None, None)
    rows[9] = (b"x" * 500, None)
    rows[10] = (None, files[10].replace("img10", "big"))
    (tmp_path / "big.bin").write_bytes(b"y" * 600)
    pdf = pd.DataFrame(rows, columns=["image", "uri"])
    ctx = ScoringContext(pipeline_fn=None, storage_options={}, uri_policy=UriPolicy.for_dump(str(tmp_path)),
                         max_fetch_bytes=400, fetch_threads=threads,
                         detect_chunk=16, run_id="r", model_version="m", scoring_id="m/s", images_uri="",
                         faces_uri="", lake_options={}, target_file_rows=1, images_schema=None, faces_schema=None)
    out = fetch_payloads(pdf, ctx)
    assert len(out) == 12
    for i, value in enumerate(out):
        if i == 3:
            assert isinstance(value, FetchError) and "missing.jpg" in str(value)
        elif i == 5:
            assert value == b"inline"
        elif i == 7:
            assert value is None
        elif i in (9, 10):
            assert isinstance(value, ImageTooLargeError)
        else:
            assert value == bytes([i]) * (100 + i), i


def test_fetch_threads_is_validated() -> None:
    from fer_core.errors import ConfigError
    from jobs.campaign.config import job_config_from_dict

    with pytest.raises(ConfigError, match="fetch_threads: must be >= 1"):
        job_config_from_dict(fast_config("a", "b", input={"fetch_threads": 0}))


def test_folder_without_images_fails_up_front_naming_the_formats(tmp_path) -> None:
    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.inputs import InputError, read_input

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("shot list")
    (tmp_path / "photos" / "layers.PSD").write_bytes(b"\0" * 10)  # (a .MOV is read now: a video post)
    cfg = job_config_from_dict(fast_config(str(tmp_path / "photos"), str(tmp_path / "lake"),
                                           input={"format": "folders", "extra_columns": []}))
    with pytest.raises(InputError, match=r"none of the 2 files .* matches a photo or video suffix .*\.heic.*\.mov.*any case"):
        read_input(None, cfg.input)
    narrow = job_config_from_dict(fast_config(str(tmp_path / "photos"), str(tmp_path / "lake"),
                                              input={"format": "folders", "extra_columns": [], "glob_filter": "*.png"}))
    with pytest.raises(InputError, match=r"matches input.glob_filter '\*.png'"):
        read_input(None, narrow.input)


def test_unset_tensorflow_threads_become_the_spark_tasks_cores() -> None:
    """A job YAML without runtime threads must not give every task's Python worker all the cores."""
    from fer_core.pipeline_config import InferenceConfig
    from fer_core.runtime import RuntimeConfig
    from jobs.campaign.job import _per_task_threads

    assert _per_task_threads(InferenceConfig(), 1).runtime == RuntimeConfig("auto", 1, 1)
    assert _per_task_threads(InferenceConfig(), 4).runtime == RuntimeConfig("auto", 4, 4)
    stated = InferenceConfig(runtime=RuntimeConfig("cpu", 3, None))
    assert _per_task_threads(stated, 2).runtime == RuntimeConfig("cpu", 3, 2)  # what a config states stays


def test_input_since_keeps_the_date_folders_on_or_after_it_and_says_what_it_left_out():
    import datetime as dt
    import io

    from fer_core.errors import ConfigError
    from jobs.campaign.config import InputConfig
    from jobs.campaign.inputs import keep_since

    files = ["/d/date=2026-11-29/a.parquet", "/d/date=2026-11-30/b.parquet", "/d/date=2026-12-01/c.parquet",
             "/d/date=2026-12-02/x/d.parquet", "/d/undated/e.parquet", "/d/date=2026-13-45/f.parquet"]
    today = dt.date(2026, 12, 2)
    assert InputConfig(since="1d").since_date(today) == dt.date(2026, 12, 1)
    assert InputConfig(since="2026-11-30").since_date(today) == dt.date(2026, 11, 30)
    out = io.StringIO()
    cfg = InputConfig(path="/d", since="2026-12-01")
    assert keep_since(files, cfg, out) == files[2:]  # undated and not-a-date folders are read as before
    assert "2 of 6 files under /d are in date= folders before 2026-12-01" in out.getvalue()
    assert keep_since(files, InputConfig(path="/d"), out) == files
    with pytest.raises(ConfigError, match="since: 'yesterday' is neither a date"):
        InputConfig(since="yesterday")
