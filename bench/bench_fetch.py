"""Fetching image URIs one at a time vs on input.fetch_threads threads, measured in one run.

    python bench/bench_fetch.py [--n 192] [--latency-ms 40] [--threads 1,4,16] [--kb 150]

A local HTTP server (its own process, so it does not share this one's GIL) answers every request after --latency-ms (an object store's or a CDN's time to first
byte; S3 GETs typically take 20-100 ms) with a --kb JPEG-sized body. The job's own executor code
(``jobs.campaign.scoring.fetch_payloads``, chunks of 16 rows as in a run) fetches --n URIs through fsspec's
HTTP filesystem with each thread count (one ranged GET per URI); prints URIs/s, the ratio to one thread and
to the job's earlier fetch (``open`` + ``read``: a HEAD for the size, then the GET, one URI at a time), and
whether every row got its own bytes back. Detection runs at ~10-15 images/s per core, so a fetch rate far above that takes
fetching off the critical path.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def serve(latency_s: float, body_of) -> ThreadingHTTPServer:
    """A threaded HTTP server on 127.0.0.1 that sleeps latency_s before each answer."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            time.sleep(latency_s)
            body = body_of(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the default 5 drops simultaneous connects (retried after 1 s)

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def body_of(path: str, kb: int) -> bytes:
    """What the server sends for a path (so the client can check every row got its own bytes)."""
    return bytes([sum(path.encode()) % 251]) * (kb * 1024)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=192, help="URIs to fetch per thread count")
    ap.add_argument("--latency-ms", type=float, default=40.0, help="server delay before each answer")
    ap.add_argument("--kb", type=int, default=150, help="body size per image")
    ap.add_argument("--threads", default="1,4,16", help="comma-separated fetch_threads to compare")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server process
    args = ap.parse_args(argv)
    if args.serve:
        server = serve(args.latency_ms / 1000.0, lambda path: body_of(path, args.kb))
        print(server.server_address[1], flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        return 0

    import pandas as pd

    from fer_core.fetch import UriPolicy
    from jobs.campaign.scoring import ScoringContext, fetch_payloads

    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--latency-ms", str(args.latency_ms),
                             "--kb", str(args.kb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{proc.stdout.readline().strip()}"
    chunk = 16
    print(f"{args.n} URIs, {args.latency_ms:g} ms latency per request, {args.kb} KB each, chunks of {chunk} rows")
    from jobs.campaign.inputs import filesystem

    t0 = time.perf_counter()  # the job before: fs.open (a HEAD for the size) + read, one URI at a time
    for i in range(args.n):
        fs, path = filesystem(f"{base}/open/img{i}.jpg", {})
        with fs.open(path, "rb") as f:
            f.read(64 << 20)
    before = args.n / (time.perf_counter() - t0)
    print(f"open + read, one at a time (before): {before:7.1f} URIs/s")
    rates: dict[int, float] = {}
    for threads in (int(t) for t in args.threads.split(",")):
        # the bench server is on loopback: listed, and private hosts allowed (the job refuses both by default)
        policy = UriPolicy.for_dump(".", [base + "/"], allow_private_hosts=True)
        ctx = ScoringContext(pipeline_fn=None, storage_options={}, uri_policy=policy, max_fetch_bytes=64 << 20,
                             fetch_threads=threads,
                             detect_chunk=chunk, run_id="bench", model_version="", images_uri="",
                             faces_uri="", lake_options={}, target_file_rows=1, images_schema=None,
                             faces_schema=None)
        uris = [f"{base}/t{threads}/img{i}.jpg" for i in range(args.n)]
        t0 = time.perf_counter()
        ok = True
        for start in range(0, args.n, chunk):
            part = uris[start:start + chunk]
            out = fetch_payloads(pd.DataFrame({"image": [None] * len(part), "uri": part}), ctx)
            ok &= all(isinstance(b, bytes) and b == body_of(u.split(base, 1)[1], args.kb) for b, u in zip(out, part))
        rates[threads] = args.n / (time.perf_counter() - t0)
        ratio = rates[threads] / rates[min(rates)] if threads != min(rates) else 1.0
        print(f"fetch_threads {threads:>3}: {rates[threads]:7.1f} URIs/s  x{ratio:.1f} vs 1 thread, "
              f"x{rates[threads] / before:.1f} vs before; every row its own bytes: {ok}")
    proc.stdin.close()
    proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
