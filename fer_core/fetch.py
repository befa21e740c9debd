"""Fetch an image URI that came from an untrusted dump, only where the dump may point.

A dump's ``uri`` column is data from outside (a scraper, an agency, a vendor). Without a policy an
executor would read any fsspec URL it holds: the cloud's credential endpoint
(``http://169.254.169.254/...``), ``file:///etc/passwd``, or ``../../other-team/photo.png``. So every URI
is checked by ``UriPolicy`` BEFORE any file system or socket is touched:

* local paths (plain, relative or ``file://``) are resolved (symlinks included) and must lie under an
  allowed folder; by default the dump's own folder, and a relative path resolves against it;
* object-store URIs (``s3://``, ``gs://``, ...) must start with an allowed prefix; by default the dump's
  own bucket when the dump itself is in one; ``.``/``..`` segments are refused;
* ``http(s)://`` is refused unless a prefix is listed, and then the host must resolve only to public
  addresses (no loopback, link-local / cloud metadata, private, CGNAT, multicast or reserved ranges).
  The connection goes to the address that was checked (no second DNS lookup to rebind), and
  redirects are not followed.

A refused URI raises ``UriRefusedError`` (status ``fetch_error``) naming the rule. Errors never quote
fetched bytes, and ``fer_core.storage.redact`` keeps credentials out of them.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from fer_core.errors import FetchError, ImageTooLargeError, UriRefusedError
from fer_core.storage import fsspec_options, redact

__all__ = ["UriPolicy", "ResolvedUri", "fetch_uri", "safe_uri", "refused_prefix", "REFUSED_PREFIX"]

REFUSED_PREFIX = "refused by input.uri_allow"
"""Start of every policy refusal's message: how the job tells a refusal from a fetch that failed."""

_LOCAL_SCHEMES = ("", "file")
_HTTP_SCHEMES = ("http", "https")


