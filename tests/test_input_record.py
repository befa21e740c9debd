"""The record of consumed input files (the inputs table): a run skips the dump files and image files its
scoring identity has consumed, unopened; it reads a changed file again; the record joins the commit
protocol, so a killed run leaves it consistent. Real local Spark, real Delta tables, real files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._spark import fast_config, make_dump, read_table, run_job_in_process, submit, write_yaml
from tests._spark import spark  # noqa: F401 - the session fixture
from tests.test_job_s3 import s3_endpoint  # noqa: F401 - the moto server fixture


def _record(lake: Path):
    """The inputs table as pandas (empty frame when it does not exist yet)."""
    import pandas as pd
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(lake / "inputs")):
        return pd.DataFrame(columns=["path", "size", "mtime_s", "etag", "scoring_id", "reader", "run_id"])
    return read_table(f"{lake}/inputs")


def _dump_files(dump: Path) -> list[Path]:
    return sorted(dump.rglob("*.parquet"))


def _same_size_garbage(path: Path) -> bytes:
    """Overwrite ``path`` with zeros of the same size and give it back its mtime: the listing sees the file
    unchanged, and any open of it (footer or Spark read) fails. Returns the original bytes."""
    data = path.read_bytes()
    st = path.stat()
    path.write_bytes(b"\0" * len(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return data


def test_listing_gives_each_files_size_and_mtime_and_the_reader_key_follows_the_mapping(tmp_path) -> None:
    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.inputs import list_file_versions, reader_key, record_path

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.parquet").write_bytes(b"12345")
    (tmp_path / "a" / "_hidden.parquet").write_bytes(b"1")
    os.utime(tmp_path / "a" / "x.parquet", (1_700_000_000.5, 1_700_000_000.5))
    versions = list_file_versions(str(tmp_path), None, suffixes=(".parquet",))
    assert [(v.path, v.size, v.mtime_s, v.etag) for v in versions] == [
        (str(tmp_path / "a" / "x.parquet"), 5, 1_700_000_000.5, None)]
    base = job_config_from_dict(fast_config(tmp_path, tmp_path / "lake")).input
    since = job_config_from_dict(fast_config(tmp_path, tmp_path / "lake2", input={"since": "2024-01-01"}))
    renamed = job_config_from_dict(fast_config(tmp_path, tmp_path / "lake", input={"columns": {"image_id": "post_id"}}))
    no_retry = job_config_from_dict(fast_config(tmp_path, tmp_path / "lake", input={"retry_fetch_errors": False}))
    # the lake, since and the URI policy are not part of a record's validity (a record names the policy only
    # where it refused a fetch); what a file yields and what is retried are
    moved = job_config_from_dict(fast_config(tmp_path / "a", tmp_path / "lake"))
    assert reader_key(base) == reader_key(since.input) == reader_key(moved.input)
    assert len({reader_key(base), reader_key(renamed.input), reader_key(no_retry.input)}) == 3
    assert record_path("file:/data/c/x.jpg") == "/data/c/x.jpg" and record_path("s3://b/k.jpg") == "s3://b/k.jpg"


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_unchanged_files_are_not_opened_a_changed_file_is_reread_and_an_erasure_forgets_its_files(
        spark, tmp_path) -> None:  # noqa: F811
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.campaign.admin import erase
    from jobs.campaign.lake import Lake

    info = make_dump(tmp_path / "s", n_images=6, days=2, seed=5)
    dump, lake = Path(info["dump"]), tmp_path / "lake"
    first_file, second_file = _dump_files(dump)
    n_unique = info["images"] + info["bad"]
    cfg = fast_config(dump, lake)

    r1 = run_job_in_process(spark, cfg, run_id="first")
    assert r1["n_scored"] == n_unique and (r1["n_files_read"], r1["n_files_skipped"]) == (2, 0)
    record = _record(lake)
    assert sorted(record.path) == [str(first_file), str(second_file)]
    assert set(record.scoring_id) == {r1["scoring_id"]} and set(record.run_id) == {"first"}
    assert list(record.sort_values("path")["size"]) == [first_file.stat().st_size, second_file.stat().st_size]

    # (a) both files unchanged as the listing sees them, one of them unreadable: neither is opened
    original = _same_size_garbage(first_file)
    r2 = run_job_in_process(spark, cfg, run_id="second")
    assert (r2["n_files_read"], r2["n_files_skipped"]) == (0, 2)
    assert r2["n_input"] == 0 and r2["n_scored"] == 0 and r2["status"] == "succeeded"
    assert "2 input files, 2 skipped unopened" in r2["_log"] and "0 read (new or changed), 2 skipped unopened" in r2["_log"]
    assert len(read_table(f"{lake}/images")) == n_unique

    # (b) the second file gains three posts (new size and mtime): it alone is read; only its new images scored
    extra = make_dump(tmp_path / "extra", n_images=3, days=1, seed=9, bad=False,
                      start=__import__("datetime").date(2025, 1, 1))
    more = pq.read_table(_dump_files(Path(extra["dump"]))[0])
    grown = pa.concat_tables([pq.read_table(second_file), more.cast(pq.read_table(second_file).schema)])
    before = second_file.stat().st_mtime
    pq.write_table(grown, second_file)
    os.utime(second_file, (before + 60, before + 60))
    r3 = run_job_in_process(spark, cfg, run_id="third")
    assert (r3["n_files_read"], r3["n_files_skipped"]) == (1, 1)  # the first file, still garbage, not opened
    assert r3["n_new"] == 3 and r3["n_scored"] == 3 and r3["n_input"] == grown.num_rows
    assert "1 read (1 changed since recorded)" in r3["_log"]
    images = read_table(f"{lake}/images")
    assert len(images) == n_unique + 3 and images.image_id.is_unique
    assert set(images[images.run_id == "third"].image_id) == set(more.column("image_id").to_pylist())
    record = _record(lake)
    assert len(record) == 3 and len(record[record.path == str(second_file)]) == 2  # the old and the new version
    assert int(record[record.run_id == "third"]["size"].iloc[0]) == second_file.stat().st_size

    # erasing a campaign forgets the records of the files its rows came from; the next run reads them again,
    # scores nothing (the tombstone keeps the campaign out, the rest is skipped by id) and records them anew
    first_file.write_bytes(original)
    os.utime(first_file, (before - 60, before - 60))  # a new mtime: the listing sees it changed anyway
    campaign = pq.read_table(first_file, columns=["campaign_id"]).column(0)[0].as_py()
    holding = {str(f) for f in (first_file, second_file)
               if campaign in pq.read_table(f, columns=["campaign_id"]).column(0).to_pylist()}
    n_records_holding = int(_record(lake).path.isin(holding).sum())
    report = erase(Lake(str(lake)), campaigns=[campaign], reason="test: the record forgets erased files")
    assert report["inputs_forgotten"] == n_records_holding >= 1
    assert not set(_record(lake).path) & holding and len(_record(lake)) == 3 - n_records_holding
    r4 = run_job_in_process(spark, cfg, run_id="fourth")
    reread = holding | {str(first_file)}  # the forgotten files, and the first one (rewritten: a new mtime)
    assert r4["n_files_read"] == len(reread) and r4["n_scored"] == 0
    assert campaign not in set(read_table(f"{lake}/images").campaign_id)
    all_erased = {f for f in reread if set(pq.read_table(f, columns=["campaign_id"]).column(0).to_pylist()) == {campaign}}
    assert set(_record(lake)[lambda d: d.run_id == "fourth"].path) == reread - all_erased  # never an erased-only file


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_a_file_with_a_fetch_error_to_retry_stays_unrecorded_until_its_fetch_succeeds(spark, tmp_path) -> None:  # noqa: F811
    """input.retry_fetch_errors (the default): the dump file of a failed fetch is read again by the next run,
    which fetches the image again; the other file is skipped."""
    info = make_dump(tmp_path / "s", n_images=4, days=2, mode="uri", seed=3)
    dump, lake = Path(info["dump"]), tmp_path / "lake"
    with_missing, other = _dump_files(dump)  # bad-missing-uri is in the first day's file
    # the sample's images sit beside the dump folder, so the URI policy lists them
    cfg = fast_config(dump, lake, input={"uri_allow": [str(tmp_path / "s" / "images")]})
    r1 = run_job_in_process(spark, cfg, run_id="first")
    assert r1["n_fetch_error"] == 1
    assert list(_record(lake).path) == [str(other)]
    r2 = run_job_in_process(spark, cfg, run_id="second")
    assert (r2["n_files_read"], r2["n_files_skipped"]) == (1, 1)
    assert "earlier fetch errors retried" in r2["_log"]
    images = read_table(f"{lake}/images")
    assert images.image_id.is_unique and set(images[images.image_id == "bad-missing-uri"].run_id) == {"second"}
    assert list(_record(lake).path) == [str(other)]  # still missing: still to retry
    # without retries, a fetch error is final: the file is recorded
    r3 = run_job_in_process(spark, fast_config(dump, lake, input={"uri_allow": [str(tmp_path / "s" / "images")],
                                                                  "retry_fetch_errors": False}), run_id="third")
    assert r3["n_files_read"] == 2 and r3["n_scored"] == 0  # another reader: its own record, empty so far
    assert set(_record(lake)[lambda d: d.run_id == "third"].path) == {str(with_missing), str(other)}


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_a_new_scoring_identity_rereads_recorded_files_and_records_only_those_it_finished(spark, tmp_path) -> None:  # noqa: F811
    info = make_dump(tmp_path / "s", n_images=8, days=2, seed=21, bad=False)
    dump, lake = Path(info["dump"]), tmp_path / "lake"
    files = [str(f) for f in _dump_files(dump)]
    r1 = run_job_in_process(spark, fast_config(dump, lake), run_id="old")
    assert sorted(_record(lake).path) == files
    upgraded = fast_config(dump, lake, detector={"name": "haar", "min_face_size": 24},
                           backfill={"max_images_per_run": 3})
    r2 = run_job_in_process(spark, upgraded, run_id="new-1")
    assert r2["scoring_id"] != r1["scoring_id"]
    assert (r2["n_files_read"], r2["n_files_skipped"]) == (2, 0)  # the old identity's record does not skip
    assert r2["n_backfilled"] == 3 and r2["n_backlog_left"] == 8 - 3
    images = read_table(f"{lake}/images", ["image_id", "scoring_id", "input_file"])
    done = set(images[images.scoring_id == r2["scoring_id"]].image_id)
    finished = sorted(f for f, ids in images[images.scoring_id == r1["scoring_id"]].groupby("input_file").image_id
                      if set(ids) <= done)
    record = _record(lake)
    assert sorted(record[record.scoring_id == r2["scoring_id"]].path) == finished  # none with backlog left
    r3 = run_job_in_process(spark, {**upgraded, "backfill": {"max_images_per_run": None}}, run_id="new-2")
    assert r3["n_files_read"] == 2 - len(finished) and r3["n_backfilled"] == 8 - 3 and r3["n_backlog_left"] == 0
    record = _record(lake)
    assert sorted(record[record.scoring_id == r2["scoring_id"]].path) == files
    r4 = run_job_in_process(spark, upgraded, run_id="new-3")
    assert (r4["n_files_read"], r4["n_files_skipped"], r4["n_scored"]) == (0, 2, 0)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("fail_at", ["after_images_commit", "after_inputs_commit"])
def test_a_killed_run_leaves_the_record_consistent(spark, tmp_path, fail_at) -> None:  # noqa: F811
    """Killed after its images commit, a run has recorded no file (its rows are committed, the record not yet);
    killed after the record, it has. Either way the next run's recovery leaves the record listing exactly the
    files whose rows are committed, once, and the run after skips them."""
    from jobs.campaign.job import FAIL_ENV

    info = make_dump(tmp_path / "s", n_images=5, days=2, seed=11)
    dump, lake = Path(info["dump"]), tmp_path / "lake"
    files = [str(f) for f in _dump_files(dump)]
    conf = write_yaml(tmp_path / "c.yaml", fast_config(dump, lake))
    r = submit(["--config", str(conf), "--no-dashboards", "--run-id", "killed"], env={FAIL_ENV: fail_at})
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-4000:]
    assert len(read_table(f"{lake}/images")) == info["images"] + info["bad"]
    assert (lake / "_job" / "pending" / "killed.json").exists()
    assert sorted(_record(lake).path) == ([] if fail_at == "after_images_commit" else files)

    row = run_job_in_process(spark, fast_config(dump, lake), run_id="next")
    assert "recovering run killed" in row["_log"]
    record = _record(lake)
    assert sorted(record.path) == files and set(record.run_id) == {"killed"}  # once, by the dead run's replay
    assert (row["n_files_read"], row["n_files_skipped"], row["n_scored"]) == (0, 2, 0)  # recovery came first
    images = read_table(f"{lake}/images")
    assert images.image_id.is_unique and set(images.run_id) == {"killed"}
    assert {os.path.realpath(p) for p in images.input_file} == {os.path.realpath(p) for p in files}


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_files_whose_uris_a_policy_refused_are_read_again_under_another_policy(spark, tmp_path) -> None:  # noqa: F811
    """Without input.uri_allow the sample's images (beside the dump folder) are refused: final under that policy,
    so the files are recorded with its fingerprint and the next run skips them; a policy that allows them reads
    the files again and fetches the images (the refused rows are replaced)."""
    info = make_dump(tmp_path / "s", n_images=3, days=1, mode="uri", seed=4, bad=False)
    dump, lake = Path(info["dump"]), tmp_path / "lake"
    r1 = run_job_in_process(spark, fast_config(dump, lake), run_id="refused")
    assert r1["n_fetch_error"] == r1["n_scored"] == 3
    record = _record(lake)
    assert len(record) == 1 and record.uri_policy.notna().all()
    r2 = run_job_in_process(spark, fast_config(dump, lake), run_id="same-policy")
    assert (r2["n_files_read"], r2["n_files_skipped"]) == (0, 1)
    allowed = fast_config(dump, lake, input={"uri_allow": [str(tmp_path / "s" / "images")]})
    r3 = run_job_in_process(spark, allowed, run_id="allowed")
    assert r3["n_files_read"] == 1 and r3["n_scored"] == 3 and r3["n_fetch_error"] == 0
    images = read_table(f"{lake}/images")
    assert images.image_id.is_unique and set(images.run_id) == {"allowed"}
    assert _record(lake)[lambda d: d.run_id == "allowed"].uri_policy.isna().all()


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(1500)
def test_image_folders_record_each_image_file_and_an_erased_image_file_is_never_recorded(spark, tmp_path) -> None:  # noqa: F811
    import shutil

    from jobs.campaign.admin import erase
    from jobs.campaign.lake import Lake

    info = make_dump(tmp_path / "s", n_images=4, days=1, mode="folders", seed=8, bad=False)
    folders, lake = Path(info["dump"]), tmp_path / "lake"
    cfg = fast_config(folders, lake, input={"format": "folders", "extra_columns": []})
    images_on_disk = sorted(str(p) for p in folders.rglob("*.jpg"))
    r1 = run_job_in_process(spark, cfg, run_id="first")
    assert r1["n_scored"] == len(images_on_disk) and sorted(_record(lake).path) == images_on_disk
    # a new image file: it alone is read; the others are not opened (not even fetched)
    first = Path(images_on_disk[0])
    new = first.parent / "new-post.jpg"
    shutil.copy(first, new)
    r2 = run_job_in_process(spark, cfg, run_id="second")
    assert (r2["n_files_read"], r2["n_files_skipped"], r2["n_scored"]) == (1, len(images_on_disk), 1)
    # erase the new image: its file's record goes, and no later run records it again
    images = read_table(f"{lake}/images")
    new_id = images[images.run_id == "second"].image_id.iloc[0]
    report = erase(Lake(str(lake)), images=[new_id], reason="test: an erased image file is never recorded")
    assert report["inputs_forgotten"] == 1 and str(new) not in set(_record(lake).path)
    r3 = run_job_in_process(spark, cfg, run_id="third")
    assert (r3["n_files_read"], r3["n_scored"]) == (1, 0)  # read (its tombstone drops it), not recorded
    assert str(new) not in set(_record(lake).path) and len(_record(lake)) == len(images_on_disk)


@pytest.mark.s3
def test_an_s3_listing_keys_each_object_on_its_size_mtime_and_etag(s3_endpoint) -> None:  # noqa: F811
    """The listing gives what the record keys on from the one listing: size, LastModified and ETag; an object
    rewritten with other bytes of the same size has another ETag, so it counts as changed."""
    from jobs.campaign.inputs import list_file_versions
    from tests.test_job_s3 import moto_buckets

    opts, fs = moto_buckets(s3_endpoint, "record")
    fs.pipe("record/dump/date=2026-12-01/a.parquet", b"first bytes")
    fs.pipe("record/dump/date=2026-12-01/_SUCCESS", b"")
    [before] = list_file_versions("s3://record/dump/", opts, suffixes=(".parquet",))
    assert before.path == "s3://record/dump/date=2026-12-01/a.parquet" and before.size == len(b"first bytes")
    assert before.etag and before.mtime_s
    fs.pipe("record/dump/date=2026-12-01/a.parquet", b"other bytes")
    [after] = list_file_versions("s3://record/dump/", opts, suffixes=(".parquet",))
    assert after.size == before.size and after.etag != before.etag and after.key() != before.key()
