"""A standalone Spark cluster on 127.0.0.1 (master + worker started with spark-class) and the job
submitted to it with spark-submit --master spark://127.0.0.1:PORT."""
from __future__ import annotations

import pytest

from tests._spark import PY, REPO, fast_config, make_dump, read_table, standalone_cluster, submit, write_yaml

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.cluster, pytest.mark.timeout(1500)]


@pytest.fixture
def cluster(tmp_path):
    env = {"PYSPARK_PYTHON": PY, "PYTHONPATH": str(REPO)}  # the worker shares this machine's venv and checkout
    with standalone_cluster(tmp_path, env) as url:
        yield url


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
