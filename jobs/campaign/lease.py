"""The lake lease: one writer at a time on a lake, across hosts, on local disks and on S3.

Why a lease and not only commit-time conflict checks: a run's plan (what to skip, which campaigns to
recompute, which pending manifests belong to dead runs) is only right if nobody else writes between
reading the lake and committing. Holding the lake for the whole run makes every run see the lake as
the previous one left it, so exactly-once needs no merge logic, recovery can tell a dead run's
manifest from a live one's (while we hold the lease, every pending manifest is a dead run's), and
maintenance and erasure simply take the same lease. Runs on one lake therefore go one after another;
each scores only what the previous left, so the wait costs little duplicated work.

Protocol. Lease records are objects ``<lake>/_job/lease/<seq>.json``; the record with the highest seq
is the lake's state. It is free when that record is released, or when its heartbeat is older than its
``ttl_s`` (its holder died: SIGKILL, lost host). To take the lake a process creates record seq+1 with
put-if-absent: ``os.link`` of a complete temp file locally, ``If-None-Match: *`` on S3. Exactly one
of several contenders succeeds; the others re-read and wait. The holder rewrites its own record every
``heartbeat_s`` and checks before each commit that its record is still the highest (``ensure_held``),
so a holder that stalled past its TTL and was taken over stops instead of committing.
Clocks: expiry compares the holder's heartbeat time with the reader's clock, so hosts need clocks within
a few seconds (NTP); the TTL (default 120 s) is far above that.

This module never imports deltalake (it runs before Spark forks its workers).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

from fer_core.errors import FerCoreError

from jobs.campaign.inputs import filesystem, is_remote

__all__ = ["LakeLease", "LakeBusyError", "LeaseLostError", "BUSY_EXIT_CODE", "lake_lease"]

BUSY_EXIT_CODE = 75
"""Exit code of a run that gave up waiting for the lake (EX_TEMPFAIL: try again later)."""
_SEQ_DIGITS = 12
_KEEP_RECORDS = 8  # older records are deleted by the next holder (the highest alone decides)


class LakeBusyError(FerCoreError):
    """Another run held the lake for longer than this run was allowed to wait."""


class LeaseLostError(FerCoreError):
    """This process's lease expired and another process took the lake over; nothing more is committed."""


@dataclass
class Holder:
    """What a lease record says: who holds the lake, since when, and whether it is still alive."""

    seq: int
    record: dict[str, Any]

    def describe(self) -> str:
        r = self.record
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.get("acquired_at", 0)))
        return (f"{r.get('kind', 'run')} {r.get('holder', '?')} (pid {r.get('pid', '?')} on {r.get('host', '?')}), "
                f"holding the lake since {since}")

    def free(self, now: float) -> bool:
        r = self.record
        return bool(r.get("released")) or now > float(r.get("heartbeat_at", 0)) + float(r.get("ttl_s", 0))


