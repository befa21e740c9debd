"""Run health (jobs/campaign/health.py): per-run metrics in the health table, a JSON file and a Prometheus
textfile; the drift check against the trailing runs; the index dashboard and --fail-on-drift; and the
scheduled run that a held lock skipped (conf/schedule/locked)."""
from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from fer_core.labels import EMOTIONS
from jobs.campaign.config import job_config_from_dict
from jobs.campaign.health import drift_check, prometheus_text, record_health
from fer_core.tables import faces_schema, images_schema
from jobs.campaign.lake import Lake
from jobs.campaign.lake_files import write_part_files
from tests._spark import REPO, fast_config, make_dump, read_table, submit, write_yaml

UTC = dt.timezone.utc


def settings(**over):
    return job_config_from_dict({"health": {"min_images": 10, "min_trailing_runs": 3, **over}}).health


def metrics(n_scored=100, error_share=0.02, faces_per_image=1.2, mean_det_score=0.95, mix=None) -> dict:
    mix = mix or {"happy": 0.4, "neutral": 0.3, "sad": 0.1, "angry": 0.1, "surprise": 0.1}
    return {"n_scored": n_scored, "error_share": error_share, "faces_per_image": faces_per_image,
            "mean_det_score": mean_det_score, **{f"share_{e}": mix.get(e, 0.0) for e in EMOTIONS}}


TRAILING = [metrics(error_share=0.02 + d, faces_per_image=1.2 + d, mean_det_score=0.95 - d / 10)
            for d in (0.0, 0.01, -0.01, 0.02)]


def test_a_steady_run_does_not_drift():
    verdict = drift_check(metrics(), TRAILING, settings())
    assert verdict == {"drift_checked": True, "drift": False, "drift_reasons": None, "n_trailing": 4}


@pytest.mark.parametrize("change, words", [
    ({"error_share": 0.09}, "error share 0.090 vs 0.025"),
    ({"faces_per_image": 0.7}, "faces per image 0.700 vs 1.205 (-42%"),
    ({"mean_det_score": 0.85}, "detector confidence 0.850 vs 0.950 (-0.100"),
    ({"mix": {"sad": 0.6, "neutral": 0.2, "happy": 0.2}}, "emotion mix moved 0.500 (limit 0.15, most: sad 60% vs 10%)"),
])
def test_each_figure_that_moves_past_its_threshold_is_named(change, words):
    verdict = drift_check(metrics(**change), TRAILING, settings())
    assert verdict["drift"] and verdict["drift_checked"]
    assert words in verdict["drift_reasons"] and ";" not in verdict["drift_reasons"]  # only that one


def test_thresholds_are_configurable_and_small_runs_are_not_judged():
    assert not drift_check(metrics(error_share=0.09), TRAILING, settings(max_error_share_change=0.1))["drift"]
    assert drift_check(metrics(faces_per_image=1.3), TRAILING, settings(max_faces_per_image_change=0.05))["drift"]
    small = drift_check(metrics(n_scored=5, error_share=0.9), TRAILING, settings())
    assert small["drift_checked"] is False and small["drift"] is False and "min_images" in small["drift_reasons"]
    few = drift_check(metrics(error_share=0.9), TRAILING[:2], settings())
    assert few["drift_checked"] is False and "2 earlier runs" in few["drift_reasons"]
    # runs under min_images are no baseline either, and only the last trailing_runs count
    tiny = [metrics(n_scored=3, error_share=0.9)] * 5
    assert drift_check(metrics(), TRAILING + tiny, settings())["n_trailing"] == 4
    assert drift_check(metrics(), TRAILING, settings(trailing_runs=2))["n_trailing"] == 2


# ------------------------------------------------------------------- on a real lake, no Spark


