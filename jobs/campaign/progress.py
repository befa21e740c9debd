"""Driver-side progress without a SparkListener: executors add finished images to an accumulator
(sent with each task's result), a daemon thread on the driver polls it and prints
``images done/total, images/s, ETA``. The run summary prints the same figures the runs table stores.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, TextIO

__all__ = ["Progress", "format_summary", "fmt_duration"]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Context manager: ``with Progress(sc, total) as p: ... p.accumulator ...``.

    ``accumulator`` goes into the executor closures (``.add(n)`` per task); ``done`` is the driver's view.
    Granularity is one task (accumulator updates arrive when a task ends), so the job sizes its tasks
    (inference.images_per_task). Also reports running/finished tasks from the status tracker.
    """

    def __init__(self, sc: Any, total: int, interval_s: float = 10.0, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sc = sc
        self.total = int(total)
        self.interval_s = float(interval_s)
        self.out = out or sys.stdout
        self.clock = clock
        self.accumulator = sc.accumulator(0) if sc is not None else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = clock()

    @property
    def done(self) -> int:
        return int(self.accumulator.value) if self.accumulator is not None else 0

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
    from jobs.campaign.lake import STATUSES

    statuses = ", ".join(f"{s}={row.get(f'n_{s}', 0)}" for s in STATUSES)
    return "\n".join([
        f"run {row['run_id']} {row['status']}: {row['n_scored']} images scored in {fmt_duration(row['duration_s'])} "
        f"({row['images_per_s']:.2f} images/s)",
        f"  input rows {row['n_input']}, duplicates dropped {row['n_duplicates']}, "
        f"already scored (skipped) {row['n_skipped'] - row['n_duplicates']}",
        f"  statuses: {statuses}",
        f"  faces: {row['n_faces']}",
        *_mix_lines(row),
        f"  model {row['model_version']}, detector {row['detector_version']}, config {row['config_hash']}",
        f"  input {row['input']} -> lake {row['output']}",
    ])
