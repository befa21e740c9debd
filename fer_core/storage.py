"""Storage options for fsspec, from the one mapping users write for deltalake.

The job, the lake and the dashboards take a single ``storage_options`` mapping in delta-rs's
spelling (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) because the Delta tables need it; fsspec/s3fs
spell the same settings differently. Translating in one place keeps every reader and writer
(inputs, Parquet parts, manifests, thumbnails, model files) pointed at the same endpoint.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

S3_PROTOCOLS = ("s3", "s3a")
_S3_KEYS = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
_S3_CLIENT_KEYS = {"AWS_ENDPOINT_URL": "endpoint_url", "AWS_ENDPOINT": "endpoint_url", "AWS_REGION": "region_name",
                   "AWS_DEFAULT_REGION": "region_name"}


def protocol(uri: str) -> str:
    """'s3' for s3://bucket/key, 'file' for local paths and file:// URIs."""
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def fsspec_options(uri: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """fsspec keyword arguments for ``uri``.

    Local paths get {}. For s3:// the AWS_* keys become s3fs's (key, secret, token,
    client_kwargs.endpoint_url/region_name) and other AWS_* keys, deltalake-only switches such as
    AWS_ALLOW_HTTP, are dropped. Keys without the AWS_ prefix pass through as fsspec keywords (for
    other filesystems, or options already in fsspec's spelling), so translating twice changes nothing.
    """
    proto = protocol(uri)
    if proto == "file":
        return {}
    out: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in (storage_options or {}).items():
        upper = key.upper()
        if not upper.startswith("AWS_"):
            out[key] = value
        elif proto in S3_PROTOCOLS and upper in _S3_KEYS:
            out[_S3_KEYS[upper]] = value
        elif proto in S3_PROTOCOLS and upper in _S3_CLIENT_KEYS:
            client[_S3_CLIENT_KEYS[upper]] = value
    if client:
        out["client_kwargs"] = {**out.get("client_kwargs", {}), **client}
    return out


_SECRET_QUERY = re.compile(r"(?i)([?&](?:x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig|token|"
                           r"access_token|key|apikey|api_key|password)=)[^&#\s'\"]+")
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")
_MIN_SECRET_LEN = 4  # shorter values ("us", "true") are not secrets and would mangle every message


def secret_values(storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Values that must never be printed: every storage option's value and every AWS_* variable's.

    Option names do not matter (an endpoint can carry a token too); values shorter than four characters
    are kept, since flags such as "true" would otherwise be blanked everywhere they appear.
    """
    values = [str(v) for v in (storage_options or {}).values() if not isinstance(v, (dict, bool))]
    for v in (storage_options or {}).values():
        if isinstance(v, dict):  # client_kwargs
            values += [str(x) for x in v.values()]
    values += [v for k, v in os.environ.items() if k.upper().startswith("AWS_")]
    return sorted({v for v in values if len(v) >= _MIN_SECRET_LEN and v.lower() not in ("true", "false")},
                  key=len, reverse=True)


def redact(text: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """``text`` with credentials blanked: storage-option and AWS_* values, user:password@ in URLs, and
    the signature/token parameters of signed URLs. For every error, log line and config echo."""
    for value in secret_values(storage_options):
        text = text.replace(value, "***")
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_QUERY.sub(r"\1***", text)


def redact_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A storage_options mapping fit to print: its keys with every value replaced by ***."""
    return {k: "***" for k in (storage_options or {})}
