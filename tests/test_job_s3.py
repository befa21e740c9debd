"""Images read from s3:// (dump and image URIs on a moto S3 server on 127.0.0.1), Delta written to s3://."""
from __future__ import annotations

import os
import re
import sys

import pytest

from tests._spark import fast_config, free_port, make_dump, run_job_in_process, spark, wait_port  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.s3, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto_server in its own process: deltalake's Rust client holds the GIL while it waits, so an
    in-process (threaded) moto server would deadlock with it."""
    import subprocess
    from pathlib import Path

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        wait_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def moto_buckets(endpoint: str, *buckets: str):
    """Create ``buckets`` on the moto server; returns (the job's storage options for it, an s3fs client)."""
    import boto3
    import s3fs

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1"}
    return opts, s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint})


def test_s3_in_s3_out(spark, s3_endpoint, tmp_path, capsys):  # noqa: F811
    import pyarrow.parquet as pq

    opts, fs = moto_buckets(s3_endpoint, "dumps", "lake")

    info = make_dump(tmp_path / "s", n_images=4, days=1, mode="uri", seed=5)
    for part in sorted((tmp_path / "s" / "dump").rglob("*.parquet")):
        t = pq.read_table(part)
        uris = []
        for u in t.column("uri").to_pylist():
            if u is None:
                uris.append(None)
                continue
            key = "images/" + os.path.basename(u)
            if os.path.exists(u):
                fs.put(u, f"dumps/{key}")
            uris.append(f"s3://dumps/{key}")
        t = t.set_column(t.schema.get_field_index("uri"), "uri", __import__("pyarrow").array(uris))
        with fs.open(f"dumps/dump/{part.parent.name}/part-00000.parquet", "wb") as f:
            pq.write_table(t, f)

    cfg = fast_config("s3://dumps/dump/", "s3://lake/emotions",
                      input={"path": "s3://dumps/dump/", "storage_options": opts},
                      output={"path": "s3://lake/emotions", "storage_options": opts})
    row = run_job_in_process(spark, cfg)
    n_unique = info["images"] + info["bad"]
    assert row["n_scored"] == n_unique

    from deltalake import DeltaTable

    from jobs.campaign.lake import delta_options

    dopts = delta_options(opts)
    images = DeltaTable("s3://lake/emotions/images", storage_options=dopts).to_pandas()
    assert len(images) == n_unique and images.image_id.is_unique
    status = dict(zip(images.image_id, images.status))
    assert status["bad-missing-uri"] == "fetch_error" and status["bad-null-cell"] == "empty"
    assert status["bad-truncated"] == "decode_error" and status["bad-huge-dimensions"] == "too_large"
    assert images.source.str.startswith("s3://dumps/images/").sum() >= info["images"]
    faces = DeltaTable("s3://lake/emotions/faces", storage_options=dopts).to_pandas()
    assert len(faces) == images.n_faces.sum()
    camps = DeltaTable("s3://lake/emotions/campaigns", storage_options=dopts).to_pandas()
    assert camps.n_images.sum() == n_unique
    assert len(DeltaTable("s3://lake/emotions/runs", storage_options=dopts).to_pandas()) == 1

    # dashboards next to the tables on S3: rendered locally, uploaded; a stale page is removed
    from dashboards.paths import campaign_page_name
    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import render

    job_cfg = job_config_from_dict({**cfg, "output": {**cfg["output"], "dashboards": True}})
    gone = campaign_page_name("a-campaign-deleted-since")
    fs.pipe(f"lake/emotions/dashboards/{gone}", b"<html>old</html>")
    fs.pipe("lake/emotions/dashboards/campaign-notes.html", b"a user's own file")
    assert render(job_cfg) == "s3://lake/emotions/dashboards/index.html"
    fs.invalidate_cache()
    names = {p.rsplit("/", 1)[-1] for p in fs.ls("lake/emotions/dashboards")}
    assert {"index.html", "plotly.min.js", "dashboard.css", "dashboard.js"} <= names
    assert {campaign_page_name(c) for c in camps.campaign_id} <= names
    assert gone not in names and "campaign-notes.html" in names
    index = fs.cat("lake/emotions/dashboards/index.html").decode()
    assert all(campaign_page_name(c) in index for c in camps.campaign_id)
    # the next render starts from the uploaded site and its caches: only what changed goes up again
    n_files = len(fs.find("lake/emotions/dashboards"))
    capsys.readouterr()
    render(job_cfg)
    summary = capsys.readouterr().err
    uploaded = int(re.search(r"dashboards: (\d+) file\(s\) uploaded, 0 removed", summary).group(1))
    assert uploaded <= 3 < n_files  # index.html and the pages' fingerprint file: the render time only
    fs.invalidate_cache()
    assert len(fs.find("lake/emotions/dashboards")) == n_files

    # erasure on an S3 lake: rows and their files go, the tombstone stays
    from jobs.erase import main as erase_main

    gone_image = images[images.status == "ok"].image_id.iloc[0]
    options = [f"--storage-option={k}={v}" for k, v in opts.items()]
    assert erase_main(["--lake", "s3://lake/emotions", "--image", gone_image, "--reason", "test", *options]) == 0
    left = DeltaTable("s3://lake/emotions/images", storage_options=dopts).to_pandas()
    assert gone_image not in set(left.image_id) and len(left) == n_unique - 1
    fs.invalidate_cache()
    for path in fs.find("lake/emotions/images"):
        if path.endswith(".parquet"):
            with fs.open(path, "rb") as f:
                assert gone_image not in pq.read_table(f, columns=["image_id"]).column("image_id").to_pylist()
    tomb = DeltaTable("s3://lake/emotions/erasures", storage_options=dopts).to_pandas()
    assert list(tomb.id) == [gone_image]


