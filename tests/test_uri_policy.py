"""URIs from a dump are untrusted: only where the dump may point is read, and nothing read leaks out.

Real parts: a local HTTP server that counts every request (it must stay at 0 for refused URIs), real
symlinks and files outside the dump, a real Spark run writing real Delta tables and dashboards that are
then searched for the content that must never appear; and moto's S3 server with two buckets.
"""
from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

from fer_core.errors import FetchError, UriRefusedError
from fer_core.fetch import UriPolicy, fetch_uri
from tests._spark import fast_config, read_table, run_job_in_process, spark  # noqa: F401

SECRET_FILE_TEXT = b"root:x:0:0:root:/root:/bin/bash\nSECRET-CONTENT-4242\n"
METADATA_BODY = b'{"AccessKeyId": "ASIAFAKEKEY4242", "SecretAccessKey": "fake-secret-4242"}'


class CountingServer:
    """http.server on 127.0.0.1 that records every request's path and Host header."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                owner.requests.append((self.path, self.headers.get("Host", "")))
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{owner.port}/latest/meta-data/")
                    self.end_headers()
                    return
                body = METADATA_BODY if "meta-data" in self.path else _jpeg()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    s = CountingServer()
    yield s
    s.close()


def _jpeg() -> bytes:
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((32, 48, 3), 127, np.uint8))
    return buf.tobytes()


@pytest.fixture
def layout(tmp_path):
    """dump/ with a good image, a text file and a symlink out; other/ (outside) with an image and a secret."""
    dump, other = tmp_path / "dump", tmp_path / "other"
    (dump / "media").mkdir(parents=True)
    other.mkdir()
    (dump / "media" / "good.jpg").write_bytes(_jpeg())
    (dump / "media" / "notes.txt").write_bytes(SECRET_FILE_TEXT)
    (other / "photo.jpg").write_bytes(_jpeg())
    (other / "passwd").write_bytes(SECRET_FILE_TEXT)
    os.symlink(other / "photo.jpg", dump / "media" / "link-out.jpg")
    os.symlink(dump / "media" / "good.jpg", dump / "media" / "link-in.jpg")
    return dump, other


# ---------------------------------------------------------------- the policy alone (no Spark)


def test_local_paths_stay_under_the_dump(layout):
    dump, other = layout
    policy = UriPolicy.for_dump(str(dump))
    assert policy.check(str(dump / "media" / "good.jpg")).target == str(dump / "media" / "good.jpg")
    assert policy.check("media/good.jpg").target == str(dump / "media" / "good.jpg")  # relative: against the dump
    assert policy.check(f"file://{dump}/media/good.jpg").kind == "local"
    assert policy.check(str(dump / "media" / "link-in.jpg")).kind == "local"  # a symlink that stays inside
    for uri in (str(other / "photo.jpg"), "../other/photo.jpg", "media/../../other/passwd", f"file://{other}/passwd",
                "file:///etc/passwd", "/etc/passwd", str(dump / "media" / "link-out.jpg"),
                f"file://otherhost{dump}/media/good.jpg", str(dump) + "-sibling/x.jpg"):
        with pytest.raises(UriRefusedError, match=r"^refused by input\.uri_allow \(policy [0-9a-f]{8}\): "):
            policy.check(uri)
    widened = UriPolicy.for_dump(str(dump), [f"file://{other}/"])
    assert widened.check(str(other / "photo.jpg")).kind == "local"
    assert widened.fingerprint != policy.fingerprint


def test_object_stores_and_http_need_a_listed_prefix():
    policy = UriPolicy.for_dump("s3://brand/dumps/2026/", ["s3://media-bucket/campaigns/", "https://cdn.example.com/img"])
    assert policy.check("s3://brand/anything/x.jpg").kind == "fsspec"  # the dump's own bucket
    assert policy.check("s3://media-bucket/campaigns/a/x.jpg").kind == "fsspec"
    for uri in ("s3://media-bucket/other/x.jpg", "s3://media-bucket/campaigns-evil/x.jpg", "s3://evil/x.jpg",
                "s3://media-bucket/campaigns/../secret/x.jpg", "gs://brand/x.jpg", "http://cdn.example.com/img/x.jpg",
                "https://cdn.example.com/imgs/x.jpg", "https://user:pw@cdn.example.com/img/x.jpg",
                "media/x.jpg", "ftp://brand/x.jpg"):
        with pytest.raises(UriRefusedError):
            policy.check(uri)


@pytest.mark.parametrize("address,what", [
    ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("10.1.2.3", "private"),
    ("192.168.0.7", "private"), ("100.100.100.200", "not globally routable"), ("::1", "loopback"),
    ("fd00:ec2::254", "private"), ("fe80::1", "link-local"), ("0.0.0.0", "")])
def test_http_hosts_must_resolve_to_public_addresses(address, what):
    policy = UriPolicy(remote_prefixes=("https://cdn.example.com",), resolver=lambda host, port: [address])
    with pytest.raises(UriRefusedError, match=f"non-public address.*{what}"):
        policy.check("https://cdn.example.com/x.jpg")
    public = UriPolicy(remote_prefixes=("https://cdn.example.com",), resolver=lambda host, port: ["93.184.216.34"])
    assert public.check("https://cdn.example.com/x.jpg").address == "93.184.216.34"  # checked, not fetched


def test_refused_http_never_reaches_the_server_and_allowed_http_is_pinned(server, tmp_path):
    base = f"http://127.0.0.1:{server.port}"
    dump = str(tmp_path)
    # not listed; listed but loopback; a name that resolves to loopback: all refused, 0 requests
    for policy in (UriPolicy.for_dump(dump), UriPolicy.for_dump(dump, [base + "/"]),
                   UriPolicy(remote_prefixes=("http://media.test",), resolver=lambda h, p: ["127.0.0.1"])):
        for uri in (f"{base}/latest/meta-data/iam/security-credentials/", f"http://media.test:{server.port}/x.jpg"):
            with pytest.raises(UriRefusedError):
                fetch_uri(uri, policy, {}, 1 << 20)
    assert server.requests == []
    # opted in to private hosts: fetched once, at the checked address, with the URL's own Host header
    pinned = UriPolicy(remote_prefixes=(f"http://media.test:{server.port}",), allow_private_hosts=True,
                       resolver=lambda h, p: ["127.0.0.1"])
    assert fetch_uri(f"http://media.test:{server.port}/a.jpg?sig=abc", pinned, {}, 1 << 20) == _jpeg()
    assert server.requests == [("/a.jpg?sig=abc", f"media.test:{server.port}")]
    # redirects are not followed (the Location points at the metadata path: never requested)
    opened = UriPolicy.for_dump(dump, [base + "/"], allow_private_hosts=True)
    with pytest.raises(FetchError, match="HTTP 302 redirect, not followed") as e:
        fetch_uri(f"{base}/redirect?X-Amz-Signature=s3cr3t", opened, {}, 1 << 20)
    assert "s3cr3t" not in str(e.value) and "<query hidden>" in str(e.value)
    assert [p for p, _ in server.requests] == ["/a.jpg?sig=abc", "/redirect?X-Amz-Signature=s3cr3t"]


def test_errors_never_carry_content_or_credentials(layout, monkeypatch):
    from fer_core.decode import decode_image
    from fer_core.errors import DecodeError

    dump, _ = layout
    with pytest.raises(DecodeError) as e:
        decode_image(SECRET_FILE_TEXT)
    assert "root:x" not in str(e.value) and "SECRET" not in str(e.value)
    assert f"text or HTML (an error page or a wrong column?), {len(SECRET_FILE_TEXT):,} bytes" in str(e.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value-77")
    policy = UriPolicy.for_dump("s3://dumps/x/")
    opts = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "key-id-value-88",
            "AWS_SECRET_ACCESS_KEY": "env-secret-value-77"}
    with pytest.raises(FetchError) as e:  # nothing listens on port 9: botocore's error names the endpoint
        fetch_uri("s3://dumps/x/a.jpg", policy, opts, 1 << 20, timeout_s=2)
    for secret in ("env-secret-value-77", "key-id-value-88", "127.0.0.1:9"):
        assert secret not in str(e.value)


# ---------------------------------------------------------------- a real run


def _all_text_under(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(900)
def test_a_hostile_dump_reads_nothing_outside_and_leaks_nothing(spark, layout, server, tmp_path):  # noqa: F811
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import render

    dump, other = layout
    base = f"http://127.0.0.1:{server.port}"
    uris = {
        "metadata": f"{base}/latest/meta-data/iam/security-credentials/",
        "passwd": "file:///etc/passwd",
        "other-secret": str(other / "passwd"),
        "absolute-out": str(other / "photo.jpg"),
        "relative-out": "../other/photo.jpg",
        "symlink-out": str(dump / "media" / "link-out.jpg"),
        "s3-elsewhere": "s3://someone-elses-bucket/photo.jpg",
        "text-inside": "media/notes.txt",
        "good-relative": "media/good.jpg",
        "good-absolute": str(dump / "media" / "good.jpg"),
    }
    pq.write_table(pa.table({"image_id": list(uris), "campaign_id": ["c"] * len(uris), "uri": list(uris.values())}),
                   dump / "part-0.parquet")
    lake = tmp_path / "lake"
    cfg = fast_config(str(dump), str(lake), input={"extra_columns": []},
                      output={"dashboards": True, "dashboards_path": str(tmp_path / "site")})
    row = run_job_in_process(spark, cfg, run_id="hostile")
    assert server.requests == []  # not one request reached the server
    images = read_table(str(lake / "images")).set_index("image_id")
    assert len(images) == len(uris)  # nothing lost: one row per input row
    for image_id in ("metadata", "passwd", "other-secret", "absolute-out", "relative-out", "symlink-out",
                     "s3-elsewhere"):
        assert images.loc[image_id, "status"] == "fetch_error", image_id
        assert images.loc[image_id, "error"].startswith("refused by input.uri_allow"), images.loc[image_id, "error"]
    assert images.loc["text-inside", "status"] == "decode_error"
    assert "text or HTML" in images.loc["text-inside", "error"]
    assert set(images.loc[["good-relative", "good-absolute"], "status"]) <= {"ok", "no_face"}
    assert row["n_fetch_error"] == 7

    index = render(job_config_from_dict(cfg))
    assert Path(index).is_file()
    everything = _all_text_under(lake) + _all_text_under(tmp_path / "site") + row["_log"].encode()
    for needle in (b"root:x:0:0", b"SECRET-CONTENT-4242", b"AccessKeyId", b"ASIAFAKEKEY4242"):
        assert needle not in everything, needle

    # the same policy refuses the same URIs again: they are not retried run after run
    again = run_job_in_process(spark, cfg, run_id="again")
    assert again["n_scored"] == 0 and "earlier fetch errors retried" not in again["_log"]
    # a widened policy retries them once: the outside photo is now read
    wider = fast_config(str(dump), str(lake), input={"extra_columns": [], "uri_allow": [str(other)]},
                        output={"dashboards": False})
    widened = run_job_in_process(spark, wider, run_id="widened")
    assert "7 earlier fetch errors retried" in widened["_log"]
    images = read_table(str(lake / "images")).set_index("image_id")
    assert images.index.is_unique and len(images) == len(uris)
    assert set(images.loc[["absolute-out", "relative-out", "symlink-out"], "status"]) <= {"ok", "no_face"}
    assert images.loc["other-secret", "status"] == "decode_error"  # read now, but its text never quoted
    assert images.loc["metadata", "status"] == "fetch_error" and server.requests == []
    assert b"SECRET-CONTENT-4242" not in _all_text_under(lake)
