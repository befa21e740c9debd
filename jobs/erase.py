"""Erase campaigns or images from the lake on request (a person's photo, a finished campaign).

    python jobs/erase.py --lake LAKE_DIR_OR_URI (--campaign ID ... | --image ID ...) --reason TEXT
                         [--keep-files] [--dry-run] [--storage-option KEY=VALUE ...]

Deletes their rows from the images, faces and campaigns tables, records a tombstone in the lake's
``erasures`` table (the record of what was erased, when and why; ids only) so no later scoring run
scores them again even if the dump still holds them, then VACUUMs the touched tables with zero
retention so the deleted rows' files are gone from storage (``--keep-files`` leaves that to the nightly
maintain_lake VACUUM). Run it under the scoring job's lock (conf/schedule/crontab), as a running job's
uncommitted files would be vacuumed too. What stays: the dump itself (yours to delete), Delta log
statistics (per-file min/max of ids, no pixels or scores) until the log's retention (30 days) expires,
and dashboards until their next render (the job re-renders after each run; or run
``python -m dashboards render``). An image erasure leaves its campaign's campaigns row stale until the
next scoring run recomputes it. Exit codes: 0 done, 2 bad arguments or a pending run. No Spark.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from fer_core.config import key_value_arg

    p = argparse.ArgumentParser(prog="erase", description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", required=True, help="the lake root the scoring job writes (output.path)")
    p.add_argument("--campaign", action="append", default=[], metavar="ID", help="campaign id to erase; repeatable")
    p.add_argument("--image", action="append", default=[], metavar="ID", help="image id to erase; repeatable")
    p.add_argument("--reason", required=True, help="why (kept in the erasures table as the record)")
    p.add_argument("--keep-files", action="store_true",
                   help="do not VACUUM now; the deleted rows' files stay until maintain_lake's VACUUM")
    p.add_argument("--dry-run", action="store_true", help="change nothing; report the rows that would be deleted")
    p.add_argument("--storage-option", action="append", type=key_value_arg, default=[], metavar="KEY=VALUE",
                   help="fsspec-style storage option for s3:// lakes, as in output.storage_options; repeatable")
    p.add_argument("--lock-wait-s", type=float, default=3600.0,
                   help="wait this long for the lake lease while a scoring run holds it (then exit 75)")
    args = p.parse_args(argv)

    from jobs.campaign.admin import AdminError, erase
    from jobs.campaign.lake import Lake
    from jobs.campaign.lease import BUSY_EXIT_CODE, LakeBusyError, lake_lease

    lake = Lake(args.lake, dict(args.storage_option) or None)
    if lake.table("images") is None:
        print(f"erase: no images table under {args.lake}; check --lake (the job's output.path)", file=sys.stderr)
        return 2
    try:
        # under the lake lease: a scoring run either committed before (its rows are deleted here) or
        # starts after (it reads the tombstone and never scores the erased ids)
        with lake_lease(lake, "erase", args.lock_wait_s, sys.stdout):
            report = erase(lake, campaigns=args.campaign, images=args.image, reason=args.reason,
                                vacuum=not args.keep_files, dry_run=args.dry_run)
    except LakeBusyError as e:
        print(f"erase: {e}", file=sys.stderr)
        return BUSY_EXIT_CODE
    except AdminError as e:
        print(f"erase: {e}", file=sys.stderr)
        return 2
    verb = "would delete" if args.dry_run else "deleted"
    for name, n in report["deleted"].items():
        print(f"{name}: {verb} {n} rows")
    if report.get("inputs_forgotten"):
        print(f"inputs: {verb} the records of {report['inputs_forgotten']} consumed input files (the next scoring "
              "run reads them again, once; the erased images stay out)")
    if not args.dry_run:
        print(f"erasure {report['erasure_id']} recorded; {report['vacuumed']} files vacuumed"
              + (" (kept until the next maintain_lake VACUUM)" if args.keep_files else ""))
        if args.image and report["campaigns"]:
            print(f"campaign rows of {report['campaigns']} are recomputed by the next scoring run")
        print("re-render the dashboards (the next scoring run does, or: python -m dashboards render "
              f"--tables {args.lake} --out <dashboards dir>)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
