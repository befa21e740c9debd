"""Exactly-once: a job killed midway (the spark-submit driver exits at a fail point) and run again
leaves no duplicate and loses no row."""
from __future__ import annotations


import pytest

from tests._spark import fast_config, make_dump, read_table, run_job_in_process, spark, submit, write_yaml  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(1500)]


@pytest.mark.parametrize("fail_at", ["after_write", "after_faces_commit"])
def test_killed_run_then_rerun_has_no_duplicate_and_no_loss(spark, tmp_path, fail_at):  # noqa: F811
    from jobs.campaign.job import FAIL_ENV

    info = make_dump(tmp_path / "s", n_images=5, days=1, seed=11)
    n_unique = info["images"] + info["bad"]
    lake = tmp_path / "lake"
    conf = write_yaml(tmp_path / "c.yaml", fast_config(info["dump"], lake))
    r = submit(["--config", str(conf), "--no-dashboards", "--run-id", "killed"], env={FAIL_ENV: fail_at})
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-4000:]
    parquet_files = list((lake / "images").rglob("*.parquet"))
    assert parquet_files, "executors wrote their Parquet files before the crash"
    if fail_at == "after_write":
        # nothing committed: the files are orphans no reader sees
        assert not (lake / "_job" / "pending").exists() or not list((lake / "_job" / "pending").iterdir())
    else:
        assert len(read_table(f"{lake}/faces")) > 0 and len(read_table(f"{lake}/images")) == 0
        assert (lake / "_job" / "pending" / "killed.json").exists()

    row = run_job_in_process(spark, fast_config(info["dump"], lake))
    images = read_table(f"{lake}/images")
    faces = read_table(f"{lake}/faces")
    runs = read_table(f"{lake}/runs")
    assert len(images) == n_unique and images.image_id.is_unique
    assert not faces.duplicated(["image_id", "face_index"]).any()
    assert len(faces) == images.n_faces.sum()
    camps = read_table(f"{lake}/campaigns")
    assert camps.n_images.sum() == n_unique and camps.n_faces.sum() == len(faces)
    if fail_at == "after_write":
        assert row["n_scored"] == n_unique and list(runs.run_id) == [row["run_id"]]
    else:  # recovered from the manifest, not scored twice
        assert "recovering run killed" in row["_log"] and row["n_scored"] == 0
        assert sorted(runs.status) == ["recovered", "succeeded"]
        assert (images.run_id == "killed").all()
    assert not list((lake / "_job" / "pending").glob("*.json"))
