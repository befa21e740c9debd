"""Render the HTML dashboards: one page per campaign plus an index, fully offline.

Layout of ``out_dir``::

    index.html                   every campaign, sortable, with a comparison chart
    campaign-<slug>-<hash>.html  one page per campaign (names from dashboards.paths)
    plotly.min.js                the ONE shared copy of plotly.js (no CDN)
    dashboard.css, dashboard.js  our style and the few lines of JS that draw charts
    thumbs/<slug>-<hash>/*.jpg   gallery thumbnails and Grad-CAM crops, one name per (image, scoring identity)
    thumbs/manifest.json         what each gallery file was drawn from, so a re-render reuses it (dashboards.cache)
    .page-fingerprints.json      what each campaign page was rendered from: an unchanged page is not rewritten

Figures travel as JSON inside ``<script type="application/json">`` (with <, >, & escaped)
and are drawn by dashboard.js, so no page carries inline script and Jinja autoescape
covers every untrusted string (captions, ids, platforms, error texts).
"""
from __future__ import annotations

import datetime as dt
import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from fer_core.labels import EMOTIONS
from fer_core.tables import SCORED_STATUSES

from dashboards import aggregate, figures, increment
from dashboards.aggregate import CHANGE_TESTED, NOISE_P, SENTIMENTS, split_by_campaign
from dashboards.cache import (AggregateCache, GalleryCache, GalleryEntry, PageFingerprints, code_fingerprint,
                              fingerprint)
from dashboards.explain import ExplainError, Explainer
from dashboards.paths import campaign_page_name, gallery_asset_base, inside, is_campaign_page_name
from dashboards.tables import DashboardError, Lake
from dashboards.thumbnails import (CROP_SIDE, BytesLoader, GalleryImage, ThumbnailError, blur_whole,
                                   chain_loaders, default_loader, load_rgb, make_thumbnail, save_jpeg)

__all__ = ["render_dashboards", "DashboardError"]

log = logging.getLogger(__name__)

MAX_OVERLAY_FACES = 6
THUMBS_MARKER = ".written-by-dashboards"
STATUS_LABELS: dict[str, str] = {
    "ok": "scored", "no_face": "no face found", "decode_error": "could not decode",
    "fetch_error": "could not fetch", "too_large": "too large to decode", "empty": "empty file",
}
NO_CAMPAIGN = "(missing campaign id)"


def render_dashboards(tables_uri: str, out_dir: str, *, storage_options: dict | None = None,
                      blur_faces: bool = False, gradcam: bool = True, max_gallery: int = 8,
                      image_bytes_loader: BytesLoader | None = None,
                      models: Mapping[str, str] | None = None, incremental: bool = True) -> Path:
    """Render every campaign page and the index from the Delta tables under ``tables_uri``.

    ``max_gallery``: images per gallery side (most positive / most negative).
    ``image_bytes_loader(image_id, source) -> bytes | None``: where thumbnails get image bytes
    when ``source`` is not a readable path/URI (e.g. the dump held the bytes inline); when it
    returns None, ``source`` is read with fsspec (with ``storage_options``).
    ``models``: model_version -> name or path/URI that loads it, for Grad-CAM of faces scored
    by a model file (registered names and ``name@version`` are found without it).
    ``incremental``: reuse what the last render into ``out_dir`` made (dashboards.cache): gallery files of
    unchanged picks are not made again and pages whose inputs are unchanged are not rewritten; False
    renders everything from scratch (the same pages, every file new).
    Returns the path of index.html. Raises DashboardError when the tables are unusable.
    """
    lake = Lake(tables_uri, storage_options)
    out = Path(out_dir)
    aggregates = AggregateCache(out, reuse=incremental)  # the folder is made only once the tables read well
    agg = increment.compute(lake, max_gallery=max(0, int(max_gallery)), cache=aggregates)
    out.mkdir(parents=True, exist_ok=True)
    _write_static(out)
    thumbs = _prepare_thumbs(out, reset=not incremental)
    gallery_cache = GalleryCache(out, thumbs, reuse=incremental)
    env = _environment()
    rendered_at = dt.datetime.now(dt.timezone.utc)
    runs = lake.read("runs", ["run_id", "started_at", "finished_at", "status", "n_input", "n_ok", "n_faces",
                              "images_per_s", "model_version", "detector_version", "config_hash"],
                     optional_table=True).sort_by([("started_at", "descending")]).to_pylist()
    latest_run = {k: (_fmt_time(v) if isinstance(v, dt.datetime) else v) for k, v in runs[0].items()} if runs else None
    health = lake.read("health", HEALTH_COLUMNS, optional_table=True).sort_by(
        [("finished_at", "descending")]).slice(0, 10).to_pylist()
    common = {"rendered_at": _fmt_time(rendered_at), "latest_run": latest_run,
              "run_health": [_health_row(h) for h in health],
              "blur_faces": blur_faces, "gradcam": gradcam, "tables_uri": tables_uri}

    cards = _gallery_cards(agg, out, blur=blur_faces,
                           explainer=Explainer(models, storage_options) if gradcam else None,
                           loader=_loader(image_bytes_loader, storage_options), cache=gallery_cache,
                           models=dict(models or {}))
    gallery_cache.finish(keep=[thumbs / THUMBS_MARKER])
    parts = {name: split_by_campaign(getattr(agg, name)) for name in (
        "emotions", "emotion_means", "adjusted_mix", "timeline", "platforms", "faces_per_image", "det_scores", "statuses",
        "face_quality", "status_examples", "lineage", "gallery", "scoring", "identity_comparison")}
    kpi_rows = agg.kpis.to_pylist()
    page = env.get_template("campaign.html.j2")
    pages = PageFingerprints(out, reuse=incremental)
    code = code_fingerprint()
    written = set()
    for row in kpi_rows:
        cid = row["campaign_id"]
        ctx = _campaign_context(row, {k: v.get(cid) for k, v in parts.items()}, cards)
        # A campaign page names the latest run that scored it, not the lake's: a run that did not touch
        # the campaign leaves its page as it was (the index names the lake's latest run).
        shared = {**common, "latest_run": ({"run_id": row["latest_run"], "of_campaign": True}
                                           if row.get("latest_run") else None)}
        name = campaign_page_name(cid)
        written.add(name)
        key = fingerprint(code, {k: v for k, v in shared.items() if k not in ("rendered_at", "run_health")}, ctx)
        if not pages.unchanged(name, key):
            _write(out, name, page.render(**shared, **ctx))
    _remove_stale_pages(out, keep=written)
    pages.save()
    log.info("campaign pages: %d written, %d unchanged; gallery: %d made, %d reused; aggregates: %d campaigns "
             "computed, %d reused (%d computed from a run's rows added to the last render's)", pages.n_written,
             pages.n_skipped, gallery_cache.n_made, gallery_cache.n_reused, aggregates.n_computed, aggregates.n_reused,
             aggregates.n_added)
    adjusted = {r["campaign_id"]: r for r in agg.adjusted_mix.to_pylist()}
    _write(out, CSV_NAME, campaigns_csv(kpi_rows, adjusted))
    index = env.get_template("index.html.j2").render(**common, **_index_context(kpi_rows), csv_name=CSV_NAME)
    return _write(out, "index.html", index)


