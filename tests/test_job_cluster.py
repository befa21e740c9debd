"""A standalone Spark cluster on 127.0.0.1 (master + worker started with spark-class) and the job
submitted to it with spark-submit --master spark://127.0.0.1:PORT."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import pytest

from tests._spark import PY, REPO, fast_config, free_port, make_dump, read_table, spark_bin, submit, wait_port, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.cluster, pytest.mark.timeout(1500)]


@pytest.fixture
def cluster(tmp_path):
    port, ui, wui = free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": PY, "SPARK_LOG_DIR": str(tmp_path),
           "PYTHONPATH": str(REPO), "SPARK_WORKER_DIR": str(tmp_path / "work")}
    logs = [open(tmp_path / "master.log", "w"), open(tmp_path / "worker.log", "w")]
    master = subprocess.Popen(["nice", "-n", "10", spark_bin("spark-class"), "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
                              env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    procs = [master]
    try:
        wait_port(port)
        url = f"spark://127.0.0.1:{port}"
        worker = subprocess.Popen(["nice", "-n", "10", spark_bin("spark-class"), "org.apache.spark.deploy.worker.Worker",
                                   url, "--host", "127.0.0.1", "--cores", "2", "--memory", "3g", "--webui-port", str(wui),
                                   "--work-dir", str(tmp_path / "work")],
                                  env=env, stdout=logs[1], stderr=subprocess.STDOUT)
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


def test_job_on_standalone_cluster(cluster, tmp_path):
    info = make_dump(tmp_path / "s", n_images=4, days=1, seed=21)
    lake = tmp_path / "lake"
    conf = write_yaml(tmp_path / "c.yaml", fast_config(info["dump"], lake))
    r = submit(["--config", str(conf), "--no-dashboards"], master=cluster,
               env={"SPARK_LOCAL_IP": "127.0.0.1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert "succeeded" in r.stdout
    n_unique = info["images"] + info["bad"]
    images = read_table(f"{lake}/images")
    assert len(images) == n_unique and images.image_id.is_unique
    runs = read_table(f"{lake}/runs")
    assert runs.iloc[0].spark_master == cluster and runs.iloc[0].n_scored == n_unique