def safe_uri(uri: str, limit: int = 160) -> str:
    """A URI fit for an error message: no user:password@, no query string (signed URLs carry keys there)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return repr(uri[:limit])
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path
    if parts.query:
        shown += "?<query hidden>"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def refused_prefix(fingerprint: str) -> str:
    """How every refusal by the policy with this fingerprint starts (the job keys its retries on it)."""
    return f"{REFUSED_PREFIX} (policy {fingerprint}): "


def _norm_prefix(prefix: str) -> str:
    """An allowed prefix without its trailing slash; scheme and host in lower case."""
    parts = urlsplit(prefix)
    if parts.scheme.lower() in _LOCAL_SCHEMES:
        path = unquote(parts.path) if parts.scheme else prefix
        return os.path.realpath(path)
    netloc = parts.netloc.lower() if parts.scheme.lower() in _HTTP_SCHEMES else parts.netloc
    return f"{parts.scheme.lower()}://{netloc}{parts.path}".rstrip("/")


def _under(target: str, prefix: str, sep: str = "/") -> bool:
    return target == prefix or target.startswith(prefix.rstrip(sep) + sep)


@dataclass(frozen=True)
class ResolvedUri:
    """Where a URI that passed the policy will be read: a local real path, an http(s) URL pinned to the
    address that was checked, or an fsspec URI."""

    kind: Literal["local", "http", "fsspec"]
    target: str
    address: str | None = None


@dataclass(frozen=True)
class UriPolicy:
    """Which URIs a dump may make the job read (see the module doc). Picklable: it rides to executors.

    local_roots: real paths of allowed folders; remote_prefixes: allowed ``scheme://...`` prefixes
    (http(s) ones included); base_dir: the folder relative paths resolve against (None: refused);
    allow_private_hosts: let listed http(s) prefixes reach loopback/private addresses (tests,
    on-premise media servers); off by default.
    """

    local_roots: tuple[str, ...] = ()
    remote_prefixes: tuple[str, ...] = ()
    base_dir: str | None = None
    allow_private_hosts: bool = False
    resolver: Any = field(default=None, compare=False, repr=False)  # tests: (host, port) -> [addresses]

    @classmethod
    def for_dump(cls, dump_root: str, allow: list[str] | tuple[str, ...] = (), *,
                 allow_private_hosts: bool = False) -> "UriPolicy":
        """The policy of one dump: its own root (its folder, or its bucket for s3://...) plus ``allow``."""
        local: list[str] = []
        remote: list[str] = []
        root = urlsplit(dump_root)
        base: str | None = None
        if root.scheme.lower() in _LOCAL_SCHEMES:
            base = _norm_prefix(dump_root)
            local.append(base)
        else:
            remote.append(f"{root.scheme.lower()}://{root.netloc}")  # the dump's bucket
        for prefix in allow:
            (local if urlsplit(prefix).scheme.lower() in _LOCAL_SCHEMES else remote).append(_norm_prefix(prefix))
        return cls(tuple(dict.fromkeys(local)), tuple(dict.fromkeys(remote)), base, allow_private_hosts)

    @property
    def fingerprint(self) -> str:
        """Short hash of what the policy allows: a refused row is retried only once the policy changed."""
        import hashlib

        key = repr((self.local_roots, self.remote_prefixes, self.allow_private_hosts))
        return hashlib.sha256(key.encode()).hexdigest()[:8]

    def _refuse(self, uri: str, why: str) -> UriRefusedError:
        return UriRefusedError(f"{refused_prefix(self.fingerprint)}{safe_uri(uri)} {why}")

    def describe(self) -> str:
        """One line for the run's console: what URIs may be read."""
        allowed = [*self.local_roots, *self.remote_prefixes]
        http = " (http(s) to private addresses allowed)" if self.allow_private_hosts else ""
        return "URIs may point under: " + (", ".join(allowed) if allowed else "nothing") + http

    def check(self, uri: Any) -> ResolvedUri:
        """Where ``uri`` may be read, or UriRefusedError naming the rule it broke. Touches no network for
        local and object-store URIs; for http(s) it resolves the host name (DNS) and checks every address."""
        if not isinstance(uri, str) or not uri.strip():
            raise FetchError("image URI is null or empty; the dump row has no image to fetch")
        if "\x00" in uri or any(ord(c) < 0x20 for c in uri):
            raise self._refuse(uri, "holds control characters")
        try:
            parts = urlsplit(uri)
        except ValueError:
            raise self._refuse(uri, "is not a valid URI") from None
        scheme = parts.scheme.lower()
        if scheme in _LOCAL_SCHEMES:
            return self._check_local(uri, parts)
        if "@" in parts.netloc:
            raise self._refuse(uri, "carries credentials (user@host); give credentials in storage_options instead")
        path_segments = unquote(parts.path).split("/")
        if any(seg in (".", "..") for seg in path_segments):
            raise self._refuse(uri, "has '.' or '..' path segments")
        normal = f"{scheme}://{parts.netloc.lower() if scheme in _HTTP_SCHEMES else parts.netloc}{parts.path}"
        if not any(_under(normal, p) for p in self.remote_prefixes):
            hint = ("http(s) is off unless listed" if scheme in _HTTP_SCHEMES else
                    f"only {', '.join(self.remote_prefixes) or 'the dump folder'} may be read")
            raise self._refuse(uri, f"is outside the allowed prefixes ({hint}; add a prefix to input.uri_allow)")
        if scheme in _HTTP_SCHEMES:
            return ResolvedUri("http", uri, self._public_address(uri, parts))
        return ResolvedUri("fsspec", uri)

    def _check_local(self, uri: str, parts) -> ResolvedUri:
        if parts.scheme:
            if parts.netloc not in ("", "localhost"):
                raise self._refuse(uri, "names another host in a file:// URI")
            path = unquote(parts.path)
        else:
            path = uri
        if not os.path.isabs(path):
            if self.base_dir is None:
                raise self._refuse(uri, "is a relative path, and the dump is not in a local folder it could resolve in")
            path = os.path.join(self.base_dir, path)
        real = os.path.realpath(path)  # symlinks that point out of the root count as out of it
        if not any(_under(real, root, os.sep) for root in self.local_roots):
            raise self._refuse(uri, "resolves outside the dump's folder (symlinks and '..' included); "
                               "add its folder to input.uri_allow to allow it")
        return ResolvedUri("local", real)

    def _public_address(self, uri: str, parts) -> str:
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            raise self._refuse(uri, "has an invalid port") from None
        try:
            resolve = self.resolver or _resolve
            addresses = resolve(host, port)
        except OSError as e:
            raise FetchError(f"cannot resolve the host of {safe_uri(uri)} ({type(e).__name__})") from None
        if not addresses:
            raise FetchError(f"the host of {safe_uri(uri)} resolves to no address")
        if not self.allow_private_hosts:
            for a in addresses:
                ip = ipaddress.ip_address(a.split("%", 1)[0])
                if not ip.is_global or ip.is_multicast:
                    raise self._refuse(uri, f"resolves to a non-public address ({_range_name(ip)}); only public hosts "
                                       "may be fetched (input.uri_allow_private_hosts allows them)")
        return addresses[0]


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _range_name(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for attr, name in (("is_loopback", "loopback"), ("is_link_local", "link-local / cloud metadata"),
                       ("is_private", "private"), ("is_multicast", "multicast"), ("is_reserved", "reserved"),
                       ("is_unspecified", "unspecified")):
        if getattr(ip, attr):
            return name
    return "not globally routable"


def fetch_uri(uri: Any, policy: UriPolicy, storage_options: dict[str, Any] | None, limit: int, *,
              timeout_s: float = 30.0) -> bytes:
    """The bytes of one image URI, at most ``limit`` (else ImageTooLargeError), after ``policy.check``.

    Raises UriRefusedError / FetchError / ImageTooLargeError, whose messages name the URI without its
    query or user info, and never quote what was read or a credential.
    """
    resolved = policy.check(uri)
    shown = safe_uri(uri)
    try:
        if resolved.kind == "local":
            with open(resolved.target, "rb") as f:
                data = f.read(limit + 1)
        elif resolved.kind == "http":
            data = _http_get(resolved, limit, timeout_s)
        else:
            import fsspec

            fs, _, (path,) = fsspec.get_fs_token_paths(uri, storage_options=fsspec_options(uri, storage_options))
            data = fs.cat_file(path, start=0, end=limit + 1)  # one ranged GET (open() first asks for the size)
    except (FetchError, ImageTooLargeError):
        raise
    except Exception as e:  # fsspec raises FileNotFoundError, PermissionError, botocore errors, ...
        detail = redact(str(e), storage_options)[:200]
        raise FetchError(f"cannot fetch {shown}: {type(e).__name__}: {detail}") from None
    if len(data) > limit:
        raise ImageTooLargeError(f"{shown} is larger than max_bytes={limit} bytes; not read")
    return data


def _http_get(resolved: ResolvedUri, limit: int, timeout_s: float) -> bytes:
    """GET to the checked address with the URL's Host (and TLS name); no redirects, at most limit+1 bytes."""
    import urllib3

    parts = urlsplit(resolved.target)
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    host = parts.hostname or ""
    address = resolved.address or host
    timeout = urllib3.Timeout(connect=min(10.0, timeout_s), read=timeout_s)
    if https:
        import certifi

        pool: Any = urllib3.HTTPSConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1,
                                                server_hostname=host, assert_hostname=host,
                                                cert_reqs="CERT_REQUIRED", ca_certs=certifi.where())
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Range": f"bytes=0-{limit}",
               "User-Agent": "campaign-emotion/fetch", "Accept": "image/*,video/*,*/*;q=0.5"}
    try:
        response = pool.urlopen("GET", target, headers=headers, redirect=False, retries=False,
                                preload_content=False)
        try:
            if 300 <= response.status < 400:
                raise FetchError(f"cannot fetch {safe_uri(resolved.target)}: HTTP {response.status} redirect, "
                                 "not followed (a redirect could lead anywhere; list the final URL instead)")
            if response.status not in (200, 206):
                raise FetchError(f"cannot fetch {safe_uri(resolved.target)}: HTTP {response.status}")
            data = response.read(limit + 1)
        finally:
            response.release_conn()
    finally:
        pool.close()
    return data

