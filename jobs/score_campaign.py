"""Score campaign images for facial emotion and write the Delta tables (and dashboards).

    spark-submit jobs/score_campaign.py [--config conf/<file>.yaml] [--input PATH_OR_GLOB_OR_URI]
                                        [--output LAKE_DIR_OR_URI] [--run-id ID] [--dry-run]
                                        [--fail-on-drift] [--verbose]
    python jobs/score_campaign.py ...        (same flags; local[*] unless the config names a master)

Thin entry point: parse flags, load the config, build the session, call jobs.campaign.job.run_job,
render the dashboards. The console shows the job's lines and Spark's WARN/ERROR once spark-submit is
given conf/log4j2.properties (see the README); ``--verbose`` brings the rest back.

Exit codes: 0 ok, 2 config/input problem (the message names the key, column or path), 3 the run drifted
and --fail-on-drift was given (its rows are committed), 75 the lake stayed held by another run longer than
output.lock_wait_s (try again later), 1 anything else.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="score_campaign", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config (default: conf/default.yaml)")
    p.add_argument("--input", help="override input.path: a dump dir, glob (dumps/date=*/) or URI")
    p.add_argument("--since", help="override input.since: read only date=YYYY-MM-DD folders on or after this "
                                   "date, or Nd days back (1d = yesterday and today)")
    p.add_argument("--backfill-max", type=int, metavar="N",
                   help="override backfill.max_images_per_run: rescore at most N images that only an older scoring "
                        "identity scored (newest first); 0: none")
    p.add_argument("--output", help="override output.path: the lake root, local dir or s3://bucket/prefix")
    p.add_argument("--run-id", help="run id (default: UTC time + random); rerunning an id that committed is a no-op")
    p.add_argument("--no-dashboards", action="store_true", help="skip rendering the dashboards")
    p.add_argument("--dry-run", action="store_true",
                   help="print what a run would score (per campaign) and an estimated time; write nothing")
    p.add_argument("--fail-on-drift", action="store_true",
                   help="exit 3 when the run drifted from the trailing runs (health: thresholds in the config)")
    p.add_argument("--verbose", action="store_true",
                   help="Spark's INFO lines and TensorFlow's C++ logs on the console too (default: the job's "
                        "lines, Spark WARN/ERROR)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fer_core.errors import ConfigError

    from jobs.campaign.config import load_job_config
    from jobs.campaign.inputs import InputError

    try:
        cfg = load_job_config(args.config, input=args.input, output=args.output, since=args.since,
                              backfill_max=args.backfill_max)
    except ConfigError as e:
        print(f"score_campaign: config error: {e}", file=sys.stderr)
        return 2

    from jobs.campaign.session import build_session

    spark = build_session(cfg, verbose=args.verbose)  # before deltalake is imported anywhere (the JVM is forked)
    try:
        from jobs.campaign.job import render, run_job

        from jobs.campaign.lease import BUSY_EXIT_CODE, LakeBusyError, LeaseLostError

        try:
            row = run_job(spark, cfg, args.run_id, dry_run=args.dry_run)
        except (ConfigError, InputError) as e:
            print(f"score_campaign: {e}", file=sys.stderr)
            return 2
        except LakeBusyError as e:
            print(f"score_campaign: {e}", file=sys.stderr)
            return BUSY_EXIT_CODE
        except LeaseLostError as e:
            print(f"score_campaign: {e}", file=sys.stderr)
            return 1
        except Exception as e:  # anything else: say it, with credentials blanked, and fail
            import traceback

            from fer_core.storage import redact

            secrets = {**cfg.input.storage_options, **cfg.output.storage_options}
            print(redact("".join(traceback.format_exception(e)), secrets), file=sys.stderr)
            return 1
        if cfg.output.dashboards and not args.no_dashboards and not args.dry_run:
            index = render(cfg)
            print(f"dashboards: {index}")
        health = row.get("health") or {}
        if args.fail_on_drift and health.get("drift"):
            from jobs.campaign.health import DRIFT_EXIT

            print(f"score_campaign: run {row['run_id']} drifted: {health['drift_reasons']}", file=sys.stderr)
            return DRIFT_EXIT
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