def commit_run(lake: Lake, run: int, n: int, faces_each: int, det_score: float, emotion: str, bad: int = 0) -> dict:
    """A run's images and faces rows, written and committed the way the executors and driver do."""
    run_id = f"run-{run}"
    posted = dt.datetime(2024, 6, 1, tzinfo=UTC) + dt.timedelta(days=run)
    base = {c: None for c in images_schema().names}
    images, faces = [], []
    for i in range(n):
        status = "decode_error" if i < bad else "ok"
        images.append({**base, "image_id": f"{run_id}-{i}", "campaign_id": "c", "status": status,
                       "posted_at": posted + dt.timedelta(minutes=i), "n_faces": 0 if i < bad else faces_each,
                       "model_version": "m@1", "run_id": run_id, "scored_at": posted})
        for k in range(0 if i < bad else faces_each):
            faces.append({**{c: None for c in faces_schema().names}, "image_id": f"{run_id}-{i}", "campaign_id": "c",
                          "face_index": k, "det_score": det_score, "emotion": emotion, "run_id": run_id,
                          "model_version": "m@1"})
    for name, rows, schema in (("images", images, images_schema()), ("faces", faces, faces_schema())):
        if rows:
            lake.commit_files(name, write_part_files(lake.uri(name), rows, schema, run_id, None), schema, run_id)
    return {"run_id": run_id, "finished_at": posted + dt.timedelta(hours=2), "images_per_s": 10.0 + run,
            "model_version": "m@1"}


