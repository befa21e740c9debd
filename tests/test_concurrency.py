"""Exactly once under concurrency: real processes (not threads) sharing one lake, locally and on moto S3.

The invariant: one images row per image id, its faces once, and campaign rows equal to a one-shot run
over the same data, whatever runs, maintenance and erasures overlap, and after a holder is SIGKILLed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests._spark import (REPO, campaigns_comparable, fast_config, free_port, make_dump, read_table,  # noqa: F401
                          run_job_in_process, spark, spark_bin, wait_port, write_yaml)

PY = sys.executable


# ---------------------------------------------------------------- the lease alone, in real processes

_WORKER = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {repo!r})
    from jobs.campaign.lease import LakeLease
    root, log, rounds, opts = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    for i in range(rounds):
        lease = LakeLease(root, opts or None, f"w{{os.getpid()}}-{{i}}", ttl_s=10)
        with lease.hold(120):
            with open(log, "a") as f:
                f.write(f"enter {{os.getpid()}} {{time.time():.6f}}\\n")
            time.sleep(0.25)
            lease.ensure_held()
            with open(log, "a") as f:
                f.write(f"exit {{os.getpid()}} {{time.time():.6f}}\\n")
""")


def _contend(root: str, tmp_path: Path, opts: dict | None = None, processes: int = 4, rounds: int = 3) -> None:
    import json

    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(repo=str(REPO)))
    log = tmp_path / "log.txt"
    procs = [subprocess.Popen([PY, str(script), root, str(log), str(rounds), json.dumps(opts or {})])
             for _ in range(processes)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 2 * processes * rounds
    for (kind_a, pid_a, _), (kind_b, pid_b, _) in zip(events[0::2], events[1::2]):
        assert (kind_a, kind_b) == ("enter", "exit") and pid_a == pid_b, "two holders overlapped"


def test_lease_admits_one_process_at_a_time_locally(tmp_path):
    _contend(str(tmp_path / "lake"), tmp_path)


def test_a_killed_holder_is_taken_over_after_its_ttl_and_a_live_one_is_waited_for(tmp_path):
    import io

    from jobs.campaign.lease import LakeBusyError, LakeLease

    root = str(tmp_path / "lake")
    holder = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from jobs.campaign.lease import LakeLease
        LakeLease({root!r}, None, "sleeper", ttl_s=3).acquire(0)
        print("held", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = io.StringIO()
        with pytest.raises(LakeBusyError, match=rf"held by run sleeper \(pid {holder.pid} on .*gave up after"):
            LakeLease(root, None, "impatient").acquire(1.5, out)  # alive (heartbeats): waited for, not taken
        assert "waiting for run sleeper" in out.getvalue()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    out = io.StringIO()
    t0 = time.monotonic()
    lease = LakeLease(root, None, "next").hold(30, out)
    with lease:
        assert lease.took_over is not None and lease.took_over.record["holder"] == "sleeper"
        assert time.monotonic() - t0 < 10
    assert "stopped renewing its lease" in out.getvalue() and "taking the lake over" in out.getvalue()
    again = LakeLease(root, None, "after-release").hold(0)  # released: free at once, no takeover
    with again:
        assert again.took_over is None


# ---------------------------------------------------------------- whole runs in real processes


def _rows_of(dump_dir: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(p) for p in sorted(Path(dump_dir).rglob("*.parquet"))])


def _write(table, folder: Path) -> str:
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return str(folder)


def _submit(cfg_path: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    cmd = [spark_bin("spark-submit"), "--master", "local[1]", "--conf", f"spark.pyspark.python={PY}",
           "--conf", "spark.driver.memory=1g", str(REPO / "jobs" / "score_campaign.py"), "--config", str(cfg_path)]
    full_env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": PY, "PYSPARK_DRIVER_PYTHON": PY,
                "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(cmd, env=full_env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=str(REPO),
                            start_new_session=True)


def _check_lake(lake: str, expected_lake: str, storage_options: dict | None = None) -> None:
    images = read_table(f"{lake}/images", storage_options=storage_options)
    faces = read_table(f"{lake}/faces", storage_options=storage_options)
    expected = read_table(f"{expected_lake}/images")
    assert images.image_id.is_unique, images.image_id.value_counts().head()
    assert set(images.image_id) == set(expected.image_id)
    assert not faces.duplicated(["image_id", "face_index"]).any()
    per_image = faces.groupby("image_id").size()
    for r in images.itertuples():
        assert per_image.get(r.image_id, 0) == r.n_faces, r.image_id
    got = campaigns_comparable(read_table(f"{lake}/campaigns", storage_options=storage_options))
    want = campaigns_comparable(read_table(f"{expected_lake}/campaigns"))
    assert got.drop(columns=["model_version"]).equals(want.drop(columns=["model_version"])), (got, want)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_overlapping_runs_maintenance_and_an_erasure_keep_every_image_once(spark, tmp_path):  # noqa: F811
    info = make_dump(tmp_path / "gen", n_images=12, days=1, mode="bytes", bad=False, seed=21)
    rows = _rows_of(info["dump"])
    ids = rows.column("image_id").to_pylist()
    first = _write(rows.slice(0, 2), tmp_path / "first")
    dump_a = _write(rows.slice(0, 8), tmp_path / "a")  # shares 0-1 with first, 5-7 with b
    dump_b = _write(rows.slice(5, len(ids) - 5), tmp_path / "b")
    erased = ids[6]
    lake = str(tmp_path / "lake")
    run_job_in_process(spark, fast_config(first, lake, input={"extra_columns": []}))  # the tables exist

    procs, logs = [], []
    for name, dump in (("a", dump_a), ("b", dump_b), ("a-again", dump_a)):  # 3 overlapping, one dump twice
        cfg = write_yaml(tmp_path / f"{name}.yaml", fast_config(dump, lake, input={"extra_columns": []},
                                                                spark={"master": "local[1]"}))
        logs.append(tmp_path / f"{name}.log")
        procs.append(_submit(cfg, logs[-1]))
    time.sleep(8)  # a scoring run is under way: maintenance and an erasure now overlap it
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    maintain = subprocess.Popen([PY, str(REPO / "jobs" / "maintain_lake.py"), "--lake", lake, "--vacuum-hours",
                                 "24"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    erase = subprocess.Popen([PY, str(REPO / "jobs" / "erase.py"), "--lake", lake, "--image", erased, "--reason",
                              "test"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    codes = [p.wait(timeout=1200) for p in procs]
    assert codes == [0, 0, 0], [log.read_text()[-3000:] for log in logs]
    assert maintain.wait(timeout=300) == 0, maintain.stdout.read()
    assert erase.wait(timeout=300) == 0, erase.stdout.read()
    text = "".join(log.read_text() for log in logs)
    assert "waiting for run" in text  # at least one run waited, and said for whom
    run_job_in_process(spark, fast_config(dump_a, lake, input={"extra_columns": []}))  # recomputes stale campaigns

    keep = [i for i, image_id in enumerate(ids) if image_id != erased]
    expected = str(tmp_path / "one-shot")
    union = _write(rows.take(keep), tmp_path / "union")
    run_job_in_process(spark, fast_config(union, expected, input={"extra_columns": []}))
    _check_lake(lake, expected)
    assert erased not in set(read_table(f"{lake}/images").image_id)
    runs = read_table(f"{lake}/runs")
    assert runs.run_id.is_unique and (runs.lock_wait_s.fillna(0) >= 0).all()
    assert runs.lock_wait_s.max() > 1  # the runs table says who waited


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(900)
def test_a_holder_killed_mid_run_leaves_a_lake_the_next_run_completes(spark, tmp_path):  # noqa: F811
    info = make_dump(tmp_path / "gen", n_images=10, days=1, mode="bytes", bad=False, seed=22)
    lake = str(tmp_path / "lake")
    cfg = fast_config(info["dump"], lake, input={"extra_columns": []}, spark={"master": "local[1]"},
                      output={"lock_ttl_s": 4})
    log = tmp_path / "killed.log"
    proc = _submit(write_yaml(tmp_path / "c.yaml", cfg), log)
    lease_dir = Path(lake) / "_job" / "lease"
    deadline = time.time() + 240
    while time.time() < deadline and not (lease_dir.exists() and any(lease_dir.glob("*.json"))):
        time.sleep(0.5)
    time.sleep(6)  # mid-run: the lease is held and scoring has started
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = run_job_in_process(spark, cfg, run_id="after-kill")
    assert "taking the lake over" in again["_log"], again["_log"]
    expected = str(tmp_path / "one-shot")
    run_job_in_process(spark, fast_config(info["dump"], expected, input={"extra_columns": []}))
    _check_lake(lake, expected)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.s3
@pytest.mark.timeout(1200)
def test_overlapping_runs_on_s3(spark, tmp_path):  # noqa: F811
    import boto3
    import s3fs

    port = free_port()
    server = subprocess.Popen([str(Path(PY).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=60)
        endpoint = f"http://127.0.0.1:{port}"
        opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="lake")
        _contend("s3://lake/lease-test", tmp_path / "lease", opts, processes=3, rounds=2)

        info = make_dump(tmp_path / "gen", n_images=8, days=1, mode="bytes", bad=False, seed=23)
        rows = _rows_of(info["dump"])
        dumps = [_write(rows.slice(0, 6), tmp_path / "a"), _write(rows.slice(3, 5), tmp_path / "b")]
        procs = []
        for i, dump in enumerate(dumps):
            cfg = fast_config(dump, "s3://lake/l", input={"extra_columns": []}, spark={"master": "local[1]"},
                              output={"storage_options": opts})
            procs.append(_submit(write_yaml(tmp_path / f"s3-{i}.yaml", cfg), tmp_path / f"s3-{i}.log",
                                 env={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}))
        codes = [p.wait(timeout=900) for p in procs]
        assert codes == [0, 0], [(tmp_path / f"s3-{i}.log").read_text()[-3000:] for i in range(2)]
        expected = str(tmp_path / "one-shot")
        run_job_in_process(spark, fast_config(_write(rows, tmp_path / "union"), expected,
                                              input={"extra_columns": []}))
        from jobs.campaign.lake import delta_options

        _check_lake("s3://lake/l", expected, delta_options(opts))
        fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint})
        assert fs.ls("lake/l/_job/lease")  # the lease lived on S3 itself
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(600)
def test_a_run_that_gives_up_waiting_is_recorded_by_the_next_holder(spark, tmp_path):  # noqa: F811
    from jobs.campaign.lease import LakeBusyError, LakeLease

    info = make_dump(tmp_path / "gen", n_images=2, days=1, mode="bytes", bad=False, seed=24)
    lake = str(tmp_path / "lake")
    cfg = fast_config(info["dump"], lake, input={"extra_columns": []}, output={"lock_wait_s": 1.5})
    other = LakeLease(lake, None, "a-long-backfill").hold(0)  # another holder, alive (it renews its lease)
    with other:
        with pytest.raises(LakeBusyError, match="held by run a-long-backfill"):
            run_job_in_process(spark, cfg, run_id="impatient")
    row = run_job_in_process(spark, cfg, run_id="next")
    assert row["status"] == "succeeded"
    runs = read_table(f"{lake}/runs").set_index("run_id")
    assert runs.loc["impatient", "status"] == "gave_up_waiting" and runs.loc["impatient", "lock_wait_s"] >= 1.5
    assert runs.loc["next", "status"] == "succeeded"
    assert runs[["n_scored", "n_ok"]].loc["impatient"].isna().all()  # it scored nothing: null counts
    assert not list((Path(lake) / "_job" / "gave_up").glob("*.json"))  # the note was consumed
