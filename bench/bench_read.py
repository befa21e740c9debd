"""Reading speed of the job's input stage (read_input -> every byte of every row on the executors), for this
tree and, in the same run, for another checkout of the project (e.g. the commit before a change).

    python bench/bench_read.py [--rows 4000] [--kb 60] [--other /path/to/old/checkout] [--repeat 3]

A Parquet dump of --rows rows with --kb KB image cells is written once; each tree reads it --repeat times in
its own process (local[2], as the job), alternating trees, and the median rows/s of each is printed with
the ratio. No scoring: this isolates what reading costs (the job's whole-run figure is bench/bench_job.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
from pyspark.sql import SparkSession, functions as F
from jobs.campaign.config import job_config_from_dict
from jobs.campaign.inputs import read_input
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.sql.session.timeZone", "UTC").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
cfg = job_config_from_dict({"input": {"path": sys.argv[2]}, "output": {"path": "unused", "dashboards": False}})
times = []
for _ in range(int(sys.argv[3]) + 1):  # the first read warms the JVM and the Python workers
    t0 = time.perf_counter()
    df = read_input(spark, cfg.input)
    n, size = df.select(F.count(F.lit(1)), F.sum(F.length("image"))).first()
    times.append(time.perf_counter() - t0)
print(json.dumps({"rows": n, "bytes": size, "seconds": times[1:]}))
"""


def write_dump(folder: Path, rows: int, kb: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_file = 500
    for start in range(0, rows, per_file):
        n = min(per_file, rows - start)
        pq.write_table(pa.table({
            "image_id": [f"img-{start + i}" for i in range(n)],
            "campaign_id": [f"c{(start + i) % 5}" for i in range(n)],
            "posted_at": pa.array(np.full(n, 1_796_000_000_000_000, "int64")).cast(pa.timestamp("us", tz="UTC")),
            "caption": ["a caption #tag"] * n,
            "image": [rng.bytes(kb * 1024) for _ in range(n)],
        }), folder / f"part-{start // per_file:04d}.parquet")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--kb", type=int, default=60)
    ap.add_argument("--other", default="", help="another checkout to compare with (e.g. a worktree of HEAD~1)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    trees = {"this tree": str(HERE)} | ({"other": str(Path(args.other).resolve())} if args.other else {})
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "dump"
        write_dump(dump, args.rows, args.kb)
        print(f"{args.rows} rows x {args.kb} KB in {len(list(dump.glob('*.parquet')))} files; "
              f"{args.repeat} reads per tree after a warm-up, local[2]")
        seconds: dict[str, list[float]] = {name: [] for name in trees}
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        for name, root in trees.items():
            out = subprocess.run([sys.executable, "-c", _CHILD, root, str(dump), str(args.repeat)], env={
                **env, "PYTHONPATH": root}, capture_output=True, text=True, cwd=root)
            if out.returncode:
                print(out.stderr[-2000:])
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            assert result["rows"] == args.rows, result
            seconds[name] += result["seconds"]
        rates = {name: args.rows / statistics.median(s) for name, s in seconds.items()}
        for name, rate in rates.items():
            ratio = f"  x{rate / rates['other']:.2f} vs other" if "other" in rates and name != "other" else ""
            print(f"{name:>10}: {rate:8.0f} rows/s ({rate * args.kb / 1024:6.1f} MB/s){ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
