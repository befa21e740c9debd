"""What a scheduled run costs as the lake's history grows (issue 29): 1k, 100k and 1M rows of history.

    nice -n 10 python bench/bench_history.py [--sizes 1000,100000,1000000] [--new 100] [--detector haar]

For each history size H, in one Spark session (local[2], as a warm scheduler would keep it):
1. seed: the real job scores a few photos into a fresh lake, which gives the scoring identity and real
   rows to copy;
2. history: H images rows (and H faces rows) of that identity are written straight into the lake with the
   job's own writer (``write_part_files`` + ``Lake.commit_files``, one commit per 10k rows, 20 campaigns),
   next to a dump history of the same H rows (Parquet files of 10k rows in ``date=`` folders, the
   payloads a few bytes: an image already scored is never decoded), and the campaigns rows by the job's
   recompute;
3. catch-up: one run over the whole dump (0 new images), which lets the job record what it consumed;
4. measured: a run with 0 new images, then a run after a new dump file with ``--new`` photos arrived.
   Each prints its wall time (run_job, then the dashboards' render as jobs/score_campaign.py does), the
   job's phase times (run_job's ``phases``: listing, read, skip, scoring, commit, recompute; and dashboards) and peak RSS of the driver (this Python process) and of driver + JVM +
   Python workers (psutil, every 0.25 s).
At the end: the fixed cost (the 0-new run's wall time) at each size over the smallest size's (the issue's
goal: under 2x from 1k to 1M rows), and the 100-new run's.
"""
from __future__ import annotations

import argparse
import logging
import datetime as dt
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from bench.bench_job import RssSampler, make_photos  # noqa: E402 (after the path set-up)

ROWS_PER_FILE = 10_000
N_CAMPAIGNS = 20
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def dump_table(ids: list[str], payloads: list[bytes], start_minute: int):
    import pyarrow as pa

    n = len(ids)
    return pa.table({
        "image_id": ids,
        "campaign_id": [f"c{(start_minute + i) % N_CAMPAIGNS:02d}" for i in range(n)],
        "posted_at": pa.array([T0 + dt.timedelta(minutes=start_minute + i) for i in range(n)],
                              pa.timestamp("us", tz="UTC")),
        "platform": ["x"] * n, "caption": ["bench"] * n, "image": pa.array(payloads, pa.binary()),
    })