HEALTH_COLUMNS = ("run_id", "finished_at", "n_scored", "images_per_s", "error_share", "faces_per_image",
                  "mean_det_score", "lag_s", "drift_checked", "drift", "drift_reasons", "n_trailing")
"""The job's health table (jobs/campaign/health.py): one row per run, its metrics and drift verdict."""


def _fmt_lag(seconds: float | None) -> str:
    """Hours for a scheduled feed's usual lag, days from two days on (an old dump read "21906.2 h")."""
    if seconds is None:
        return "–"
    return f"{seconds / 86400:.1f} d" if seconds >= 2 * 86400 else f"{seconds / 3600:.1f} h"


def _health_row(h: dict) -> dict:
    """One run's health, formatted for the index's run-health table."""
    lag = h.get("lag_s")
    return {"run_id": h["run_id"], "finished_at": _fmt_time(h["finished_at"]), "n_scored": _fmt_int(h["n_scored"]),
            "images_per_s": _fmt_num(h["images_per_s"]), "error_share": _fmt_pct(h["error_share"]),
            "faces_per_image": _fmt_num(h["faces_per_image"]), "mean_det_score": _fmt_num(h["mean_det_score"], 3),
            "lag": _fmt_lag(lag), "drift": bool(h["drift"]),
            "verdict": (h["drift_reasons"] if h["drift"] else
                        f"no drift vs {h['n_trailing']} runs" if h["drift_checked"] else h["drift_reasons"] or "–")}


CSV_NAME = "campaigns.csv"
CSV_COLUMNS: tuple[str, ...] = (
    "campaign_id", "n_images", "n_videos", "n_with_faces", "share_with_faces", "n_faces", "share_positive",
    "share_neutral", "share_negative", "net_sentiment", "net_sentiment_base", "net_sentiment_change_p", "mean_valence", "n_bad",
    "first_posted", "last_posted", "baseline_mode",
)


