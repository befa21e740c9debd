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


def _s3(endpoint: str, monkeypatch, bucket: str):
    """(delta-rs style storage options, boto3 client) with only the options as credentials."""
    import boto3

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    return opts, s3


def test_render_from_s3(s3_endpoint, tmp_path, monkeypatch):
    opts, s3 = _s3(s3_endpoint, monkeypatch, "campaigns")
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


def test_gradcam_for_a_model_file_on_s3(s3_endpoint, tmp_path, monkeypatch):
    """A model the job read from s3:// is found by the dashboards with the tables' storage options
    (translated for s3fs): the CLI's --model resolves its version and Grad-CAM loads it."""
    import numpy as np

    from dashboards.__main__ import _model_versions
    from dashboards.explain import Explainer
    from fer_core.lab.architectures import build_model
    from fer_core.models.registry import model_version

    opts, s3 = _s3(s3_endpoint, monkeypatch, "models")
    local = tmp_path / "campaign-model.keras"
    build_model("vgg", (48, 48, 1), widths=(4, 8), dense=0).save(local)
    s3.upload_file(str(local), "models", "emotion/campaign-model.keras")
    uri = "s3://models/emotion/campaign-model.keras"

    versions = _model_versions([uri], opts)
    assert versions == {model_version(str(local)): uri}  # same bytes, same version as the local copy
    version = next(iter(versions))
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    face = {"x": 40, "y": 20, "w": 60, "h": 70, "det_score": 0.9, "landmarks": None}
    overlays, caveat = Explainer(versions, opts).overlays(image, [face], version)
    assert len(overlays) == 1 and overlays[0].shape[2] == 3 and caveat is None
