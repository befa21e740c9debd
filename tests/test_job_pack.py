"""The job on a cluster whose nodes lack the project: `make pack` builds the packed environment, and a
standalone master + worker whose own Python has none of the job's packages runs the job from it
(spark-submit --archives env.tar.gz#environment, spark.pyspark.python=./environment/bin/python)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._spark import PY, REPO, fast_config, make_dump, read_table, standalone_cluster, submit, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.cluster, pytest.mark.timeout(3600)]

BARE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable
"""The interpreter this venv (and the packed one) is made from: a Python without the job's packages."""


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """`make pack` into a temporary archive (its setup and weights prerequisites are what `make test` did;
    the packed venv, build/pack-venv, is made once and reused, as by `make pack`)."""
    archive = tmp_path_factory.mktemp("pack") / "env.tar.gz"
    r = subprocess.run(["nice", "-n", "10", "make", "-o", "setup", "-o", "weights", "pack",
                        f"VENV={Path(PY).parent.parent}", f"PACK={archive}"],
                       cwd=REPO, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert archive.stat().st_size > 100_000_000  # TensorFlow and the rest are inside
    return archive


def test_the_bare_python_lacks_the_jobs_packages():
    for module in ("tensorflow", "pyspark", "pandas", "fer_core", "jobs", "deltalake"):
        r = subprocess.run([BARE_PYTHON, "-c", f"import {module}"], capture_output=True, text=True, cwd="/",
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert r.returncode != 0, f"{BARE_PYTHON} can import {module}: not a bare interpreter for this test"


def test_job_runs_from_the_packed_env_on_a_worker_without_the_project(packed, tmp_path):
    info = make_dump(tmp_path / "s", n_images=4, days=1, seed=11)
    lake = tmp_path / "lake"
    conf = write_yaml(tmp_path / "c.yaml", fast_config(info["dump"], lake, detector={"name": "retinaface"}))
    no_path = {"PYTHONPATH": ""}  # the driver finds the repository from the script's own path only
    with standalone_cluster(tmp_path / "cluster", {"PYSPARK_PYTHON": BARE_PYTHON}) as url:
        # the control: with the worker's own Python the executors cannot run the job
        bare = submit(["--config", str(conf), "--no-dashboards"], master=url, env=no_path,
                      spark_args=["--conf", f"spark.pyspark.python={BARE_PYTHON}"])
        assert bare.returncode != 0 and "ModuleNotFoundError" in bare.stdout + bare.stderr, bare.stdout[-2000:]
        r = submit(["--config", str(conf), "--no-dashboards"], master=url, env=no_path, spark_args=[
            "--archives", f"{packed}#environment", "--conf", "spark.pyspark.python=./environment/bin/python",
            "--conf", f"spark.pyspark.driver.python={PY}",  # client mode: the driver runs here, from the venv
            "--conf", "spark.executorEnv.FER_CORE_HOME=./environment/share/fer_core"])
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout
    n_unique = info["images"] + info["bad"]
    images = read_table(f"{lake}/images")
    assert len(images) == n_unique and images.image_id.is_unique and (images.status == "ok").any()
    assert images.detector_version.str.startswith("retinaface").all()
    # the executors ran from the archive the worker unpacked into their work dirs
    unpacked = list((tmp_path / "cluster" / "work").glob("app-*/*/environment/bin/python"))
    assert unpacked, sorted(str(p) for p in (tmp_path / "cluster" / "work").rglob("*"))[:50]
    assert list((tmp_path / "cluster" / "work").glob("app-*/*/environment/share/fer_core/retinaface-*.tflite"))
