"""Plotly figure specs as plain dicts (data + layout), built from the small aggregate tables.

Plain dicts instead of ``plotly.graph_objects`` because validating thousands of figures
costs seconds per hundred campaigns; the browser test checks every chart draws.
Every untrusted string (platform, campaign id) passes through :func:`plot_text`, since
Plotly renders a subset of HTML in labels and hover text.
"""
from __future__ import annotations

import html
import json
import math
from typing import Any, Sequence

from fer_core.labels import EMOTION_COLORS, EMOTIONS

from dashboards.aggregate import DET_BIN, MAX_FACES_BUCKET, SENTIMENTS

SENTIMENT_COLORS: dict[str, str] = {"positive": "#2a9d5c", "neutral": "#b7bec7", "negative": "#d1495b"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
# The mode bar shows on hover with one button, "Download PNG", which dashboard.js adds (it titles the image
# with the card's heading and the campaign, which the figure itself leaves to the page).
CONFIG: dict[str, Any] = {"displaylogo": False, "displayModeBar": "hover", "responsive": True,
                          "modeBarButtons": []}

Figure = dict[str, Any]


def plot_text(value: Any) -> str:
    """An untrusted value as text Plotly shows literally (it decodes entities, not our tags)."""
    return html.escape("" if value is None else str(value), quote=False)


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "height": 300, "margin": {"l": 56, "r": 24, "t": 30, "b": 48},
        "font": {"family": FONT, "size": 12, "color": "#2b2f36"},
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
        "modebar": {"bgcolor": "rgba(255,255,255,0.8)", "color": "#9aa3ad", "activecolor": "#3b5b92"},
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "traceorder": "normal"},
        "hoverlabel": {"font": {"family": FONT}},
    }
    for axis in ("xaxis", "yaxis"):
        layout[axis] = {"gridcolor": "#e6e8eb", "zerolinecolor": "#c9ced4", "automargin": True}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def _count_axis(values: Sequence[int], title: str) -> dict[str, Any]:
    """A y axis for counts: whole numbers only (Plotly picks 0.5 steps for small counts)."""
    axis: dict[str, Any] = {"title": {"text": title}, "rangemode": "tozero"}
    if max(values, default=0) <= 8:
        axis["dtick"] = 1
    return axis


def _pct(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else round(100.0 * v, 2) for v in values]


def emotion_figure(counts: list[dict], means: dict[str, float | None], adjusted: dict[str, float | None] | None = None
                   ) -> Figure:
    """Share of faces whose top emotion is X (bars), mean probability of X (diamonds) and, when the
    campaigns table has it, the mix corrected for the model's confusions (dashes)."""
    by_emotion = {r["emotion"]: r["n"] for r in counts}
    total = sum(by_emotion.values()) or 1
    shares = [by_emotion.get(e, 0) / total for e in EMOTIONS]
    mean_p = [means.get(f"p_{e}_mean") for e in EMOTIONS]
    data = [
        {"type": "bar", "name": "share of faces (top emotion)", "x": list(EMOTIONS), "y": _pct(shares),
         "marker": {"color": [EMOTION_COLORS[e] for e in EMOTIONS]},
         "customdata": [by_emotion.get(e, 0) for e in EMOTIONS],
         "hovertemplate": "%{x}: %{y:.1f}% of faces (%{customdata} faces)<extra></extra>"},
        {"type": "scatter", "mode": "markers", "name": "mean probability", "x": list(EMOTIONS),
         "y": _pct(mean_p), "marker": {"symbol": "diamond", "size": 10, "color": "#2b2f36"},
         "hovertemplate": "%{x}: mean probability %{y:.1f}%<extra></extra>"},
    ]
    if adjusted:
        data.append(
            {"type": "scatter", "mode": "markers", "name": "corrected for the model's confusions",
             "x": list(EMOTIONS), "y": _pct([adjusted.get(f"adjusted_share_{e}") for e in EMOTIONS]),
             "marker": {"symbol": "line-ew-open", "size": 30, "color": "#2b2f36", "line": {"width": 3, "color": "#2b2f36"}},
             "hovertemplate": "%{x}: %{y:.1f}% after correcting for the model's confusions<extra></extra>"})
    layout = _layout(showlegend=bool(adjusted), margin={"b": 36},
                     yaxis={"title": {"text": "% of faces"}, "rangemode": "tozero"})
    return {"data": data, "layout": layout}