def test_s3_image_folders(spark, s3_endpoint, tmp_path):  # noqa: F811
    """s3:// image folders: listed on the driver with the any-case image filter (a phone's IMG_0001.HEIC and
    .JPG kept, a stray text file named in the output), fetched on the executors' threads, written locally."""
    import io
    from pathlib import Path

    import boto3
    import s3fs
    from PIL import Image

    from tests._spark import read_table

    opts = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="photos")
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_endpoint})
    info = make_dump(tmp_path / "f", n_images=3, days=1, mode="folders", bad=False, seed=6)
    originals = sorted(Path(info["dump"]).rglob("*.jpg"))
    for src in originals:
        fs.put(str(src), f"photos/{src.relative_to(info['dump']).as_posix()}")
    buf = io.BytesIO()
    Image.open(originals[0]).save(buf, "HEIF", quality=95)
    fs.pipe("photos/campaign_id=phone/IMG_0001.HEIC", buf.getvalue())
    fs.pipe("photos/campaign_id=phone/IMG_0002.JPG", originals[1].read_bytes())
    fs.pipe("photos/campaign_id=phone/readme.txt", b"shot list")

    cfg = fast_config("s3://photos/", tmp_path / "lake",
                      input={"format": "folders", "path": "s3://photos/", "storage_options": opts,
                             "extra_columns": [], "fetch_threads": 4})
    row = run_job_in_process(spark, cfg)
    assert row["n_input"] == 5 and row["n_scored"] == 5
    assert "1 of 6 files under s3://photos/ left out" in row["_log"] and "readme.txt" in row["_log"]
    images = read_table(f"{tmp_path}/lake/images")
    by_name = {Path(s).name: r for s, r in zip(images.source, images.itertuples())}
    assert set(images.source.str[:13]) == {"s3://photos/c"}
    for copy, original in (("IMG_0001.HEIC", originals[0].name), ("IMG_0002.JPG", originals[1].name)):
        a, b = by_name[copy], by_name[original]
        assert a.status == b.status and (a.width, a.height, a.n_faces) == (b.width, b.height, b.n_faces)
        assert a.campaign_id == "phone"
    assert (images.status == "ok").sum() >= 1


def test_s3_uri_policy_two_buckets_and_no_secret_in_the_lake(spark, s3_endpoint, tmp_path):  # noqa: F811
    """A dump in one bucket may point into its own bucket; another bucket only where uri_allow lists a
    prefix. The credentials given in storage_options appear in no table file and no error."""
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs

    key_id, secret = "AKIAPOLICYTEST4242", "policy-secret-value-4242"
    opts = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for bucket in ("brand-dumps", "agency-media", "policy-lake"):
        s3.create_bucket(Bucket=bucket)
    fs = s3fs.S3FileSystem(key=key_id, secret=secret, client_kwargs={"endpoint_url": s3_endpoint})
    photo = make_dump(tmp_path / "p", n_images=1, days=1, mode="folders", bad=False, seed=3)
    jpeg = next(__import__("pathlib").Path(photo["dump"]).rglob("*.jpg")).read_bytes()
    for path in ("brand-dumps/media/own.jpg", "agency-media/shared/listed.jpg", "agency-media/private/unlisted.jpg"):
        fs.pipe(path, jpeg)
    uris = {"own": "s3://brand-dumps/media/own.jpg", "listed": "s3://agency-media/shared/listed.jpg",
            "unlisted": "s3://agency-media/private/unlisted.jpg", "missing": "s3://brand-dumps/media/gone.jpg"}
    with fs.open("brand-dumps/dump/part-0.parquet", "wb") as f:
        pq.write_table(pa.table({"image_id": list(uris), "campaign_id": ["c"] * 4, "uri": list(uris.values())}), f)

    def run(allow, run_id):
        cfg = fast_config("s3://brand-dumps/dump/", "s3://policy-lake/l",
                          input={"storage_options": opts, "extra_columns": [], "uri_allow": allow},
                          output={"storage_options": opts})
        run_job_in_process(spark, cfg, run_id=run_id)
        from deltalake import DeltaTable

        from jobs.campaign.lake import delta_options

        return DeltaTable("s3://policy-lake/l/images", storage_options=delta_options(opts)).to_pandas().set_index(
            "image_id")

    images = run([], "own-bucket-only")
    assert images.loc["own", "status"] in ("ok", "no_face")
    for image_id in ("listed", "unlisted"):
        assert images.loc[image_id, "status"] == "fetch_error"
        assert images.loc[image_id, "error"].startswith("refused by input.uri_allow")
    assert images.loc["missing", "status"] == "fetch_error"
    assert not images.loc["missing", "error"].startswith("refused")
    images = run(["s3://agency-media/shared/"], "agency-listed")
    assert images.loc["listed", "status"] in ("ok", "no_face")
    assert images.loc["unlisted", "error"].startswith("refused by input.uri_allow")
    fs.invalidate_cache()
    lake_bytes = b"".join(fs.cat(p) for p in fs.find("policy-lake/l"))
    assert key_id.encode() not in lake_bytes and secret.encode() not in lake_bytes
    assert all(secret not in (e or "") and key_id not in (e or "") for e in images.error)
