"""Safe file names for untrusted ids (campaign ids, image ids).

Campaign and image ids come from the input dump, so they may hold ``../``, slashes,
NUL bytes, unicode look-alikes or thousands of characters. Every name written by the
dashboards goes through :func:`safe_name`: a readable ASCII slug plus a short hash of
the exact id, so two ids never collide and no id can leave the output folder.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

_SLUG_MAX = 40
_HASH_LEN = 10
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def short_hash(value: str, length: int = _HASH_LEN) -> str:
    """Hex sha256 prefix of ``value``: stable across runs and machines (unlike hash())."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def slugify(value: str, max_len: int = _SLUG_MAX) -> str:
    """Lower-case ASCII letters and digits joined by '-', at most ``max_len`` chars; never empty."""
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    slug = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")[:max_len].strip("-")
    return slug or "x"


def safe_name(value: str | None, *, prefix: str = "", suffix: str = "") -> str:
    """A file name for ``value`` made only of ``[a-z0-9-]`` plus the given prefix/suffix.

    The hash is taken over the exact id, so ``"a/b"`` and ``"a-b"`` get different names.
    """
    text = "" if value is None else str(value)
    return f"{prefix}{slugify(text)}-{short_hash(text)}{suffix}"


def campaign_page_name(campaign_id: str | None) -> str:
    """The campaign page's file name, relative to the output folder."""
    return safe_name(campaign_id, prefix="campaign-", suffix=".html")


_PAGE_NAME = re.compile(r"campaign-[a-z0-9-]+-[0-9a-f]{%d}\.html" % _HASH_LEN)


def is_campaign_page_name(name: str) -> bool:
    """True for file names campaign_page_name() produces: the only pages a re-render may delete."""
    return _PAGE_NAME.fullmatch(name) is not None


def campaign_asset_dir(campaign_id: str | None) -> str:
    """The folder (relative to the output folder) that holds one campaign's thumbnails."""
    return f"thumbs/{safe_name(campaign_id)}"


def inside(root: Path, relative: str) -> Path:
    """Join ``relative`` onto ``root`` and refuse any result outside ``root``.

    A second line of defence: names built here are already safe, but a future caller
    passing a raw id would get a clear error instead of writing elsewhere.
    """
    root_resolved = root.resolve()
    target = (root_resolved / relative).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise ValueError(f"refusing to write {relative!r}: it resolves outside {root_resolved}")
    return target


def gallery_asset_base(campaign_id: str | None, image_id: str | None, scoring_id: str | None) -> str:
    """Where one gallery image's files go, without suffix: ``thumbs/<campaign>/<slug>-<hash>`` with the hash
    over the exact (image_id, scoring_id), so a rescore by another identity gets files of its own and a
    cached thumbnail is found again by the same key (dashboards.cache)."""
    image = "" if image_id is None else str(image_id)
    key = f"{image}\x00{'' if scoring_id is None else scoring_id}"
    return f"{campaign_asset_dir(campaign_id)}/{slugify(image)}-{short_hash(key, 16)}"