def _csv_cell(value: Any) -> Any:
    """Spreadsheet-safe: text that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a
    leading apostrophe; campaign ids come from untrusted dumps."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


def campaigns_csv(rows: list[dict], adjusted: Mapping[str, dict]) -> str:
    """The index table as CSV (one row per campaign, the tile numbers and, where the campaigns table has
    them, the confusion-adjusted emotion shares), for spreadsheets."""
    import csv
    import io

    adjusted_columns = [f"adjusted_share_{e}" for e in EMOTIONS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *adjusted_columns])
    for r in rows:
        adj = adjusted.get(r["campaign_id"], {})
        writer.writerow([_csv_cell(r.get(c)) for c in CSV_COLUMNS] + [_csv_cell(adj.get(c)) for c in adjusted_columns])
    return buf.getvalue()


def _loader(job_loader: BytesLoader | None, storage_options: Mapping[str, str] | None) -> BytesLoader:
    fallback = default_loader(storage_options)
    return fallback if job_loader is None else chain_loaders(job_loader, fallback)


# ----------------------------------------------------------------------------- files


def _write(out: Path, name: str, text: str) -> Path:
    path = inside(out, name)
    path.write_text(text, encoding="utf-8")
    return path


def _remove_stale_pages(out: Path, keep: set[str]) -> list[str]:
    """Delete campaign pages of an earlier render whose campaign is no longer in the tables.

    A campaign deleted from the lake (e.g. a GDPR erasure) must not live on as a page with
    its faces' scores. Only names campaign_page_name() produces are touched, and only in a
    folder this module owns (the thumbnails marker was written before this runs).
    """
    removed = []
    for path in out.glob("campaign-*.html"):
        if path.name not in keep and is_campaign_page_name(path.name):
            path.unlink()
            removed.append(path.name)
    if removed:
        log.info("removed %d page(s) of campaigns no longer in the tables", len(removed))
    return removed


def _write_static(out: Path) -> None:
    """plotly.min.js once (rewritten only when the plotly version changes), plus our css/js."""
    import plotly
    from plotly.offline import get_plotlyjs

    version_file = out / "plotly.min.js.version"
    target = out / "plotly.min.js"
    if not (target.is_file() and version_file.is_file() and version_file.read_text() == plotly.__version__):
        target.write_text(get_plotlyjs(), encoding="utf-8")
        version_file.write_text(plotly.__version__)
    static = resources.files("dashboards") / "static"
    for name in ("dashboard.css", "dashboard.js"):
        (out / name).write_bytes((static / name).read_bytes())


def _prepare_thumbs(out: Path, *, reset: bool) -> Path:
    """The thumbnails folder, ours only. ``reset``: empty it first; otherwise its files stay for the gallery
    cache, which deletes after the gallery is drawn every file this render did not use (an earlier render's
    unblurred files included: their fingerprint names blur, so a blurred render re-makes them)."""
    thumbs = out / "thumbs"
    if thumbs.is_dir() and (thumbs / THUMBS_MARKER).is_file():
        if reset:
            shutil.rmtree(thumbs)
    elif thumbs.exists() and any(thumbs.iterdir()):
        raise DashboardError(f"{thumbs} exists and was not written by the dashboards; choose another --out "
                             "folder or remove it")
    thumbs.mkdir(parents=True, exist_ok=True)
    (thumbs / THUMBS_MARKER).write_text("thumbnails written by dashboards.render; safe to delete\n")
    return thumbs


def _environment() -> Environment:
    templates = resources.files("dashboards") / "templates"
    env = Environment(loader=FileSystemLoader(str(templates)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    # Our own serializer output (JSON with <, >, & as \u escapes), not data passed through |safe.
    env.filters["figure_json"] = lambda fig: Markup(figures.to_json(fig))
    return env


# ----------------------------------------------------------------------------- gallery


def _gallery_cards(agg: aggregate.Aggregates, out: Path, *, blur: bool, explainer: Explainer | None,
                   loader: BytesLoader, cache: GalleryCache, models: Mapping[str, str]) -> dict[tuple[str, str], dict]:
    """Thumbnails (and Grad-CAM crops) for every picked image (``agg.gallery_images`` and their faces rows);
    keyed by (campaign_id, image_id). A post picked for two sides (a video among the most positive and the
    videos) gets one card. Files a render made from the same inputs before are reused (``cache``), not drawn
    again."""
    images, faces = agg.gallery_images, agg.gallery_faces
    if images.num_rows == 0:
        return {}
    faces_by_image: dict[str, list[dict]] = {}
    for face in faces.to_pylist():
        faces_by_image.setdefault(face["image_id"], []).append(face)
    cards: dict[tuple[str, str], dict] = {}
    drawing = _Drawing(out, blur=blur, explainer=explainer, loader=loader, cache=cache, models=models)
    for info in images.to_pylist():
        cid = info["campaign_id"] or ""
        make = _make_video_card if info.get("media_type") == "video" else _make_card
        cards[(cid, info["image_id"])] = make(info, faces_by_image.get(info["image_id"], []), drawing)
    return cards


def _face_label(face: dict) -> dict:
    emotion = face.get("emotion") or "?"
    p = face.get(f"p_{emotion}") if emotion in EMOTIONS else None
    return {"emotion": emotion, "p": _fmt_pct(p), "sentiment": face.get("sentiment") or "",
            "valence": _fmt_signed(face.get("valence"), 2), "detail": f"det {_fmt_num(face.get('det_score'), 2)}",
            "colour": figures.EMOTION_COLORS.get(emotion, "#555555"), "overlay": None}


def _track_label(track: dict) -> dict:
    """A video track as a card lists it: its emotion (of its frames' mean), sentiment, valence and when it was seen."""
    label = _face_label(track)
    first, last = (track.get(k) for k in ("first_ms", "last_ms"))
    when = ("–" if first is None else f"{first / 1000:.1f} s" if first == last
            else f"{first / 1000:.1f}–{last / 1000:.1f} s")
    frames = track.get("n_frames") or 0
    label["detail"] = f"{frames} frame{'s' if frames != 1 else ''}, {when}"
    return label


def _card_fields(info: dict) -> dict:
    return {"caption": info.get("caption"), "platform": info.get("platform"),
            "posted_at": _fmt_time(info.get("posted_at")), "valence": _fmt_signed(info.get("valence"), 2),
            "sentiment": info.get("sentiment") or "", "dominant": info.get("dominant_emotion") or "",
            "n_faces": info.get("n_faces") or 0, "video": None}


class _Drawing:
    """How this render draws a gallery image's files: where, blurred or not, Grad-CAM or not, from which bytes,
    and the cache of what earlier renders drew."""

    def __init__(self, out: Path, *, blur: bool, explainer: Explainer | None, loader: BytesLoader,
                 cache: GalleryCache, models: Mapping[str, str]) -> None:
        self.out, self.blur, self.explainer, self.loader, self.cache, self.models = (
            out, blur, explainer, loader, cache, models)

    def key(self, info: dict, faces: list[dict]) -> str:
        """Everything the files of one gallery image are drawn from (dashboards.cache)."""
        model = info.get("model_version")
        return fingerprint("gallery", {k: info.get(k) for k in ("image_id", "scoring_id", "campaign_id", "source",
                                                               "width", "height", "media_type", "model_version")},
                           faces, {"blur": self.blur, "gradcam": self.explainer is not None,
                                   "model": self.models.get(model or "")})

    def draw(self, gi: GalleryImage, info: dict, key_faces: list[dict], boxes: list[dict], labels: list[dict],
             *, frame_ms: int | None = None, box_texts: list[str] | None = None) -> None:
        """The thumbnail of ``info`` with ``boxes`` (drawn on the frame at ``frame_ms`` for a video) and the
        Grad-CAM crops of its first MAX_OVERLAY_FACES boxes onto ``labels``; reused when an earlier render
        drew them from the same inputs (``key_faces``: the face rows they depend on)."""
        base = gallery_asset_base(info.get("campaign_id"), info["image_id"], info.get("scoring_id"))
        key = self.key(info, key_faces)
        hit = self.cache.get(base, key)
        if hit is not None:
            gi.thumb = f"{base}.jpg"
            for n, label in enumerate(labels[:hit.overlays], start=1):
                label["overlay"] = f"{base}-f{n}.jpg"
            gi.explain_note = hit.note
            return
        written: list[str] = []
        complete = False
        try:
            rgb = load_rgb(self.loader, info["image_id"], info.get("source"), frame_ms=frame_ms)
            thumb = make_thumbnail(rgb, boxes, [label["colour"] for label in labels], blur=self.blur,
                                   table_size=(info.get("width"), info.get("height")), labels=box_texts)
            save_jpeg(thumb, inside(self.out, f"{base}.jpg"))
            gi.thumb = f"{base}.jpg"
            written.append(gi.thumb)
            complete = True
        except ThumbnailError as exc:
            gi.problem = f"No thumbnail: {exc}"
            rgb = None
        if rgb is not None and self.explainer is not None and boxes:
            overlays, complete = _add_overlays(gi, rgb, boxes, labels, info.get("model_version"), base, self.out,
                                               blur=self.blur, explainer=self.explainer)
            written += overlays
        # a failure (unreadable source, Grad-CAM error) is not cached: the next render tries again
        entry = GalleryEntry(key, True, len(written) - 1, gi.explain_note) if complete else None
        self.cache.made(base, written, entry)


def _make_card(info: dict, faces: list[dict], drawing: _Drawing) -> dict:
    gi = GalleryImage(image_id=info["image_id"], faces=[_face_label(f) for f in faces])
    drawing.draw(gi, info, faces, faces, gi.faces)
    return {"gi": gi, **_card_fields(info)}


def _make_video_card(info: dict, faces: list[dict], drawing: _Drawing) -> dict:
    """A video post: its tracks listed (fer_core.kpis.video_tracks, the rule the shares count them by), the
    sampled frame with the most faces as its thumbnail (boxes numbered by track), and the emotion-over-time
    strip of its frames (figures.video_strip_figure)."""
    from fer_core.kpis import video_tracks

    framed = [f for f in faces if f.get("track_id") is not None and f.get("frame_ms") is not None]
    tracks = video_tracks(pa.Table.from_pylist(framed)).to_pylist() if framed else []
    number = {t["track_id"]: n for n, t in enumerate(tracks, start=1)}
    gi = GalleryImage(image_id=info["image_id"], faces=[_track_label(t) for t in tracks])
    per_frame: dict[int, list[dict]] = {}
    for f in framed:
        per_frame.setdefault(int(f["frame_ms"]), []).append(f)
    frame_ms = max(per_frame, key=lambda ms: (len(per_frame[ms]), -ms)) if per_frame else None
    shown = sorted(per_frame.get(frame_ms, []), key=lambda f: f["track_id"])
    labels = {t: gi.faces[n - 1] for t, n in number.items()}
    if frame_ms is None:
        gi.problem = "No thumbnail: no face of this video has a frame time"
    else:
        drawing.draw(gi, info, framed, shown, [labels[f["track_id"]] for f in shown], frame_ms=frame_ms,
                     box_texts=[str(number[f["track_id"]]) for f in shown])
    duration = info.get("duration_s")
    video = {"duration": "–" if duration is None else f"{duration:.1f} s", "n_frames": info.get("n_frames") or 0,
             "n_tracks": len(tracks), "frame": None if frame_ms is None else f"{frame_ms / 1000:.1f} s",
             "strip": figures.video_strip_figure(framed, duration) if framed else None}
    return {"gi": gi, **_card_fields(info), "video": video}


def _add_overlays(gi: GalleryImage, rgb, faces: list[dict], labels: list[dict], model_version: str | None, base: str,
                  out: Path, *, blur: bool, explainer: Explainer) -> tuple[list[str], bool]:
    """Grad-CAM crops of the first MAX_OVERLAY_FACES ``faces`` (drawn on ``rgb``), each on its ``labels`` entry.
    Returns the files written and whether Grad-CAM worked."""
    shown = faces[:MAX_OVERLAY_FACES]
    written: list[str] = []
    try:
        overlays, caveat = explainer.overlays(rgb, shown, model_version)
        for n, (label, overlay) in enumerate(zip(labels, overlays), start=1):
            crop = blur_whole(_pil(overlay)) if blur else overlay
            name = f"{base}-f{n}.jpg"
            save_jpeg(crop, inside(out, name), side=CROP_SIDE)
            written.append(name)
            label["overlay"] = name
        gi.explain_note = caveat
        if len(faces) > len(shown):
            extra = f"Grad-CAM shown for the first {len(shown)} of {len(faces)} faces."
            gi.explain_note = f"{caveat} {extra}" if caveat else extra
        return written, True
    except ExplainError as exc:
        gi.explain_note = f"{exc}. The thumbnail is shown without overlays."
        return written, False


def _pil(array):
    from PIL import Image

    return Image.fromarray(array)


# ----------------------------------------------------------------------------- formatting


def _fmt_pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def _fmt_signed(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def _fmt_num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt_int(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def _fmt_time(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def _fmt_range(first: Any, last: Any) -> str:
    a, b = _fmt_time(first), _fmt_time(last)
    return a if a == b else f"{a} – {b}"


def _delta(now: float | None, base: float | None, kind: str, good: int = 0, p_value: float | None = None,
           unit: str | None = None) -> dict | None:
    """A change vs. the baseline: text, direction (arrow), tone (colour) and a tooltip.

    ``good`` says which way is good news: +1 up, -1 down, 0 neither (volumes, neutral share).
    ``unit`` ("faces" or "images"): the KPI is a mean over those, and ``p_value`` says whether the change
    could be sampling noise; a change with p >= NOISE_P (or nothing to test) is then drawn muted.
    """
    if now is None or base is None:
        return None
    d = now - base
    if kind == "count":
        text = f"{d:+,.0f}"
    elif kind == "share":
        text = f"{100 * d:+.1f} pts"
    else:
        text = f"{d:+.2f}"
    eps = 0.0005 if kind != "count" else 0.5
    direction = 1 if d > eps else -1 if d < -eps else 0
    noise = unit is not None and direction != 0 and (p_value is None or p_value >= NOISE_P)
    tone = ("tone-neutral" if direction == 0 or good == 0 or noise
            else "tone-good" if direction == good else "tone-bad")
    title = ""
    if unit is not None and direction != 0:
        title = (f"no new or no earlier {unit} to compare" if p_value is None else
                 f"{'within sampling noise' if noise else 'unlikely to be noise'}: p = {p_value:.2g} "
                 f"(the new {unit} vs the earlier ones, two-sample z-test)")
    return {"text": text, "dir": {1: "up", -1: "down", 0: "flat"}[direction], "tone": tone, "noise": noise,
            "title": title}


TILES: tuple[tuple[str, str, str, int, str], ...] = (
    # field, label, kind, which way is good news, help
    ("n_images", "Images", "count", 0, "images in this campaign (all statuses)"),
    ("share_with_faces", "With faces", "share", 0, "share of images where at least one face was found"),
    ("n_faces", "Faces", "count", 0, "faces found across all images (a video's person, its track, counts once)"),
    ("share_positive", "Positive", "share", 1, "share of faces with positive sentiment"),
    ("share_neutral", "Neutral", "share", 0, "share of faces with neutral sentiment"),
    ("share_negative", "Negative", "share", -1, "share of faces with negative sentiment"),
    ("net_sentiment", "Net sentiment", "share", 1, "% positive minus % negative faces"),
    ("mean_valence", "Mean valence", "valence", 1, "mean face valence, from −1 (negative) to +1 (positive)"),
)


def _tile_value(v: Any, kind: str, field: str) -> tuple[str, str]:
    """(number, unit) for a tile; the unit is set smaller so long values do not wrap."""
    if v is None:
        return "–", ""
    if kind == "count":
        return _fmt_int(v), ""
    if field == "net_sentiment":
        return f"{100 * v:+.1f}", "pts"
    if kind == "share":
        return f"{100 * v:.1f}", "%"
    return _fmt_signed(v, 2), ""


def _interval_text(row: dict, field: str) -> str:
    """'95%: 22.1-51.2%' for a tile with an interval (aggregate.interval_columns), else ''."""
    low, high = row.get(f"{field}_ci_low"), row.get(f"{field}_ci_high")
    if low is None or high is None or field not in CHANGE_TESTED:
        return ""
    if field == "net_sentiment":
        return f"95%: {100 * low:+.1f}…{100 * high:+.1f}"
    if field.startswith("share_"):
        return f"95%: {100 * low:.1f}–{100 * high:.1f}%"
    return f"95%: {low:+.2f}…{high:+.2f}"


def _versus(row: dict) -> str:
    """The short 'compared with what' label printed in every tile."""
    mode = row.get("baseline_mode")
    if mode == "run":
        return "vs. before latest run"
    if mode == "week":
        return "vs. before latest week"
    return "no earlier run or week"


NOISE_NOTE = (f" Changes marked ~ (grey) are within sampling noise (p ≥ {NOISE_P}: the new faces or images do not "
              "differ from the earlier ones by more than chance); hover a change for its test.")


def _comparison(row: dict) -> str:
    mode = row.get("baseline_mode")
    if mode == "run":
        return (f"Changes compare with this campaign before run {row['latest_run']} "
                f"({_fmt_int(row.get('n_images_base'))} images from {row['n_runs'] - 1} earlier run(s)).{NOISE_NOTE}")
    if mode == "week":
        week = row.get("latest_week")
        return (f"Changes compare with this campaign without images posted in the week of "
                f"{_fmt_time(week.date() if isinstance(week, dt.datetime) else week)} (UTC, Monday start).{NOISE_NOTE}")
    return "No change shown: all images come from one run and one posted week, so there is nothing earlier to compare with."


# ----------------------------------------------------------------------------- page contexts


def _rows(table: pa.Table | None) -> list[dict]:
    return [] if table is None else table.to_pylist()


FLAG_ORDER = ("small", "blurred", "dark", "turned", "unmeasured")


def _face_quality_text(rows: list[dict], n_faces: int) -> str | None:
    """"Face quality: 40 of 52 faces good; 12 flagged (small 7, blurred 5) ..." or None without faces."""
    if not n_faces:
        return None
    counts = {r["quality"]: int(r["n"]) for r in rows}
    flagged = [(q, counts[q]) for q in FLAG_ORDER if counts.get(q) and q != "unmeasured"]
    text = f"Face quality: {counts.get('good', 0):,} of {n_faces:,} faces good"
    if flagged:
        text += (f"; {sum(n for _, n in flagged):,} flagged (" + ", ".join(f"{q} {n:,}" for q, n in flagged)
                 + "): counted in every share, left out of the good-face shares of the campaigns table")
    if counts.get("unmeasured"):
        text += f"; {counts['unmeasured']:,} scored before quality was measured"
    return text + "."


def _scoring_text(info: dict | None) -> dict | None:
    """Which scoring identity the page shows and, during an upgrade, how far the current one has got:
    {"text": ..., "upgrading": bool}, or None for a campaign only ever scored one way."""
    if not info:
        return None
    shown, current = info["shown"], info["current"]
    n, n_all, gone = info["current_n_images"], info["n_images_all"], info["current_n_gone"] or 0
    gone_text = (f"; {gone:,} cannot be rescored (their dumps are gone) and keep only their older scoring"
                 if gone else "")
    if current is not None and shown != current:
        pct = f" ({n / n_all:.0%})" if n_all else ""
        return {"upgrading": True,
                "text": f"Figures by an older scoring, {shown}, not the current one: {current} has rescored "
                        f"{n:,} of this campaign's {n_all:,} images so far{pct}{gone_text}. This page switches to "
                        "it once the backfill has reached every image it can."}
    if info["n_identities"] > 1 or gone:
        return {"upgrading": False,
                "text": f"Scored by {shown}, the current scoring: {n:,} of {n_all:,} images{gone_text}."}
    return {"upgrading": False, "text": f"Scored by {shown}."}


def _identity_comparison(r: dict | None) -> dict | None:
    """The older and the current identity side by side on the images both scored."""
    if not r:
        return None
    rows = [{"label": e, "old": _fmt_pct(r[f"old_share_{e}"]), "new": _fmt_pct(r[f"new_share_{e}"]),
             "shift": _fmt_points(r[f"old_share_{e}"], r[f"new_share_{e}"])} for e in EMOTIONS]
    rows += [{"label": label, "old": _fmt_pct(r[f"old_{c}"]), "new": _fmt_pct(r[f"new_{c}"]),
              "shift": _fmt_points(r[f"old_{c}"], r[f"new_{c}"])}
             for label, c in (("positive faces", "share_positive"), ("negative faces", "share_negative"),
                              ("neutral faces", "share_neutral_sentiment"))]
    rows.append({"label": "net sentiment", "old": _fmt_signed(r["old_net_sentiment"]),
                 "new": _fmt_signed(r["new_net_sentiment"]),
                 "shift": _fmt_signed(None if r["old_net_sentiment"] is None or r["new_net_sentiment"] is None
                                      else r["new_net_sentiment"] - r["old_net_sentiment"])})
    agree = (f"their dominant emotions agree on {r['agreement']:.0%} of the {r['n_compared']:,} with faces under both"
             if r["agreement"] is not None else "no image has faces under both")
    return {"old": r["old"], "new": r["new"], "rows": rows,
            "summary": f"On the {r['n_common']:,} images both scored, {agree}. A shift here is the model's, "
                       "not the audience's."}


def _fmt_points(old: float | None, new: float | None) -> str:
    """The change of a share in percentage points ("+3.1 pts")."""
    if old is None or new is None:
        return "–"
    return f"{(new - old) * 100:+.1f} pts"


def _campaign_context(row: dict, parts: dict[str, pa.Table | None], cards: dict) -> dict:
    cid = row["campaign_id"]
    tiles = []
    for field, label, kind, good, help_text in TILES:
        value, unit = _tile_value(row.get(field), kind, field)
        interval = _interval_text(row, field)
        tiles.append({"label": label, "value": value, "unit": unit, "interval": interval,
                      "help": help_text + (f"; {interval}" if interval else ""),
                      "delta": _delta(row.get(field), row.get(f"{field}_base"), kind, good,
                                      row.get(f"{field}_change_p"), CHANGE_TESTED.get(field))})
    n_looked = row["n_images"] - row["n_bad"]
    has_faces = row["n_faces"] > 0
    if n_looked == 0:
        empty = (f"None of this campaign's {row['n_images']:,} images could be scored; "
                 "see Data quality below for what went wrong.")
    elif not has_faces:
        empty = (f"No faces were found in this campaign's {n_looked:,} scored images, so there are no "
                 "emotion or sentiment numbers yet.")
    else:
        empty = None
    no_faces = "No faces in this campaign yet, so there is nothing to chart."
    emotion_rows = _rows(parts["emotions"])
    means = (_rows(parts["emotion_means"]) or [{}])[0]
    adjusted = (_rows(parts["adjusted_mix"]) or [None])[0]
    timeline_rows = _rows(parts["timeline"])
    charts = [
        _chart("emotions", "Emotion mix",
               "Share of faces by their most likely emotion; diamonds: mean probability"
               + ("; dashes: the mix corrected for the model's known confusions (see README, "
                  "\"Reading the emotion mix\")." if adjusted else "."),
               figures.emotion_figure(emotion_rows, means, adjusted) if has_faces else None, no_faces),
        _chart("platforms", "By platform", "Sentiment mix of faces per platform.",
               figures.platform_figure(_rows(parts["platforms"])) if has_faces else None, no_faces),
        _chart("timeline", "Sentiment and valence over time",
               "Faces per posted_at day (UTC) by sentiment, and their mean valence (right axis).",
               figures.timeline_figure(timeline_rows) if has_faces and any(r["n_faces"] for r in timeline_rows)
               else None,
               no_faces if not has_faces else "No image has a posted_at date, so there is no timeline."),
        _chart("faces_per_image", "Faces per image", "Decoded images by number of faces found.",
               figures.faces_per_image_figure(_rows(parts["faces_per_image"])) if n_looked else None,
               "No image could be decoded."),
        _chart("det_scores", "Detection confidence", "Detector score of each face (higher: surer it is a face)"
               + ("; a video's faces once per sampled frame." if row.get("n_videos") else "."),
               figures.det_score_figure(_rows(parts["det_scores"])) if _rows(parts["det_scores"]) else None,
               no_faces),
    ]
    gallery = {"positive": [], "negative": [], "video": []}
    for pick in _rows(parts["gallery"]):
        card = cards.get((cid, pick["image_id"]))
        if card is not None:
            gallery[pick["side"]].append(card)
    return {
        "face_quality": _face_quality_text(_rows(parts["face_quality"]), row.get("n_faces") or 0),
        "campaign_id": cid or NO_CAMPAIGN, "title_id": cid or NO_CAMPAIGN, "row": row, "tiles": tiles,
        "comparison": _comparison(row), "versus": _versus(row), "empty": empty, "charts": charts, "gallery": gallery,
        "quality": _quality(row, _rows(parts["statuses"]), _rows(parts["status_examples"])),
        "lineage": [_lineage_row(r) for r in _rows(parts["lineage"])],
        "first_posted": _fmt_time(row.get("first_posted")), "last_posted": _fmt_time(row.get("last_posted")),
        "n_undated": row.get("n_undated") or 0,
        "media_split": _media_split(row),
        "scoring": _scoring_text((_rows(parts["scoring"]) or [None])[0]),
        "identity_comparison": _identity_comparison((_rows(parts["identity_comparison"]) or [None])[0]),
    }


def _media_split(row: dict) -> str:
    """"12 posts: 9 photos · 3 videos" (photos: every post whose media_type is not video, older rows too)."""
    n, videos = row.get("n_images") or 0, row.get("n_videos") or 0
    photos = n - videos
    return (f"{n:,} post{'s' if n != 1 else ''}: {photos:,} photo{'s' if photos != 1 else ''} · "
            f"{videos:,} video{'s' if videos != 1 else ''}")


def _chart(chart_id: str, title: str, subtitle: str, figure: dict | None, empty_text: str) -> dict:
    return {"id": f"chart-{chart_id}", "title": title, "subtitle": subtitle, "figure": figure,
            "empty": empty_text}


def _quality(row: dict, counts: list[dict], examples: list[dict]) -> list[dict]:
    by_status: dict[str, list[dict]] = {}
    for ex in examples:
        by_status.setdefault(ex["status"], []).append(ex)
    out = []
    for c in counts:
        status = c["status"]
        out.append({"status": status, "label": STATUS_LABELS.get(status, status), "n": _fmt_int(c["n_images"]),
                    "share": _fmt_pct(c["n_images"] / row["n_images"] if row["n_images"] else None),
                    "problem": status not in SCORED_STATUSES, "examples": by_status.get(status, [])})
    return out


def _lineage_row(r: dict) -> dict:
    return {"run_id": r["run_id"] or "–", "model_version": r["model_version"] or "–",
            "detector_version": r["detector_version"] or "–", "n_images": _fmt_int(r["n_images"]),
            "scored": _fmt_range(r["first_scored"], r["last_scored"]),
            "started_at": _fmt_time(r.get("started_at")), "finished_at": _fmt_time(r.get("finished_at")),
            "run_status": r.get("run_status") or "–", "config_hash": r.get("config_hash") or "–"}


def _index_context(rows: list[dict]) -> dict:
    table = []
    for r in rows:
        d = _delta(r.get("net_sentiment"), r.get("net_sentiment_base"), "share", good=1,
                   p_value=r.get("net_sentiment_change_p"), unit="faces")
        table.append({
            "campaign_id": r["campaign_id"] or NO_CAMPAIGN, "href": campaign_page_name(r["campaign_id"]),
            "n_images": r["n_images"], "n_videos": r["n_videos"], "share_with_faces": r["share_with_faces"],
            "n_faces": r["n_faces"],
            **{f"share_{s}": r[f"share_{s}"] for s in SENTIMENTS},
            "net_sentiment": r["net_sentiment"], "mean_valence": r["mean_valence"], "delta": d,
            "delta_value": None if d is None else r["net_sentiment"] - r["net_sentiment_base"],
            "n_bad": r["n_bad"],
            "last_posted": r["last_posted"].date().isoformat() if r.get("last_posted") else "–",
            "last_posted_sort": r["last_posted"].isoformat() if r.get("last_posted") else "",
            "fmt": {"n_images": _fmt_int(r["n_images"]), "n_videos": _fmt_int(r["n_videos"]),
                    "share_with_faces": _fmt_pct(r["share_with_faces"]),
                    "n_faces": _fmt_int(r["n_faces"]), **{s: _fmt_pct(r[f"share_{s}"]) for s in SENTIMENTS},
                    "net": " ".join(_tile_value(r["net_sentiment"], "share", "net_sentiment")).strip(),
                    "valence": _fmt_signed(r["mean_valence"]), "n_bad": _fmt_int(r["n_bad"])},
        })
    totals = {"campaigns": len(rows), "images": _fmt_int(sum(r["n_images"] for r in rows)),
              "videos": _fmt_int(sum(r["n_videos"] for r in rows)),
              "faces": _fmt_int(sum(r["n_faces"] for r in rows)), "bad": _fmt_int(sum(r["n_bad"] for r in rows))}
    with_faces = [r for r in rows if r["n_faces"]]
    comparison = figures.comparison_figure(rows) if with_faces else None
    return {"campaigns": table, "totals": totals, "comparison": comparison, "noise_p": NOISE_P,
            "comparison_note": (f"The {min(40, len(with_faces))} campaigns with the most faces, of "
                                f"{len(with_faces)} with any faces." if len(with_faces) > 40 else
                                "Every campaign with at least one face.")}
