"""Shared helpers and fixtures of the job tests (tests/test_job_*.py import from here).

Spark runs as local[2] with small, fast settings; every server a test needs (moto S3, a standalone
Spark master + worker) is started by the test itself on 127.0.0.1 and stopped after it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SPARK_BIN = Path(PY).parent  # spark-submit / spark-class are installed next to the venv python

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", PY)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", PY)


def spark_bin(name: str) -> str:
    """Path of spark-submit / spark-class (venv bin, else pyspark/bin)."""
    cand = SPARK_BIN / name
    if cand.exists():
        return str(cand)
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / name)


def fast_config(input_path: str, lake: str, **over: Any) -> dict[str, Any]:
    """A tiny, fast config: Haar detector, no TTA, small batches, no progress thread, no dashboards."""
    cfg: dict[str, Any] = {
        "input": {"path": str(input_path), "extra_columns": ["likes"]},
        "output": {"path": str(lake), "dashboards": False},
        "detector": {"name": "haar", "min_face_size": 20},
        "model": {"batch_size": 16, "tta": False},
        "runtime": {"intra_threads": 1, "inter_threads": 1},
        "spark": {"master": "local[2]", "arrow_batch_size": 8, "images_per_task": 8,
                  "conf": {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
                           "spark.driver.memory": "1g"}},
        "progress": {"interval_s": 0},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def make_dump(out: Path, n_images: int = 10, days: int = 2, mode: str = "bytes", **kw: Any) -> dict[str, Any]:
    from jobs.make_sample_dump import write_dump

    return write_dump(out, n_images=n_images, days=days, mode=mode, canvas=(240, 320), **kw)


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for the in-process job tests."""
    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.session import build_session

    cfg = job_config_from_dict(fast_config("unused", "unused"))
    session = build_session(cfg)
    yield session
    session.stop()


def run_job_in_process(spark, cfg_dict: dict[str, Any], run_id: str | None = None, **kw: Any) -> dict[str, Any]:
    """run_job with a validated config dict, on the shared session (``kw``: e.g. dry_run=True)."""
    import io

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import run_job
    from jobs.campaign.session import session_confs

    cfg = job_config_from_dict(cfg_dict)
    for key, value in session_confs(cfg).items():
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    buf = io.StringIO()
    row = run_job(spark, cfg, run_id, out=buf, **kw)
    row["_log"] = buf.getvalue()
    return row


def submit(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 900,
           master: str = "local[2]", spark_args: list[str] = ()) -> subprocess.CompletedProcess:
    """spark-submit [SPARK_ARGS] jobs/score_campaign.py ARGS in a subprocess (nice'd), capturing output.
    ``spark_args`` come after the defaults, so a --conf there wins."""
    cmd = ["nice", "-n", "10", spark_bin("spark-submit"), "--master", master,
           "--conf", f"spark.pyspark.python={PY}", "--conf", "spark.driver.memory=1g", *spark_args,
           str(REPO / "jobs" / "score_campaign.py"), *args]
    full_env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": PY, "PYSPARK_DRIVER_PYTHON": PY,
                "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))


def read_table(uri: str, columns: list[str] | None = None, storage_options: dict | None = None):
    """A Delta table as pandas (deltalake, in the test process only)."""
    from deltalake import DeltaTable

    return DeltaTable(uri, storage_options=storage_options).to_pandas(columns=columns)


def table_version(uri: str, storage_options: dict | None = None) -> int:
    from deltalake import DeltaTable

    return DeltaTable(uri, storage_options=storage_options).version()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def standalone_cluster(tmp_path: Path, env: dict[str, str], cores: int = 2, memory: str = "3g"):
    """A standalone master + one worker on 127.0.0.1 (spark-class), stopped afterwards; yields the master URL.

    The daemons get this process's environment without its Python settings (PYTHONPATH, PYSPARK_PYTHON,
    PYSPARK_DRIVER_PYTHON), then ``env``: what the worker's executors see of Python is what ``env`` says.
    Logs: tmp_path/master.log, worker.log; executors' work dirs under tmp_path/work.
    """
    import json
    import urllib.request

    tmp_path.mkdir(parents=True, exist_ok=True)
    port, ui, wui = free_port(), free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    import pyspark

    # the Spark install (pip's pyspark) named outright: spark-class would look for it with PYSPARK_PYTHON
    full_env = {**base, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_LOG_DIR": str(tmp_path), "SPARK_WORKER_DIR": str(tmp_path / "work"), **env}
    logs = [open(tmp_path / "master.log", "w"), open(tmp_path / "worker.log", "w")]
    master = subprocess.Popen(["nice", "-n", "10", spark_bin("spark-class"), "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
                              env=full_env, stdout=logs[0], stderr=subprocess.STDOUT)
    procs = [master]
    try:
        wait_port(port)
        url = f"spark://127.0.0.1:{port}"
        worker = subprocess.Popen(["nice", "-n", "10", spark_bin("spark-class"), "org.apache.spark.deploy.worker.Worker",
                                   url, "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                                   "--webui-port", str(wui), "--work-dir", str(tmp_path / "work")],
                                  env=full_env, stdout=logs[1], stderr=subprocess.STDOUT)
        procs.append(worker)
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5))
                if state.get("aliveworkers", 0) >= 1:
                    break
            except (OSError, ValueError):  # not up yet, or (seen once) its HTML page while /json/ is not attached
                pass
            time.sleep(1)
        else:
            raise TimeoutError("the standalone worker did not register with the master")
        yield url
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()


def campaigns_comparable(df):
    """Campaign rows without the per-run columns, sorted, for equality checks.

    Rounded to 6 decimals: the classifier computes in float32, and which faces share a predict batch
    (it differs between a one-shot run and overlapping runs over the same images) moves a probability
    in its 7th-8th digit (seen: mean_valence -0.158260768 vs -0.158260776)."""
    cols = [c for c in df.columns if c not in ("run_id", "updated_at")]
    return df[cols].sort_values("campaign_id").reset_index(drop=True).round(6)


def campaigns_as_recomputed(lake: str) -> tuple[Any, Any]:
    """(the lake's campaigns table, fer_core.kpis.campaign_kpis over all its images and faces rows), both
    campaigns_comparable on the columns they share (not the adjusted mix, which only the job computes):
    what every way a run updates a campaign row must agree with."""
    from deltalake import DeltaTable

    from fer_core.kpis import campaign_kpis

    images = DeltaTable(f"{lake}/images").to_pyarrow_table()
    faces = DeltaTable(f"{lake}/faces").to_pyarrow_table()
    stored = read_table(f"{lake}/campaigns")
    current = read_table(f"{lake}/runs").sort_values("finished_at").scoring_id.iloc[-1]
    want = campaign_kpis(images, faces, current=current).to_pandas()
    shared = [c for c in stored.columns if c in want.columns and not c.startswith("adjusted_")]
    key = ["campaign_id", "scoring_id"]
    stored = stored[shared].sort_values(key).reset_index(drop=True)
    want = want[shared].sort_values(key).reset_index(drop=True)
    return campaigns_comparable(stored), campaigns_comparable(want)


def have_java() -> bool:
    return shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))