def timeline_figure(rows: list[dict]) -> Figure:
    """Faces per posted_at day stacked by sentiment, with mean valence on a second axis."""
    days = [r["day"].isoformat() for r in rows]
    data: list[dict] = []
    for s in SENTIMENTS:
        data.append({"type": "bar", "name": f"{s} faces", "x": days, "y": [r[f"n_{s}"] for r in rows],
                     "marker": {"color": SENTIMENT_COLORS[s]},
                     "customdata": [r["n_images"] for r in rows],
                     "hovertemplate": f"%{{x}}: %{{y}} {s} faces (%{{customdata}} images)<extra></extra>"})
    data.append({"type": "scatter", "mode": "lines+markers", "name": "mean valence", "x": days,
                 "y": [r["mean_valence"] for r in rows], "yaxis": "y2", "connectgaps": False,
                 "line": {"color": "#2b2f36", "width": 2}, "marker": {"size": 6},
                 "customdata": [r["n_faces"] for r in rows],
                 "hovertemplate": "%{x}: mean valence %{y:.2f} over %{customdata} faces<extra></extra>"})
    xaxis: dict[str, Any] = {"type": "date", "title": {"text": "posted_at (UTC day)"}, "tickformat": "%b %-d"}
    if len(days) <= 14:
        xaxis["dtick"] = 86_400_000  # one tick per day, never hours
    layout = _layout(barmode="stack", xaxis=xaxis,
                     yaxis=_count_axis([r["n_faces"] for r in rows], "faces"),
                     yaxis2={"title": {"text": "mean valence"}, "overlaying": "y", "side": "right",
                             "range": [-1.05, 1.05], "tickmode": "linear", "tick0": -1, "dtick": 0.5,
                             "tickformat": "+.1f", "zeroline": True, "zerolinecolor": "#c9ced4",
                             "showgrid": False, "automargin": True})
    layout["margin"]["r"] = 56
    return {"data": data, "layout": layout}


def platform_figure(rows: list[dict]) -> Figure:
    """Sentiment mix of faces per platform (100 % bars), labelled with face and image counts."""
    labels = [f"{plot_text(r['platform'])} ({r['n_faces']} faces)" for r in rows]
    data = []
    for s in SENTIMENTS:
        shares = [(r[f"n_{s}"] / r["n_faces"]) if r["n_faces"] else 0 for r in rows]
        data.append({"type": "bar", "orientation": "h", "name": s, "y": labels, "x": _pct(shares),
                     "marker": {"color": SENTIMENT_COLORS[s]},
                     "customdata": [[r[f"n_{s}"], r["n_images"]] for r in rows],
                     "hovertemplate": f"%{{y}}: %{{x:.1f}}% {s} (%{{customdata[0]}} faces, "
                                      "%{customdata[1]} images)<extra></extra>"})
    height = max(220, 60 + 34 * len(rows))
    return {"data": data, "layout": _layout(barmode="stack", height=height,
                                            xaxis={"title": {"text": "% of faces"}, "range": [0, 100]},
                                            yaxis={"autorange": "reversed"})}


def faces_per_image_figure(rows: list[dict]) -> Figure:
    """Images by number of faces; empty buckets are drawn as 0 so gaps are not hidden."""
    counts = {r["n_faces"]: r["n_images"] for r in rows}
    buckets = list(range(0, max(counts, default=0) + 1))
    labels = [f"{b}+" if b >= MAX_FACES_BUCKET else str(b) for b in buckets]
    data = [{"type": "bar", "x": labels, "y": [counts.get(b, 0) for b in buckets], "marker": {"color": "#5b7db1"},
             "hovertemplate": "%{x} faces: %{y} images<extra></extra>"}]
    return {"data": data, "layout": _layout(xaxis={"type": "category", "title": {"text": "faces in the image"}},
                                            yaxis=_count_axis(list(counts.values()), "images"))}


def det_score_figure(rows: list[dict]) -> Figure:
    centres = [round(r["bin"] + DET_BIN / 2, 3) for r in rows]
    data = [{"type": "bar", "x": centres, "y": [r["n_faces"] for r in rows], "width": DET_BIN * 0.95,
             "marker": {"color": "#5b7db1"}, "customdata": [r["bin"] for r in rows],
             "hovertemplate": "score %{customdata:.2f}–%{x:.3f}: %{y} faces<extra></extra>"}]
    lo = min([r["bin"] for r in rows] + [0.8])  # detectors keep faces above ~0.9: show 0.8-1 at least
    return {"data": data, "layout": _layout(xaxis={"title": {"text": "detector confidence"},
                                                   "range": [lo - DET_BIN / 2, 1.0]},
                                            yaxis=_count_axis([r["n_faces"] for r in rows], "faces"))}


