"""Progress that moves while a task runs: live counts from the executors over UDP (jobs/campaign/progress.py),
checked on real sockets and on a real spark-submit whose single task outlasts several progress intervals."""
from __future__ import annotations

import re
import socket
import time

import pytest

from jobs.campaign.progress import ProgressChannel, ProgressReporter
from tests._spark import fast_config, make_dump, read_table, submit, write_yaml


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_channel_sums_the_newest_attempt_of_each_partition_and_ignores_strangers():
    channel = ProgressChannel("127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            send = lambda text: s.sendto(text.encode(), channel.address)  # noqa: E731
            send(f"{channel.token} 0 0 40")
            send(f"{channel.token} 1 0 25")
            assert wait_for(lambda: channel.done() == 65)
            send(f"{channel.token} 1 1 5")  # partition 1 retried: its new attempt starts again
            send(f"{channel.token} 0 0 30")  # a late, smaller datagram of the same attempt
            send("0123456789abcdef 0 0 999")  # another run's token
            send(f"{channel.token} 0 0 many")
            send(f"{channel.token} 2 0 7")
            assert wait_for(lambda: channel.done() == 40 + 5 + 7)
            assert channel.datagrams == 5  # the well-formed ones of this run
    finally:
        channel.close()


def test_reporter_paces_its_datagrams_and_always_sends_the_last():
    channel = ProgressChannel("127.0.0.1")
    try:
        reporter = channel.reporter(report_every_s=60)
        assert isinstance(reporter, ProgressReporter)
        reporter.report(3)
        reporter.report(9)  # within the pace: not sent
        assert wait_for(lambda: channel.done() == 3)
        reporter.report(12, final=True)
        assert wait_for(lambda: channel.done() == 12) and channel.datagrams == 2
    finally:
        channel.close()
    ProgressReporter(channel.address, channel.token, 0).report(5, final=True)  # a closed driver: no error


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(900)
def test_progress_moves_while_the_only_task_runs(tmp_path):
    info = make_dump(tmp_path / "s", n_images=60, days=1, bad=False)
    total = info["images"]
    cfg = fast_config(info["dump"], tmp_path / "lake", progress={"interval_s": 0.5},
                      spark={"arrow_batch_size": 4, "images_per_task": 1000})
    cfg["spark"]["conf"].update({"spark.default.parallelism": "1", "spark.sql.shuffle.partitions": "1"})
    r = submit(["--config", str(write_yaml(tmp_path / "c.yaml", cfg)), "--no-dashboards"], master="local[1]")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"{total} to score in 1 tasks" in r.stdout
    lines = re.findall(r"^progress: (\d+)/(\d+) images .*?, ([\d.]+) images/s, .*ETA (\S+)", r.stdout, re.M)
    middle = [(int(d), float(rate), eta) for d, t, rate, eta in lines if 0 < int(d) < int(t)]
    # the one task's images show up before it ends, with a speed and an ETA, and never go back
    assert len(middle) >= 2, r.stdout
    assert all(rate > 0 and eta != "?" for _, rate, eta in middle), middle
    done = [int(d) for d, _, _, _ in lines]
    assert done == sorted(done) and done[-1] == total, lines
    assert len(read_table(f"{tmp_path / 'lake'}/images")) == total
