"""What the lake lease costs one uncontended run: acquire + the fencing checks before commits + release.

    python bench/bench_lease.py [--rounds 20]

Measured on a local lake and on a moto S3 server on 127.0.0.1 (a real S3 adds its round trips: about
six requests per run, each tens of milliseconds). Prints the median per run; the issue's bar is < 1 s.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FENCING_CHECKS = 5  # ensure_held before the manifest and before each of the four commits


def one_run(root: str, options: dict | None, i: int) -> float:
    from jobs.campaign.lease import LakeLease

    t0 = time.perf_counter()
    lease = LakeLease(root, options, f"bench-{i}", ttl_s=120)
    with lease.hold(0):
        for _ in range(FENCING_CHECKS):
            lease.ensure_held()
    return time.perf_counter() - t0


def measure(root: str, options: dict | None, rounds: int) -> float:
    one_run(root, options, -1)  # warm: imports, first listing
    return statistics.median(one_run(root, options, i) for i in range(rounds))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        local = measure(f"{tmp}/lake", None, args.rounds)
    print(f"local lake: {local * 1000:7.1f} ms per run (acquire, {FENCING_CHECKS} fencing checks, release)")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket="lake")
        opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1"}
        s3 = measure("s3://lake/l", opts, args.rounds)
        print(f"moto S3:    {s3 * 1000:7.1f} ms per run (x{s3 / local:.1f} the local lake)")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
