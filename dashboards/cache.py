"""What a re-render may keep from the last one in the same output folder: gallery files and pages.

Most of a render's time goes to the gallery (read, decode, downscale each picked image; Grad-CAM per
face) and most runs touch few campaigns, so both are kept across renders:

* :class:`GalleryCache`: ``thumbs/manifest.json`` records, per gallery asset (one image under one
  scoring identity: :func:`dashboards.paths.gallery_asset_base`), the fingerprint of everything its files
  were drawn from (source, size, face rows, blur, Grad-CAM on/off and model) and what was made (a
  thumbnail, N overlays, the Grad-CAM note). A pick whose fingerprint is unchanged is not loaded again.
  Files of this render's picks are kept; every other file in the folder is deleted (picks that left the
  gallery, erased campaigns, files drawn unblurred before a ``blur_faces`` render).
* :class:`PageFingerprints`: ``.page-fingerprints.json`` holds, per campaign page, a hash of everything
  the page is rendered from (its context, the shared context without the render time, the templates and
  the dashboards' code). A page whose hash is unchanged is not rewritten, so its "Rendered" time is that
  of the render that last changed it.

The manifests are read as hints only: a malformed one is ignored (everything is re-made), and the file
names are always recomputed from the ids, never taken from the manifest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from dashboards.paths import inside

log = logging.getLogger(__name__)

GALLERY_MANIFEST = "manifest.json"
PAGE_FINGERPRINTS = ".page-fingerprints.json"
CACHE_VERSION = 1
"""Bump to make every cached gallery file and page stale (a change of what they are drawn from)."""


def _plain(value: Any) -> Any:
    """json.dumps fallback: dataclasses as dicts, numpy as lists, anything else (datetimes) as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


FLOAT_DIGITS = 10
"""Significant digits a fingerprint keeps of a float: pyarrow's threaded means sum in any order, so the
same lake gives figures that differ in the last bits from one render to the next."""


