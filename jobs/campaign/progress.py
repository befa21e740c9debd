"""Driver-side progress without a SparkListener: a daemon thread on the driver prints
``images done/total, images/s, ETA`` every ``progress.interval_s``. The run summary prints the same
figures the runs table stores.

Two sources, the larger wins: an accumulator (exact, but Spark merges it only when a task ends, so a
long task showed 0% for minutes) and a live side channel: each task sends its running image count to the
driver in small UDP datagrams (``ProgressReporter``, at most one per ``report_every_s``), which the
driver's ``ProgressChannel`` keeps per partition (the newest attempt's count). Datagrams are
fire-and-forget: one lost, or a driver unreachable from the executors, only delays the figure until the
next one or the task's end. Spark's own live metrics did not serve: heartbeats carry internal task metrics
only, and a Python UDF's input rows are read ahead of the images it has scored.
"""
from __future__ import annotations

import secrets
import socket
import sys
import threading
import time
from typing import Any, Callable, TextIO

__all__ = ["Progress", "ProgressChannel", "ProgressReporter", "format_summary", "fmt_duration"]


class ProgressChannel:
    """Driver side of the live counts: a UDP socket on ``host`` and a thread that reads it.

    Datagrams are ``<token> <partition> <attempt> <images done>``; the token (random per run) keeps
    stray or stale datagrams out. ``done()`` sums the newest attempt's count of every partition.
    """

    def __init__(self, host: str) -> None:
        self.token = secrets.token_hex(8)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.5)
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        self._counts: dict[int, tuple[int, int]] = {}  # partition -> (attempt, images done)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.datagrams = 0
        self._thread = threading.Thread(target=self._serve, name="score-progress-channel", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(256)
            except socket.timeout:
                continue
            except OSError:  # closed
                return
            parts = data.decode("ascii", "replace").split()
            if len(parts) != 4 or parts[0] != self.token or not all(p.isdigit() for p in parts[1:]):
                continue
            partition, attempt, n = (int(p) for p in parts[1:])
            with self._lock:
                self.datagrams += 1
                old = self._counts.get(partition)
                if old is None or attempt > old[0] or (attempt == old[0] and n > old[1]):
                    self._counts[partition] = (attempt, n)

    def done(self) -> int:
        with self._lock:
            return sum(n for _, n in self._counts.values())

    def reporter(self, report_every_s: float) -> "ProgressReporter":
        """What the executor closures carry (picklable: address, token, pace)."""
        return ProgressReporter(self.address, self.token, report_every_s)

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self._thread.join(timeout=2)


class ProgressReporter:
    """Executor side: ``report(n)`` sends this task's running image count, at most once per
    ``report_every_s`` (and always with ``final=True``). Never raises: progress is best effort."""

    def __init__(self, address: tuple[str, int], token: str, report_every_s: float) -> None:
        self.address = address
        self.token = token
        self.report_every_s = report_every_s
        self._sock: socket.socket | None = None
        self._last = float("-inf")
        self._task: tuple[int, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"address": self.address, "token": self.token, "report_every_s": self.report_every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["address"], state["token"], state["report_every_s"])

    def report(self, n_done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.report_every_s:
            return
        self._last = now
        try:
            if self._task is None:
                from pyspark import TaskContext

                ctx = TaskContext.get()
                self._task = (ctx.partitionId(), ctx.attemptNumber()) if ctx is not None else (0, 0)
            if self._sock is None:
                family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
                self._sock = socket.socket(family, socket.SOCK_DGRAM)
            msg = f"{self.token} {self._task[0]} {self._task[1]} {int(n_done)}".encode("ascii")
            self._sock.sendto(msg, self.address)
        except OSError:  # unreachable driver, no route: the accumulator still counts at the task's end
            pass
        if final and self._sock is not None:
            self._sock.close()
            self._sock = None


def fmt_duration(seconds: float | None) -> str:
    """Durations as "1h02m05s"; from two days on, days and hours ("912d16h"), which is what a
    lag such as the health line's newest post before the run needs to be read at a glance."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds >= 2 * 86400:
        d, rem = divmod(seconds, 86400)
        return f"{d}d{rem // 3600:02d}h"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Context manager: ``with Progress(sc, total) as p: ... p.accumulator ...``.

    ``accumulator`` (``.add(n)`` per task) and ``reporter`` (live counts) go into the executor closures;
    ``done`` is the driver's view, the larger of the two. Also reports running/finished tasks from the
    status tracker.
    """

    def __init__(self, sc: Any, total: int, interval_s: float = 10.0, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sc = sc
        self.total = int(total)
        self.interval_s = float(interval_s)
        self.out = out or sys.stdout
        self.clock = clock
        self.accumulator = sc.accumulator(0) if sc is not None else None
        self.channel: ProgressChannel | None = None
        if sc is not None and self.interval_s > 0:
            try:
                self.channel = ProgressChannel(sc.getConf().get("spark.driver.host", "127.0.0.1"))
            except OSError:  # no socket on the driver's address: task-end granularity only
                self.channel = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = clock()

    @property
    def reporter(self) -> ProgressReporter | None:
        """For the executors: sends live counts, twice per progress interval (None when progress is off)."""
        return self.channel.reporter(self.interval_s / 2) if self.channel is not None else None

    @property
    def done(self) -> int:
        finished = int(self.accumulator.value) if self.accumulator is not None else 0
        return max(finished, self.channel.done() if self.channel is not None else 0)

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        done = self.done
        rate = done / elapsed
        eta = max(self.total - done, 0) / rate if rate > 0 else None  # a re-run task can count twice
        pct = 100.0 * done / self.total if self.total else 100.0
        tasks = ""
        if self.sc is not None:
            try:
                tracker = self.sc.statusTracker()
                active = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
                active = [s for s in active if s is not None]
                if active:
                    tasks = " tasks " + ", ".join(f"{s.numCompletedTasks}/{s.numTasks}" for s in active)
            except Exception:  # the tracker is best effort (the context may be stopping)
                pass
        return (f"progress: {done}/{self.total} images ({pct:.1f}%), {rate:.1f} images/s, "
                f"elapsed {fmt_duration(elapsed)}, ETA {fmt_duration(eta)}{tasks}")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            print(self.line(), file=self.out, flush=True)

    def __enter__(self) -> "Progress":
        self.started = self.clock()
        if self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="score-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.interval_s > 0:
            print(self.line(), file=self.out, flush=True)
        if self.channel is not None:
            self.channel.close()


def _mix_lines(row: dict[str, Any]) -> list[str]:
    """["  emotions: happy 55 (37%), ...", "  sentiment: positive 59 (40%), ..."] for the faces this run
    scored; none without faces or counts."""
    lines = []
    for key, title in (("emotions", "emotions"), ("sentiments", "sentiment")):
        mix = {k: v for k, v in (row.get(key) or {}).items() if v}
        total = sum(mix.values())
        if total:
            ranked = sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))
            lines.append(f"  {title}: " + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in ranked))
    return lines