def test_each_run_writes_its_health_row_json_and_textfile_and_a_shift_drifts(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    textfile = tmp_path / "node_exporter" / "score_campaign.prom"
    cfg = job_config_from_dict({"output": {"path": lake.root},
                                "health": {"min_images": 10, "min_trailing_runs": 3, "textfile": str(textfile)}})
    out = io.StringIO()
    results = []
    for run in range(3):
        results.append(record_health(lake, cfg, commit_run(lake, run, 20, 1, 0.97, "happy", bad=1), out))
    assert [r["drift_checked"] for r in results] == [False, False, False]
    first = results[0]
    assert first["n_scored"] == 20 and first["n_ok"] == 19 and first["n_decode_error"] == 1
    assert first["error_share"] == pytest.approx(1 / 20) and first["faces_per_image"] == pytest.approx(1.0)
    assert first["mean_det_score"] == pytest.approx(0.97) and first["share_happy"] == 1.0
    assert first["lag_s"] == pytest.approx(2 * 3600 - 19 * 60)  # the newest post is 19 min after the first
    # the fourth run: two faces per image, all sad, lower confidence
    shifted = record_health(lake, cfg, commit_run(lake, 3, 20, 2, 0.80, "sad", bad=1), out)
    assert shifted["drift"] and shifted["n_trailing"] == 3
    for words in ("faces per image 2.000 vs 1.000", "detector confidence 0.800 vs 0.970", "emotion mix moved 1.000"):
        assert words in shifted["drift_reasons"]
    # the health table: one row per run, the same figures
    table = read_table(lake.uri("health")).sort_values("finished_at")
    assert table.run_id.tolist() == ["run-0", "run-1", "run-2", "run-3"]
    assert table.drift.tolist() == [False, False, False, True]
    assert table.iloc[3].faces_per_image == pytest.approx(2.0)
    again = record_health(lake, cfg, commit_run(lake, 3, 0, 0, 0, "sad"), out)  # a replay: no new row
    assert len(read_table(lake.uri("health"))) == 4 and again["drift"]
    # the JSON next to it, and the Prometheus textfile of the latest run
    saved = json.loads((tmp_path / "lake" / "_job" / "health" / "run-3.json").read_text())
    assert saved["drift"] is True and saved["faces_per_image"] == pytest.approx(2.0)
    samples = parse_prometheus(textfile.read_text())
    assert samples["score_campaign_drift"] == 1 and samples["score_campaign_faces_per_image"] == 2.0
    assert samples['score_campaign_images{status="decode_error"}'] == 1
    assert samples['score_campaign_emotion_share{emotion="sad"}'] == 1.0
    assert samples["score_campaign_images_per_second"] == 13.0
    assert "DRIFT vs the last 3 runs: " in out.getvalue()


def parse_prometheus(text: str) -> dict[str, float]:
    """name{labels} -> value; every line is a comment (# HELP / # TYPE) or a sample."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# "):
            assert re.match(r"# (HELP|TYPE) score_campaign_\w+ ", line), line
            continue
        value = r'"(?:[^"\\]|\\.)*"'  # a label value, with its escapes
        m = re.fullmatch(rf'(score_campaign_\w+(?:\{{[a-z_]+={value}(?:,[a-z_]+={value})*\}})?) (\S+)', line)
        assert m, line
        samples[m.group(1)] = float(m.group(2))
    return samples


def test_the_textfile_writes_nan_for_figures_a_run_lacks():
    health = {"run_id": 'r"1', "finished_at": dt.datetime(2024, 6, 1, tzinfo=UTC), "images_per_s": 0.0,
              **{f"n_{s}": 0 for s in ("ok", "no_face", "decode_error", "fetch_error", "too_large", "empty")},
              "error_share": None, "faces_per_image": None, "mean_det_score": None,
              **{f"share_{e}": None for e in EMOTIONS}, "lag_s": None, "drift": False, "drift_checked": False}
    samples = parse_prometheus(prometheus_text(health, "m@1"))
    assert math.isnan(samples["score_campaign_error_share"]) and samples["score_campaign_drift"] == 0
    assert 'score_campaign_run_info{run_id="r\\"1",model_version="m@1"}' in samples


# ------------------------------------------------------------------- the job end to end


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1200)
def test_fail_on_drift_exits_3_and_the_index_shows_the_drift(tmp_path):
    info = make_dump(tmp_path / "s", n_images=12, days=2, seed=5)
    lake = tmp_path / "lake"
    days = sorted(p.name for p in Path(info["dump"]).iterdir())
    # any change is a drift (limits 0), judged from the first earlier run on
    health = {"min_images": 1, "min_trailing_runs": 1, "max_faces_per_image_change": 0.0, "max_mix_change": 0.0}
    cfg = fast_config(f"{info['dump']}/{days[0]}", lake, health=health)
    cfg["output"]["dashboards"] = True
    first = submit(["--config", str(write_yaml(tmp_path / "a.yaml", cfg)), "--fail-on-drift", "--no-dashboards"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "health: error share" in first.stdout and "not judged: 0 earlier runs" in first.stdout
    cfg["input"]["path"] = f"{info['dump']}/{days[1]}"
    second = submit(["--config", str(write_yaml(tmp_path / "b.yaml", cfg)), "--fail-on-drift"])
    assert second.returncode == 3, second.stdout[-3000:] + second.stderr[-3000:]
    # (spark-submit hands the Python driver's stderr to its own stdout)
    assert "drifted: " in second.stdout + second.stderr and "DRIFT vs the last 1 runs" in second.stdout
    rows = read_table(f"{lake}/health").sort_values("finished_at")
    assert rows.drift.tolist() == [False, True]
    runs = read_table(f"{lake}/runs")
    assert sorted(runs.run_id) == sorted(rows.run_id)  # the drifted run is committed all the same
    index = (lake / "dashboards" / "index.html").read_text()
    assert 'id="run-health"' in index and "the latest run drifted" in index and "DRIFT: " in index
    assert "score_campaign_drift 1" in (lake / "_job" / "score_campaign.prom").read_text().splitlines()


# ------------------------------------------------------------------- the schedule


LOCKED = REPO / "conf" / "schedule" / "locked"


def test_a_scheduled_run_skipped_by_the_lock_leaves_a_line(tmp_path):
    lock, log = tmp_path / "job.lock", tmp_path / "job.log"
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the previous run still going
        r = subprocess.run([str(LOCKED), str(lock), str(log), "echo", "scored"], capture_output=True, text=True,
                           timeout=30)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ skipped: echo did not start, the previous run still holds {lock}",
        lines[0]), lines
    r = subprocess.run([str(LOCKED), str(lock), str(log), "sh", "-c", "echo scored; exit 4"], timeout=30)
    assert r.returncode == 4  # the lock is free again: the command runs, its status is the script's
    assert log.read_text().splitlines()[1:] == ["scored"]


def test_the_crontab_runs_the_job_through_the_logging_lock():
    jobs = [line for line in (REPO / "conf" / "schedule" / "crontab").read_text().splitlines()
            if "score_campaign.py" in line and not line.startswith("#")]
    hourly = [line for line in jobs if line.startswith("5 * * * *")]
    assert len(hourly) == 1 and " conf/schedule/locked /tmp/score_campaign.lock logs/score_campaign.log " in hourly[0]
    assert " --since 1d " in hourly[0]  # it reads the dates its comment says: yesterday's and today's
    backfill = [line for line in jobs if line not in hourly]
    assert len(backfill) == 1 and " conf/schedule/locked /tmp/score_campaign.lock " in backfill[0]
    assert " --backfill-max " in backfill[0] and "--since" not in backfill[0]


def test_a_person_in_a_video_counts_once_in_the_health_figures(tmp_path):
    """A run of one photo (one happy face) and one video (one sad person over three sampled frames): the
    health mix and faces per image count the person once, as the KPIs do; the detector's mean is per frame."""
    from jobs.campaign.health import run_metrics

    lake = Lake(str(tmp_path / "lake"))
    run_id, posted = "run-v", dt.datetime(2024, 6, 1, tzinfo=UTC)
    base = {c: None for c in images_schema().names}
    images = [{**base, "image_id": "photo", "campaign_id": "c", "status": "ok", "posted_at": posted, "n_faces": 1,
               "media_type": "image", "model_version": "m@1", "scoring_id": "s", "run_id": run_id},
              {**base, "image_id": "video", "campaign_id": "c", "status": "ok", "posted_at": posted, "n_faces": 1,
               "media_type": "video", "n_frames": 3, "model_version": "m@1", "scoring_id": "s", "run_id": run_id}]

    def face(image_id: str, k: int, emotion: str, det: float, frame_ms=None, track_id=None) -> dict:
        return {**{c: None for c in faces_schema().names}, "image_id": image_id, "campaign_id": "c", "face_index": k,
                "det_score": det, "emotion": emotion, "sentiment": "positive" if emotion == "happy" else "negative",
                "valence": 1.0 if emotion == "happy" else -1.0, "quality": "good", "face_px": 80.0,
                "frame_ms": frame_ms, "track_id": track_id, "run_id": run_id, "model_version": "m@1",
                "scoring_id": "s", **{f"p_{e}": float(e == emotion) for e in EMOTIONS}}

    faces = [face("photo", 0, "happy", 1.0)] + [face("video", k, "sad", 0.8, 1000 * k, 0) for k in range(3)]
    for name, rows, schema in (("images", images, images_schema()), ("faces", faces, faces_schema())):
        lake.commit_files(name, write_part_files(lake.uri(name), rows, schema, run_id, None), schema, run_id)
    m = run_metrics(lake, run_id, posted + dt.timedelta(hours=1), 1.0)
    assert m["n_faces"] == 2 and m["faces_per_image"] == pytest.approx(1.0)
    assert m["share_happy"] == pytest.approx(0.5) and m["share_sad"] == pytest.approx(0.5)
    assert m["mean_det_score"] == pytest.approx((1.0 + 3 * 0.8) / 4)


def test_the_index_reads_a_lag_in_hours_and_an_old_one_in_days():
    from dashboards.render import _fmt_lag

    assert _fmt_lag(None) == "–" and _fmt_lag(5400) == "1.5 h" and _fmt_lag(47 * 3600) == "47.0 h"
    assert _fmt_lag(21906.2 * 3600) == "912.8 d"
