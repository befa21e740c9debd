"""Compact the lake's small files and VACUUM old unreferenced ones.

    python jobs/maintain_lake.py --lake LAKE_DIR_OR_URI [--vacuum-hours 168] [--dry-run]
                                 [--storage-option KEY=VALUE ...]

Each scoring run adds one Parquet file per campaign and table, so an hourly schedule piles up
thousands of small files that slow every read; compaction rewrites them into few large ones.
VACUUM then deletes files no table version newer than ``--vacuum-hours`` needs (time travel
further back than that stops working). Refused while a run's commits are pending. It takes the lake lease, so it waits for a scoring run
to finish (and a run waits for it). Exit codes: 0 ok, 2 bad arguments or a pending run, 75 lake busy.
No Spark: deltalake only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIN_VACUUM_HOURS = 24  # a scoring run's uncommitted files must never be old enough to be vacuumed


def main(argv: list[str] | None = None) -> int:
    from fer_core.config import key_value_arg

    p = argparse.ArgumentParser(prog="maintain_lake", description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", required=True, help="the lake root the scoring job writes (output.path)")
    p.add_argument("--vacuum-hours", type=int, default=None,
                   help=f"also VACUUM files unreferenced for longer than this (>= {MIN_VACUUM_HOURS}; Delta's "
                        "default is 168)")
    p.add_argument("--dry-run", action="store_true", help="change nothing; report what VACUUM would delete")
    p.add_argument("--storage-option", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                   help="fsspec-style storage option for s3:// lakes, as in output.storage_options; repeatable")
    p.add_argument("--lock-wait-s", type=float, default=3600.0,
                   help="wait this long for the lake lease while a scoring run holds it (then exit 75)")
    args = p.parse_args(argv)
    if args.vacuum_hours is not None and args.vacuum_hours < MIN_VACUUM_HOURS:
        print(f"maintain_lake: --vacuum-hours {args.vacuum_hours} is below {MIN_VACUUM_HOURS}: files of a "
              "scoring run still in progress could be deleted; pass a larger value", file=sys.stderr)
        return 2

    from jobs.campaign.admin import AdminError, maintain
    from jobs.campaign.lake import Lake
    from jobs.campaign.lease import BUSY_EXIT_CODE, LakeBusyError, lake_lease

    lake = Lake(args.lake, dict(args.storage_option) or None)
    try:
        # under the lake lease: no scoring run is between writing its files and committing them
        with lake_lease(lake, "maintain", args.lock_wait_s, sys.stdout):
            report = maintain(lake, vacuum_hours=args.vacuum_hours, dry_run=args.dry_run)
    except LakeBusyError as e:
        print(f"maintain_lake: {e}", file=sys.stderr)
        return BUSY_EXIT_CODE
    except AdminError as e:
        print(f"maintain_lake: {e}", file=sys.stderr)
        return 2
    if not report:
        print(f"maintain_lake: no Delta tables under {args.lake}; check --lake (the job's output.path)",
              file=sys.stderr)
        return 2
    for name, r in report.items():
        verb = "would vacuum" if args.dry_run else "vacuumed"
        print(f"{name}: {r['files_before']} -> {r['files_after']} files, {verb} {r['vacuumed']}, "
              f"version {r['version']}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