class LakeLease:
    """Exclusive lease on the lake at ``root``; use ``with lease.hold(wait_s, out):``."""

    def __init__(self, root: str, storage_options: dict[str, str] | None, holder: str, *, kind: str = "run",
                 ttl_s: float = 120.0, heartbeat_s: float | None = None) -> None:
        self.root = root.rstrip("/")
        self.options = storage_options
        self.holder = holder
        self.kind = kind
        self.ttl_s = float(ttl_s)
        self.heartbeat_s = float(heartbeat_s if heartbeat_s is not None else max(1.0, ttl_s / 6))
        self.fs, self.dir = filesystem(f"{self.root}/_job/lease", storage_options)
        self.seq: int | None = None
        self.acquired_at: float | None = None
        self.waited_s = 0.0
        self.took_over: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False

    # -------------------------------------------------------------- records
    def _path(self, seq: int) -> str:
        return f"{self.dir}/{seq:0{_SEQ_DIGITS}d}.json"

    def _seqs(self) -> list[int]:
        try:
            if not is_remote(self.root) and not os.path.isdir(self.dir):
                return []
            self.fs.invalidate_cache(self.dir)
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.dir, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def current(self) -> Holder | None:
        """The highest record, or None when the lake was never leased."""
        seqs = self._seqs()
        if not seqs:
            return None
        try:
            record = json.loads(self.fs.cat_file(self._path(seqs[-1])))
        except FileNotFoundError:  # deleted between list and read: look again
            return self.current()
        except ValueError:  # unreadable: treat as held and fresh, it expires like any other
            record = {"heartbeat_at": time.time(), "ttl_s": self.ttl_s, "holder": "?"}
        return Holder(seqs[-1], record)

    def _record(self, *, released: bool = False) -> bytes:
        now = time.time()
        return json.dumps({
            "holder": self.holder, "kind": self.kind, "host": socket.gethostname(), "pid": os.getpid(),
            "acquired_at": self.acquired_at or now, "heartbeat_at": now, "ttl_s": self.ttl_s, "released": released,
        }).encode()

    def _create(self, seq: int) -> bool:
        """Put-if-absent of record ``seq``; False when another process created it first."""
        data = self._record()
        path = self._path(seq)
        if is_remote(self.root):
            try:
                self.fs.pipe_file(path, data, mode="create")  # S3: If-None-Match: *
            except FileExistsError:
                return False
            except OSError as e:  # some S3 versions answer 412 as a generic error
                if "PreconditionFailed" in str(e) or "412" in str(e):
                    return False
                raise
            return True
        os.makedirs(self.dir, exist_ok=True)
        tmp = f"{self.dir}/.{seq}-{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, fails if the name exists, and the record is complete when seen
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _rewrite(self, *, released: bool = False) -> None:
        data = self._record(released=released)
        path = self._path(self.seq)
        if is_remote(self.root):
            self.fs.pipe_file(path, data)
            return
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    # -------------------------------------------------------------- acquire / hold / release
    def acquire(self, wait_s: float, out: TextIO | None = None, poll_s: float = 1.0) -> None:
        """Take the lake, waiting up to ``wait_s`` seconds (saying for whom); LakeBusyError after that."""
        start = time.monotonic()
        said: tuple[int, str] | None = None
        last_said = 0.0
        while True:
            top = self.current()
            now = time.time()
            if top is None or top.free(now):
                seq = 0 if top is None else top.seq + 1
                self.acquired_at = now
                if self._create(seq):
                    self.seq = seq
                    self.waited_s = time.monotonic() - start
                    if top is not None and not top.record.get("released"):
                        self.took_over = top
                        _say(out, f"lake lease: the last holder, {top.describe()}, stopped renewing its lease "
                                  f"{now - float(top.record.get('heartbeat_at', 0)):.0f} s ago (TTL "
                                  f"{float(top.record.get('ttl_s', 0)):.0f} s): taking the lake over")
                    self._start_heartbeat()
                    self._cleanup(seq)
                    return
                continue  # another process won this seq: look again at once
            waited = time.monotonic() - start
            if waited >= wait_s:
                raise LakeBusyError(
                    f"the lake {self.root} is held by {top.describe()}; gave up after waiting {waited:.0f} s "
                    f"(output.lock_wait_s={wait_s:g}). Try again later, or raise output.lock_wait_s")
            key = (top.seq, str(top.record.get("holder")))
            if key != said or time.monotonic() - last_said > 60:
                _say(out, f"waiting for {top.describe()}; will wait up to {wait_s - waited:.0f} s more")
                said, last_said = key, time.monotonic()
            time.sleep(min(poll_s, max(0.05, wait_s - waited)))

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="lake-lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                top = self.current()
                if top is None or top.seq != self.seq:
                    self._lost = True
                    return
                self._rewrite()
            except Exception:  # a transient store error: the next beat tries again (the TTL has slack)
                continue

    def ensure_held(self) -> None:
        """Raise LeaseLostError unless this process still holds the lake (call before each commit)."""
        top = self.current()
        if self._lost or self.seq is None or top is None or top.seq != self.seq:
            self._lost = True
            holder = top.describe() if top is not None else "nobody"
            raise LeaseLostError(f"lost the lease on {self.root} (now {holder}); this run stops before "
                                 "committing, and its pending manifest is completed by the next holder")

    def release(self) -> None:
        """Mark the record released (the next run takes the lake at once); idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
            self._thread = None
        if self.seq is None:
            return
        try:
            top = self.current()
            if top is not None and top.seq == self.seq:
                self._rewrite(released=True)
        finally:
            self.seq = None

    def _cleanup(self, seq: int) -> None:
        for old in self._seqs():
            if old < seq - _KEEP_RECORDS:
                try:
                    self.fs.rm_file(self._path(old))
                except FileNotFoundError:
                    pass

    def hold(self, wait_s: float, out: TextIO | None = None) -> "LakeLease":
        self.acquire(wait_s, out)
        return self

    def __enter__(self) -> "LakeLease":
        if self.seq is None:
            raise RuntimeError("use `with lease.hold(wait_s, out):`")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lake_lease(lake: Any, kind: str, wait_s: float, out: TextIO | None = None, *, ttl_s: float = 120.0) -> LakeLease:
    """The held lease of a maintenance or erasure process (``with lake_lease(...):``)."""
    holder = f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    return LakeLease(lake.root, lake.storage_options, holder, kind=kind, ttl_s=ttl_s).hold(wait_s, out)


def _say(out: TextIO | None, line: str) -> None:
    if out is not None:
        print(line, file=out, flush=True)