def format_summary(row: dict[str, Any]) -> str:
    """The final run summary (the same figures as the runs table row)."""
    from fer_core.tables import STATUSES

    statuses = ", ".join(f"{s}={row.get(f'n_{s}', 0)}" for s in STATUSES)
    return "\n".join([
        f"run {row['run_id']} {row['status']}: {row['n_scored']} images scored in {fmt_duration(row['duration_s'])} "
        f"({row['images_per_s']:.2f} images/s)",
        *([f"  input files: {row['n_files_read']} read (new or changed), {row['n_files_skipped']} skipped unopened "
           "as already consumed (the inputs table)"] if row.get("n_files_read") is not None else []),
        f"  input rows {row['n_input']}, duplicates dropped {row['n_duplicates']}, "
        f"already scored (skipped) {row['n_skipped'] - row['n_duplicates']}",
        f"  statuses: {statuses}",
        f"  faces: {row['n_faces']}" + (f"; video posts: {row['n_videos']}, their tracks: {row.get('n_tracks', 0)} "
                                        "(here, and in the mix below, a video's faces count in every sampled frame; "
                                        "the dashboards count each track once)" if row.get("n_videos") else ""),
        *_mix_lines(row),
        f"  model {row['model_version']}, detector {row['detector_version']}, config {row['config_hash']}",
        f"  scoring {row.get('scoring_id') or '?'}: {row.get('n_new') or 0} new images"
        + (f", {row['n_backfilled']} rescored from older scorings, {row['n_backlog_left']} of the input still to "
           "rescore (later runs)" if row.get("n_backfilled") or row.get("n_backlog_left") else ""),
        f"  input {row['input']} -> lake {row['output']}",
    ])
