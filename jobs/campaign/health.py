"""Run health that machines can read: each run's metrics and a drift check against the trailing runs.

After a run commits, ``record_health`` reads back the run's own rows (a run_id filter: the Delta
statistics let it open this run's files only), computes images/s, statuses, error share, faces per
image and the emotion mix (of faces as the KPIs count them: a video's track once), mean detector
confidence (per detection), and the lag between the newest ``posted_at`` and the
run's end, compares them with the median of the trailing runs (``health:`` thresholds in the config),
and writes them three ways: a row of the ``health`` Delta table (next to the ``runs`` row; the index
dashboard shows the latest), ``<lake>/_job/health/<run_id>.json``, and a Prometheus textfile
(``health.textfile``, for node_exporter's textfile collector). ``--fail-on-drift`` turns a drift into
exit code 3. A run judges nothing until enough earlier runs have enough images.
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
from typing import Any, Iterable, TextIO

from fer_core.kpis import counted_faces
from fer_core.labels import EMOTIONS
from fer_core.tables import SCORED_STATUSES, STATUSES, health_schema

__all__ = ["HEALTH_TABLE", "health_schema", "run_metrics", "drift_check", "prometheus_text", "record_health",
           "format_health", "DRIFT_EXIT"]

HEALTH_TABLE = "health"
DRIFT_EXIT = 3
"""score_campaign's exit code for a run that drifted, with --fail-on-drift (2 is a config/input error)."""
SCALARS = ("error_share", "faces_per_image", "mean_det_score")


