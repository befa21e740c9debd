"""What the live progress channel costs an executor, measured in one run.

    python bench/bench_progress.py [--calls 200000] [--sends 20000] [--interval 10] [--chunk 16] [--images-per-s 7]

Times the executor's ``ProgressReporter.report`` against a real driver-side ``ProgressChannel`` on
127.0.0.1: the paced call that sends nothing (one per detect chunk of --chunk images), and the call that
sends a datagram (one per half progress interval per task). Prints both per call, and the share of a
task's time they take at --images-per-s images/s per core (the job scores ~5-15 images/s per core with
RetinaFace), against the run without progress.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200_000)
    p.add_argument("--sends", type=int, default=20_000)
    p.add_argument("--interval", type=float, default=10.0, help="progress.interval_s (default 10)")
    p.add_argument("--chunk", type=int, default=16, help="images per detect chunk (one report call each)")
    p.add_argument("--images-per-s", type=float, default=7.0, help="scoring speed of one core")
    a = p.parse_args()
    from jobs.campaign.progress import ProgressChannel, ProgressReporter

    channel = ProgressChannel("127.0.0.1")
    try:
        paced = channel.reporter(report_every_s=3600)
        paced._task = (0, 0)  # outside Spark: no TaskContext
        paced.report(0)  # the first call sends (and opens the socket)
        t = time.perf_counter()
        for i in range(a.calls):
            paced.report(i)
        paced_us = (time.perf_counter() - t) / a.calls * 1e6
        sender = ProgressReporter(channel.address, channel.token, 0.0)
        sender._task = (1, 0)
        t = time.perf_counter()
        for i in range(a.sends):
            sender.report(i)
        send_us = (time.perf_counter() - t) / a.sends * 1e6
        time.sleep(0.5)
        received = channel.datagrams
    finally:
        channel.close()
    task_s_per_image = 1.0 / a.images_per_s
    per_image_us = paced_us / a.chunk + send_us * (task_s_per_image / (a.interval / 2))
    print(f"paced call (nothing sent): {paced_us:.3f} us; datagram sent: {send_us:.2f} us "
          f"({received} of {a.sends + 1} received)")
    print(f"per image at {a.images_per_s:g} images/s, interval {a.interval:g} s, chunks of {a.chunk}: "
          f"{per_image_us:.3f} us of {task_s_per_image * 1e6:,.0f} us = {per_image_us / (task_s_per_image * 1e6):.2e} "
          f"of a task's time")


if __name__ == "__main__":
    main()