def video_strip_figure(faces: list[dict], duration_s: float | None = None) -> Figure:
    """A video post's emotion over time, small enough for a gallery card: per track (numbered #1, #2, ...
    in track_id order, as on the card) its frames' valence at their frame_ms, each frame's marker in the
    colour of that frame's top emotion. ``faces``: the video's faces rows (frame_ms, track_id, emotion,
    valence, p_*); ``duration_s``: the clip's declared length, the x axis' end when known."""
    by_track: dict[Any, list[dict]] = {}
    for f in sorted(faces, key=lambda r: (r["track_id"], r["frame_ms"])):
        by_track.setdefault(f["track_id"], []).append(f)
    data: list[dict] = []
    last_s = 0.0
    for n, rows in enumerate(by_track.values(), start=1):
        seconds = [round(r["frame_ms"] / 1000.0, 3) for r in rows]
        last_s = max(last_s, *seconds)
        emotions = [r["emotion"] if r["emotion"] in EMOTION_COLORS else None for r in rows]
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": f"#{n}", "x": seconds,
            "y": [r["valence"] for r in rows], "line": {"color": "#9aa3ad", "width": 1.5},
            "marker": {"size": 8, "color": [EMOTION_COLORS.get(e or "", "#555555") for e in emotions],
                       "line": {"width": 1, "color": "#ffffff"}},
            "customdata": [[plot_text(r["emotion"]), _pct([r.get(f"p_{e}") if e else None])[0]]
                           for r, e in zip(rows, emotions)],
            "hovertemplate": f"#{n} at %{{x:.1f}} s: %{{customdata[0]}} %{{customdata[1]:.0f}}%, "
                             "valence %{y:+.2f}<extra></extra>"})
    end = max(last_s, float(duration_s or 0.0), 1.0)
    layout = _layout(height=120, showlegend=False, margin={"l": 36, "r": 8, "t": 6, "b": 30},
                     xaxis={"title": {"text": "seconds", "standoff": 2}, "range": [-0.02 * end, end * 1.02],
                            "zeroline": False},
                     yaxis={"range": [-1.1, 1.1], "tickvals": [-1, 0, 1], "ticktext": ["−1", "0", "+1"],
                            "zeroline": True, "fixedrange": True})
    layout["font"] = {**layout["font"], "size": 10}
    return {"data": data, "layout": layout}


def comparison_figure(rows: list[dict], limit: int = 40) -> Figure:
    """Net sentiment per campaign (the ``limit`` campaigns with most faces), sorted."""
    shown = sorted([r for r in rows if r["n_faces"]], key=lambda r: -r["n_faces"])[:limit]
    shown.sort(key=lambda r: r["net_sentiment"])
    labels = [plot_text(_short(r["campaign_id"])) for r in shown]
    values = _pct([r["net_sentiment"] for r in shown])
    data = [{"type": "bar", "orientation": "h", "y": labels, "x": values,
             "marker": {"color": [SENTIMENT_COLORS["positive"] if (v or 0) >= 0 else SENTIMENT_COLORS["negative"]
                                  for v in values]},
             "texttemplate": "%{x:+.1f}", "textposition": "auto", "cliponaxis": False,
             "customdata": [[r["n_faces"], _pct([r["mean_valence"]])[0]] for r in shown],
             "hovertemplate": "%{y}: net %{x:+.1f} pts (%{customdata[0]} faces)<extra></extra>"}]
    height = max(240, 60 + 22 * len(shown))
    return {"data": data, "layout": _layout(height=height, margin={"l": 160},
                                            xaxis={"title": {"text": "net sentiment (% positive − % negative faces)"},
                                                   "zeroline": True},
                                            yaxis={"type": "category"})}


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _finite(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN; JSON.parse would reject the whole figure)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(figure: Figure) -> str:
    """Figure JSON that is safe inside <script type="application/json">.

    '<', '>' and '&' (and the JS line separators) appear only inside JSON strings, so
    replacing them with \\u escapes keeps the JSON identical while making '</script>'
    or '<!--' impossible to form.
    """
    spec = {"data": figure["data"], "layout": figure["layout"], "config": CONFIG}
    try:
        text = json.dumps(spec, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:  # a NaN/inf slipped through: walk the figure only in that rare case
        text = json.dumps(_finite(spec), separators=(",", ":"), allow_nan=False, default=str)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