def run_metrics(lake, run_id: str, finished_at: dt.datetime, images_per_s: float,
                files: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The run's metrics, from its committed images and faces rows: ``files`` (the manifest's: table ->
    the run's add actions) read straight, so the cost follows the run, not the table's file count;
    without them, the table filtered by run_id."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from jobs.campaign.inputs import filesystem

    def own_files(name: str, columns: list[str] | None):
        parts = []
        for f in files.get(name, []):
            fs, path = filesystem(f"{lake.uri(name)}/{f['path']}", lake.storage_options)
            with fs.open(path, "rb") as handle:
                part = pq.read_table(handle, columns=columns)
            if columns is None or "campaign_id" in columns:  # the partition value lives in the log, not the file
                part = part.append_column("campaign_id", pa.array([f["campaign_id"]] * part.num_rows, pa.string()))
            parts.append(part)
        return pa.concat_tables(parts, promote_options="permissive") if parts else None

    def rows(name: str, columns: list[str] | None):
        if files is not None:
            return own_files(name, columns)
        table = lake.table(name)
        if table is None:
            return None
        return table.to_pyarrow_dataset().to_table(columns=columns, filter=ds.field("run_id") == run_id)

    images = rows("images", ["status", "posted_at"])
    frames = rows("faces", None)  # a run's rows: small; counted_faces needs the track and probability columns
    # faces as the KPIs count them: a person in a video (a track across its frames) once, not once per frame;
    # the detector's mean score stays per detection (a detector-health figure)
    faces = counted_faces(frames) if frames is not None and frames.num_rows else frames
    statuses = {s: 0 for s in STATUSES}
    newest = None
    if images is not None and images.num_rows:
        for s, n in zip(*pc.value_counts(images["status"]).flatten()):
            statuses[s.as_py()] = n.as_py()
        newest = pc.max(images["posted_at"]).as_py()
    n_scored = sum(statuses.values())
    decoded = sum(statuses[s] for s in SCORED_STATUSES)
    n_faces = faces.num_rows if faces is not None else 0
    mix = {e: 0 for e in EMOTIONS}
    if n_faces:
        for e, n in zip(*pc.value_counts(faces["emotion"]).flatten()):
            mix[e.as_py()] = n.as_py()
    return {
        "run_id": run_id, "finished_at": finished_at, "n_scored": n_scored,
        **{f"n_{s}": n for s, n in statuses.items()}, "n_faces": n_faces, "images_per_s": float(images_per_s),
        "error_share": 1 - decoded / n_scored if n_scored else None,
        "faces_per_image": n_faces / decoded if decoded else None,
        "mean_det_score": pc.mean(frames["det_score"]).as_py() if n_faces else None,
        **{f"share_{e}": (mix[e] / n_faces if n_faces else None) for e in EMOTIONS},
        "newest_posted_at": newest,
        "lag_s": (finished_at - newest).total_seconds() if newest is not None else None,
    }


def drift_check(metrics: dict[str, Any], trailing: Iterable[dict[str, Any]], settings) -> dict[str, Any]:
    """Compare a run with the trailing runs (``settings``: config ``health:``). The baseline is the median
    of each figure (one odd run does not move it) and the mean emotion mix; the mix moves by its total
    variation distance (half the summed absolute share differences). Runs under ``min_images`` scored
    images are neither judged nor part of a baseline. Returns drift_checked, drift, drift_reasons, n_trailing."""
    base = [t for t in trailing if (t.get("n_scored") or 0) >= settings.min_images][-settings.trailing_runs:]
    out = {"drift_checked": False, "drift": False, "drift_reasons": None, "n_trailing": len(base)}
    if (metrics.get("n_scored") or 0) < settings.min_images:
        out["drift_reasons"] = f"not judged: {metrics.get('n_scored') or 0} images < health.min_images"
        return out
    if len(base) < settings.min_trailing_runs:
        out["drift_reasons"] = f"not judged: {len(base)} earlier runs < health.min_trailing_runs"
        return out
    reasons = []

    def median(key: str) -> float | None:
        values = [t[key] for t in base if t.get(key) is not None]
        return statistics.median(values) if values else None

    limits = {"error_share": ("error share", settings.max_error_share_change, False),
              "faces_per_image": ("faces per image", settings.max_faces_per_image_change, True),
              "mean_det_score": ("detector confidence", settings.max_confidence_change, False)}
    for key, (title, limit, relative) in limits.items():
        value, ref = metrics.get(key), median(key)
        if value is None or ref is None:
            continue
        change = (value - ref) / ref if relative and ref else value - ref
        if abs(change) > limit:
            shown = f"{change:+.0%}" if relative else f"{change:+.3f}"
            reasons.append(f"{title} {value:.3f} vs {ref:.3f} ({shown}, limit {limit:g})")
    shares = [t for t in base if t.get("share_happy") is not None]
    if metrics.get("share_happy") is not None and shares:
        ref_mix = {e: statistics.fmean(t[f"share_{e}"] for t in shares) for e in EMOTIONS}
        distance = 0.5 * sum(abs(metrics[f"share_{e}"] - ref_mix[e]) for e in EMOTIONS)
        if distance > settings.max_mix_change:
            moved = max(EMOTIONS, key=lambda e: abs(metrics[f"share_{e}"] - ref_mix[e]))
            reasons.append(f"emotion mix moved {distance:.3f} (limit {settings.max_mix_change:g}, most: {moved} "
                           f"{metrics[f'share_{moved}']:.0%} vs {ref_mix[moved]:.0%})")
    out.update(drift_checked=True, drift=bool(reasons), drift_reasons="; ".join(reasons) or None)
    return out


def _prom_value(value: Any) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(float(value))


def _prom_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(health: dict[str, Any], model_version: str) -> str:
    """The latest run's health as a Prometheus text exposition (gauges; node_exporter textfile format)."""
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
        lines.extend([f"# HELP score_campaign_{name} {help_text}", f"# TYPE score_campaign_{name} gauge"])
        lines.extend(f"score_campaign_{name}{labels} {_prom_value(v)}" for labels, v in samples)

    finished = health["finished_at"]
    gauge("last_run_timestamp_seconds", "When the last run finished (Unix time).", [("", finished.timestamp())])
    gauge("run_info", "The last run's id and model (always 1).",
          [(f'{{run_id="{_prom_label(health["run_id"])}",model_version="{_prom_label(model_version)}"}}', 1)])
    gauge("images_per_second", "Images scored per second in the last run.", [("", health["images_per_s"])])
    gauge("images", "Images of the last run by status.",
          [(f'{{status="{s}"}}', health[f"n_{s}"]) for s in STATUSES])
    gauge("error_share", "Share of the last run's images that could not be decoded or fetched.",
          [("", health["error_share"])])
    gauge("faces_per_image", "Faces per decoded image in the last run.", [("", health["faces_per_image"])])
    gauge("detector_confidence_mean", "Mean detector score of the last run's faces.", [("", health["mean_det_score"])])
    gauge("emotion_share", "The last run's emotion mix (share of faces).",
          [(f'{{emotion="{e}"}}', health[f"share_{e}"]) for e in EMOTIONS])
    gauge("posted_lag_seconds", "Seconds between the newest posted_at scored and the end of the last run.",
          [("", health["lag_s"])])
    gauge("drift", "1 when the last run drifted from the trailing runs (see drift_reasons in the health table).",
          [("", health["drift"])])
    gauge("drift_checked", "1 when the last run was judged (enough images and earlier runs).",
          [("", health["drift_checked"])])
    return "\n".join(lines) + "\n"


def _write_text(uri: str, text: str, storage_options: dict[str, str] | None) -> None:
    """Write whole or not at all (a scraper never reads half a file): temp file + rename where local."""
    import os

    from jobs.campaign.inputs import filesystem, is_remote

    fs, path = filesystem(uri, storage_options)
    if is_remote(uri):
        fs.pipe(path, text.encode())
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def record_health(lake, cfg, run_row: dict[str, Any], out: TextIO,
                  files: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Compute, judge and write the run's health (Delta row, JSON, Prometheus textfile); print one line.
    Idempotent per run id (the health commit carries the run's app transaction). ``files``: the run's own
    files (its manifest's), read instead of filtering the tables."""
    import pyarrow as pa

    settings = cfg.health
    finished = run_row["finished_at"]
    metrics = run_metrics(lake, run_row["run_id"], finished, run_row["images_per_s"], files)
    table = lake.table(HEALTH_TABLE)
    trailing: list[dict[str, Any]] = []
    if table is not None:
        earlier = table.to_pyarrow_table().sort_by("finished_at").to_pylist()
        trailing = [t for t in earlier if t["run_id"] != run_row["run_id"]]
    health = {**metrics, **drift_check(metrics, trailing, settings)}
    lake.append_once(HEALTH_TABLE, pa.Table.from_pylist([health], schema=health_schema()), run_row["run_id"])
    _write_text(f"{lake.root}/_job/health/{run_row['run_id']}.json", json.dumps(health, default=str, indent=1),
                lake.storage_options)
    _write_text(settings.textfile or f"{lake.root}/_job/score_campaign.prom",
                prometheus_text(health, run_row["model_version"]),
                None if settings.textfile else lake.storage_options)
    print(format_health(health), file=out, flush=True)
    return health


def format_health(h: dict[str, Any]) -> str:
    from jobs.campaign.progress import fmt_duration

    def pct(v: float | None) -> str:
        return "?" if v is None else f"{v:.1%}"

    def num(v: float | None, fmt: str) -> str:
        return "?" if v is None else format(v, fmt)

    verdict = (f"DRIFT vs the last {h['n_trailing']} runs: {h['drift_reasons']}" if h["drift"] else
               f"no drift vs the last {h['n_trailing']} runs" if h["drift_checked"] else h["drift_reasons"])
    return (f"  health: error share {pct(h['error_share'])}, {num(h['faces_per_image'], '.2f')} faces/image, "
            f"detector confidence {num(h['mean_det_score'], '.3f')}, newest post {fmt_duration(h['lag_s'])} "
            f"before the run's end; {verdict}")