def job_config(dump: Path, lake: Path, detector: str) -> dict:
    return {
        "input": {"path": str(dump), "extra_columns": []}, "output": {"path": str(lake), "dashboards": True},
        "detector": {"name": detector}, "model": {"batch_size": 64, "tta": False},
        "runtime": {"intra_threads": 1, "inter_threads": 1},
        "spark": {"master": "local[2]", "arrow_batch_size": 32, "images_per_task": 250,
                  "conf": {"spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "4"}},
        "progress": {"interval_s": 0},
    }


class RenderSummary(logging.Handler):
    """The dashboards' summary line of a render (pages written, aggregates computed / reused / added)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("campaign pages:"):
            self.line = record.getMessage()


def run(spark, dump: Path, lake: Path, detector: str, label: str, profile: str = "") -> dict:
    import io

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import render, run_job

    cfg = job_config_from_dict(job_config(dump, lake, detector))
    summary = RenderSummary()
    logger = logging.getLogger("dashboards.render")
    logger.addHandler(summary)
    logger.setLevel(logging.INFO)
    with RssSampler() as rss:
        t = time.perf_counter()
        row = run_job(spark, cfg, out=io.StringIO())
        t_render = time.perf_counter()
        if profile:  # where a render's time goes (pstats file)
            import cProfile

            cProfile.runctx("render(cfg)", globals(), {"render": render, "cfg": cfg}, profile)
        else:
            render(cfg)  # as jobs/score_campaign.py does after the run
        t_end = time.perf_counter()
    logger.removeHandler(summary)
    wall = t_end - t
    phases = {k.removesuffix("_s"): v for k, v in (row.get("phases") or {}).items()}
    phases["dashboards"] = t_end - t_render
    text = ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
    print(f"  {label}: {wall:.1f}s, {row.get('n_scored', 0)} scored; {text}; peak RSS driver "
          f"{rss.driver / 2**20:.0f} MiB, driver+JVM+workers {rss.peak / 2**20:.0f} MiB", flush=True)
    if summary.line:
        print(f"    dashboards: {summary.line}", flush=True)
    return {"wall": wall, "phases": phases, "driver": rss.driver, "total": rss.peak, "row": row}


def write_history(spark, lake_dir: Path, dump: Path, n: int) -> None:
    """n images + faces rows of the lake's identity (copied from the seed run's rows) and their dump files."""
    import pyarrow.parquet as pq

    from fer_core.tables import faces_schema
    from jobs.campaign.campaigns import recompute_campaigns
    from jobs.campaign.lake import Lake
    from jobs.campaign.lake_files import write_part_files

    lake = Lake(str(lake_dir))
    images_t, faces_t = lake.table("images"), lake.table("faces")
    img_schema = images_t.schema().to_arrow()
    import pyarrow as pa

    img_schema = pa.schema(img_schema)
    seed_img = next(r for r in images_t.to_pyarrow_table().to_pylist() if r["status"] == "ok" and r["n_faces"])
    seed_face = next(r for r in faces_t.to_pyarrow_table().to_pylist() if r["image_id"] == seed_img["image_id"])
    sid = seed_img["scoring_id"]
    for start in range(0, n, ROWS_PER_FILE):
        k = start // ROWS_PER_FILE
        ids = [f"h-{i:08d}" for i in range(start, min(n, start + ROWS_PER_FILE))]
        part = dump / f"date={(T0 + dt.timedelta(days=k)).date()}" / "part-00000.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(dump_table(ids, [b"\xff\xd8 scored"] * len(ids), start), part)
        run_id = f"history-{k:05d}"
        images, faces = [], []
        for j, image_id in enumerate(ids):
            campaign = f"c{(start + j) % N_CAMPAIGNS:02d}"
            posted = T0 + dt.timedelta(minutes=start + j)
            images.append({**seed_img, "image_id": image_id, "campaign_id": campaign, "posted_at": posted,
                           "run_id": run_id, "input_file": str(part), "scoring_id": sid})
            faces.append({**seed_face, "image_id": image_id, "campaign_id": campaign, "run_id": run_id})
        for name, rows, schema in (("faces", faces, faces_schema()), ("images", images, img_schema)):
            lake.commit_files(name, write_part_files(lake.uri(name), rows, schema, run_id, None), schema, run_id)
    rows = recompute_campaigns(spark, lake, [f"c{c:02d}" for c in range(N_CAMPAIGNS)], sid, "history-campaigns")
    lake.merge_campaigns(rows, "history-campaigns")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000", help="rows of history")
    ap.add_argument("--new", type=int, default=100, help="new photos in the second measured run")
    ap.add_argument("--detector", default="haar", help="haar keeps the scoring phase short; retinaface is the default")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--profile-render", default="", help="cProfile the last size's new-images render into this file")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench_history_"))
    photos = make_photos(max(args.new, 4), (h, w))
    print(f"bench_history: sizes {args.sizes}, {args.new} new photos {w}x{h}, detector {args.detector}, work {work}")

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.session import build_session

    spark = build_session(job_config_from_dict(job_config(work, work, args.detector)))
    results: dict[int, dict] = {}
    for n in [int(v) for v in args.sizes.split(",") if v.strip()]:
        print(f"history {n:,} rows:", flush=True)
        dump, lake = work / f"dump_{n}", work / f"lake_{n}"
        seed = dump / "date=2023-12-31" / "part-seed.parquet"
        seed.parent.mkdir(parents=True)
        import pyarrow.parquet as pq

        pq.write_table(dump_table([f"seed-{i}" for i in range(4)], photos[:4], -4), seed)
        run(spark, dump, lake, args.detector, "seed run (4 photos)")
        t = time.perf_counter()
        write_history(spark, lake, dump, n)
        print(f"  wrote {n:,} rows of history in {time.perf_counter() - t:.0f}s", flush=True)
        run(spark, dump, lake, args.detector, "catch-up run over the dump history")
        zero = run(spark, dump, lake, args.detector, "run with 0 new images")
        new_part = dump / "date=2030-01-01" / "part-00000.parquet"
        new_part.parent.mkdir(parents=True)
        pq.write_table(dump_table([f"new-{i}" for i in range(args.new)], photos[:args.new], 10**6), new_part)
        last = n == max(int(v) for v in args.sizes.split(",") if v.strip())
        hundred = run(spark, dump, lake, args.detector, f"run with {args.new} new images",
                      profile=args.profile_render if last else "")
        results[n] = {"zero": zero, "new": hundred}
    spark.stop()
    sizes = sorted(results)
    base = results[sizes[0]]
    print("\n| history rows | 0 new: wall | 0 new: driver / all RSS | "
          f"{args.new} new: wall | {args.new} new: driver / all RSS | fixed cost vs {sizes[0]:,} |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        z, m = results[n]["zero"], results[n]["new"]
        print(f"| {n:,} | {z['wall']:.1f} s | {z['driver'] / 2**20:.0f} / {z['total'] / 2**20:.0f} MiB | "
              f"{m['wall']:.1f} s | {m['driver'] / 2**20:.0f} / {m['total'] / 2**20:.0f} MiB | "
              f"x{z['wall'] / base['zero']['wall']:.2f} |")
    phases = sorted({k for r in results.values() for k in r["zero"]["phases"]})
    if phases:
        print("\nphase times (s), 0 new / new:")
        for n in sizes:
            z, m = results[n]["zero"]["phases"], results[n]["new"]["phases"]
            print(f"  {n:,}: " + ", ".join(f"{k} {z.get(k, 0):.1f}/{m.get(k, 0):.1f}" for k in phases))
    print(f"(peak RSS of this process over the whole bench: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