def _rounded(value: Any) -> Any:
    """``value`` with every float rounded to FLOAT_DIGITS significant digits (dataclasses as dicts)."""
    if isinstance(value, float):
        return float(f"{value:.{FLOAT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _rounded(dataclasses.asdict(value))
    return value


def fingerprint(*parts: Any) -> str:
    """A stable sha256 of JSON-able parts (dict order is kept: the same inputs give the same order; floats
    to FLOAT_DIGITS digits)."""
    text = json.dumps(_rounded(parts), default=_plain, ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def code_fingerprint() -> str:
    """A hash of the templates and the dashboards' Python sources: a code change re-renders every page."""
    digest = hashlib.sha256(str(CACHE_VERSION).encode())
    package = resources.files("dashboards")
    for folder in (package, package / "templates"):
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith((".py", ".j2")):
                digest.update(entry.name.encode())
                digest.update(entry.read_bytes())
    return digest.hexdigest()


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclasses.dataclass
class GalleryEntry:
    """What was made for one gallery asset: a thumbnail or not, how many overlays, the Grad-CAM note."""

    key: str
    thumb: bool
    overlays: int
    note: str | None

    @classmethod
    def parse(cls, raw: Any) -> "GalleryEntry | None":
        if not isinstance(raw, dict):
            return None
        key, thumb, overlays, note = (raw.get(k) for k in ("key", "thumb", "overlays", "note"))
        if (not isinstance(key, str) or not isinstance(thumb, bool) or not isinstance(overlays, int)
                or isinstance(overlays, bool) or not 0 <= overlays <= 64 or not (note is None or isinstance(note, str))):
            return None
        return cls(key, thumb, overlays, note)


class GalleryCache:
    """Gallery files under ``thumbs/`` kept across renders by fingerprint (see the module doc)."""

    def __init__(self, out: Path, thumbs: Path, *, reuse: bool = True) -> None:
        self.out, self.thumbs = out, thumbs
        raw = _load_json(thumbs / GALLERY_MANIFEST) if reuse else {}
        entries = raw.get("entries") if raw.get("version") == CACHE_VERSION else None
        self._old: dict[str, GalleryEntry] = {}
        for base, value in (entries or {}).items():
            entry = GalleryEntry.parse(value)
            if isinstance(base, str) and entry is not None:
                self._old[base] = entry
        # Gone from disk until finish() writes this render's: a render that dies after overwriting a file
        # (say unblurred over blurred) must not leave a manifest vouching for the old drawing.
        (thumbs / GALLERY_MANIFEST).unlink(missing_ok=True)
        self._new: dict[str, GalleryEntry] = {}
        self._used: set[Path] = set()
        self.n_made = 0
        self.n_reused = 0

    @staticmethod
    def files(base: str, entry: GalleryEntry) -> list[str]:
        """The files an entry stands for, relative to the output folder (names from ``base`` only)."""
        return ([f"{base}.jpg"] if entry.thumb else []) + [f"{base}-f{n}.jpg" for n in range(1, entry.overlays + 1)]

    def get(self, base: str, key: str) -> GalleryEntry | None:
        """The entry made last time for ``base`` when its fingerprint is ``key`` and its files are all there."""
        entry = self._old.get(base)
        if entry is None or entry.key != key or not entry.thumb:
            return None
        paths = [inside(self.out, name) for name in self.files(base, entry)]
        if not all(p.is_file() for p in paths):
            return None
        self._used.update(paths)
        self._new[base] = entry
        self.n_reused += 1
        return entry

    def made(self, base: str, written: Iterable[str], entry: GalleryEntry | None) -> None:
        """Record files this render wrote for ``base`` (kept); ``entry``: cache them for the next render
        (None when something failed that a later render should try again, e.g. an unreadable source)."""
        self._used.update(inside(self.out, name) for name in written)
        self.n_made += 1
        if entry is not None:
            self._new[base] = entry

    def finish(self, keep: Iterable[Path] = ()) -> int:
        """Write the manifest of this render's entries and delete every other file in ``thumbs/``
        (``keep``: the folder's own marker). Returns how many files were deleted."""
        keep_paths = {p.resolve() for p in keep} | {(self.thumbs / GALLERY_MANIFEST).resolve()}
        removed = 0
        for path in sorted(self.thumbs.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            resolved = path.resolve()
            if path.is_file() and resolved not in self._used and resolved not in keep_paths:
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        manifest = {"version": CACHE_VERSION,
                    "entries": {base: dataclasses.asdict(e) for base, e in sorted(self._new.items())}}
        (self.thumbs / GALLERY_MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        if removed:
            log.info("removed %d gallery file(s) no longer shown", removed)
        return removed


class PageFingerprints:
    """Campaign pages not rewritten when what they are rendered from is unchanged (see the module doc)."""

    def __init__(self, out: Path, *, reuse: bool = True) -> None:
        self.out = out
        raw = _load_json(out / PAGE_FINGERPRINTS) if reuse else {}
        self._old = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
        self._new: dict[str, str] = {}
        self.n_written = 0
        self.n_skipped = 0

    def unchanged(self, name: str, key: str) -> bool:
        """True when page ``name`` exists and was rendered from ``key`` (then it is left as it is)."""
        self._new[name] = key
        same = self._old.get(name) == key and inside(self.out, name).is_file()
        if same:
            self.n_skipped += 1
        else:
            self.n_written += 1
        return same

    def save(self) -> None:
        """Keep the fingerprints of this render's pages only (a removed page's goes with it)."""
        (self.out / PAGE_FINGERPRINTS).write_text(json.dumps(dict(sorted(self._new.items()))), encoding="utf-8")


AGGREGATES_DIR = ".aggregates"


class AggregateCache:
    """The last render's aggregates (dashboards.aggregate.Aggregates), one Arrow file per table under
    ``.aggregates/``, with the key each campaign's rows were computed from and its files (``keys.json``):
    a campaign whose key is unchanged is not read from the lake again, and one whose files only grew is
    read only in its new files (dashboards.increment; issue 29: a run costs the rows it added). Anything
    unreadable or unexpected counts as a miss."""

    def __init__(self, out: Path, *, reuse: bool = True) -> None:
        self.dir = out / AGGREGATES_DIR
        raw = _load_json(self.dir / "keys.json") if reuse else {}
        fresh = raw.get("version") == CACHE_VERSION
        keys = raw.get("keys") if fresh else None
        self._old = {k: v for k, v in (keys or {}).items() if isinstance(k, str) and isinstance(v, str)}
        files = raw.get("files") if fresh and isinstance(raw.get("files"), dict) else {}
        self._files = {c: f for c, f in files.items() if isinstance(c, str) and _table_files(f)}
        self.shared = raw.get("shared") if fresh and isinstance(raw.get("shared"), str) else None
        self.n_reused = 0
        self.n_added = 0
        self.n_computed = 0

    def key(self, campaign: str) -> str | None:
        return self._old.get(campaign)

    def files(self, campaign: str) -> dict[str, list[str]] | None:
        """The campaign's images and faces files when its stored rows were computed."""
        return self._files.get(campaign)

    def load(self, keys: dict[str, str], names: Iterable[str], also: Iterable[str] = ()) -> tuple[set[str], dict[str, Any]]:
        """(campaigns whose stored rows were made from ``keys``' key, {table name: the stored rows of those
        and of ``also``}); nothing unless every table reads back."""
        import pyarrow as pa
        import pyarrow.compute as pc

        hits = {c for c, k in keys.items() if self._old.get(c) == k}
        wanted = hits | {c for c in also if c in self._old}
        if not wanted:
            return set(), {}
        tables: dict[str, Any] = {}
        try:
            for name in names:
                with pa.memory_map(str(self.dir / f"{name}.arrow")) as source:
                    table = pa.ipc.open_file(source).read_all()
                tables[name] = table.filter(pc.is_in(table["campaign_id"], pa.array(sorted(wanted), pa.string())))
        except (OSError, pa.ArrowException, KeyError) as exc:
            log.info("aggregate cache unreadable (%s): every campaign computed", type(exc).__name__)
            return set(), {}
        return hits, tables

    def save(self, keys: dict[str, str], tables: dict[str, Any], files: dict[str, dict[str, list[str]]],
             shared: str) -> None:
        """Store this render's tables, keys and files (a campaign gone from the lake goes with them);
        nothing is rewritten when every campaign was reused."""
        import pyarrow as pa

        if keys == self._old and not self.n_computed:
            return

        self.dir.mkdir(parents=True, exist_ok=True)  # (and the output folder: the tables read well)
        (self.dir / "keys.json").unlink(missing_ok=True)  # a save cut short leaves no key to trust
        for name, table in tables.items():
            tmp = self.dir / f".{name}.arrow.tmp"
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            tmp.replace(self.dir / f"{name}.arrow")
        (self.dir / "keys.json").write_text(json.dumps({
            "version": CACHE_VERSION, "shared": shared, "keys": dict(sorted(keys.items())),
            "files": {c: files[c] for c in sorted(keys) if c in files}}), encoding="utf-8")


def _table_files(value: Any) -> bool:
    """Whether ``value`` is {"images": [str...], "faces": [str...]}."""
    return (isinstance(value, dict) and set(value) == {"images", "faces"}
            and all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in value.values()))
