"""Tables and images on S3 (a moto server on 127.0.0.1): the same storage options reach the Delta
reader and, translated for s3fs, the thumbnail reader."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import _dash_fixtures as fx
from dashboards.paths import campaign_page_name
from dashboards.render import render_dashboards

pytestmark = [pytest.mark.slow, pytest.mark.s3]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto in its own process: deltalake's metadata calls hold the GIL, so an in-process
    (threaded) server would never get to answer them."""
    pytest.importorskip("moto.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the moto S3 server did not start within 60 s")
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_render_from_s3(s3_endpoint, tmp_path, monkeypatch):
    import boto3

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    opts = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket="campaigns")
    specs = fx.DEFAULT_CAMPAIGNS[:1]
    images, faces, _, runs = fx.build_tables(specs, tmp_path / "images")
    for i, source in enumerate(images["source"]):
        path = Path(source)
        if path.is_file():
            s3.upload_file(str(path), "campaigns", f"dump/{path.name}")
        images["source"][i] = f"s3://campaigns/dump/{path.name}"
    fx.write_lake("s3://campaigns/lake", images, faces, runs, storage_options=opts)
    out = tmp_path / "site"
    render_dashboards("s3://campaigns/lake", str(out), storage_options=opts, gradcam=False, max_gallery=2)
    html = (out / campaign_page_name(specs[0].campaign_id)).read_text(encoding="utf-8")
    thumbs = re.findall(r'<img class="thumb" src="([^"]+)"', html)
    assert len(thumbs) == 4 and all((out / t).is_file() for t in thumbs)
    assert "No thumbnail" not in html
