"""Typed schema of the job's YAML config (conf/*.yaml), loaded strictly by fer_core.config.

``JobConfig`` is the pipeline config (``fer_core.pipeline_config.InferenceConfig``: detector, model,
sentiment, runtime, max_pixels, max_bytes, with its one set of defaults) plus the job-only sections
declared here (input, output, spark, progress, health). The same pipeline sections therefore mean the
same thing in a job YAML and in ``python -m fer_core predict --config``.

An unknown key, a missing required key or a value of the wrong type fails when the file is read,
with a ConfigError naming the dotted key (e.g. ``conf/x.yaml: input.columns.imgae: unknown key``).
Command-line flags (--input, --output) override ``input.path`` / ``output.path``.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from fer_core.config import dataclass_to_dict, load_dataclass, load_yaml
from fer_core.errors import ConfigError
from fer_core.pipeline_config import InferenceConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "conf" / "default.yaml"

__all__ = ["JobConfig", "load_job_config", "DEFAULT_CONFIG", "config_hash"]


@dataclass(frozen=True)
class Columns:
    """Input column names (Parquet dumps). Each maps our name -> the dump's column name."""

    image_id: str = "image_id"
    campaign_id: str = "campaign_id"
    posted_at: str = "posted_at"
    platform: str = "platform"
    caption: str = "caption"
    image: str = "image"
    uri: str = "uri"


@dataclass(frozen=True)
class InputConfig:
    """``input:`` where the images come from.

    format: parquet (dumps with an ``image`` binary column or a ``uri`` string column) or
        folders (image files read with Spark's binaryFile source).
    path: a path, glob (``dumps/date=*/``) or URI (s3://..., file://...). Overridden by --input.
    payload: which column carries the image: auto (image if present, else uri), image, uri.
    extra_columns: further dump columns carried to the images table unchanged.
    campaign_from: folders only: ``partition`` = the ``campaign_id=X`` folder anywhere in the path,
        ``first_level`` = the first folder below ``path``.
    default_campaign / default_platform: used where the dump or path gives none.
    glob_filter: folders only: file-name pattern (Spark pathGlobFilter, case-sensitive); "" (the default) =
        every format fer_core scores, in any case: photos (.jpg .JPG .jpeg .png .webp .gif .bmp .tif .tiff
        .heic .heif .avif) and video posts (.mp4 .m4v .mov .webm .mkv). Files it leaves out are counted and named in the run's output.
    storage_options: fsspec options for reading URIs and remote dumps (e.g. endpoint_url, key, secret).
    (A fetched URI, file or image cell larger than the top-level ``max_bytes`` is status too_large, not read.)
    retry_fetch_errors: images whose fetch failed in an earlier run (status fetch_error, e.g. a
        timeout or a missing object) are fetched again; a retried image keeps one row, the new one.
    fetch_threads: URIs fetched at once per Python worker (object-store and CDN latency, not bandwidth,
        bounds a one-by-one fetch); 1 fetches one at a time.
    uri_allow: where a dump's URIs may point besides the dump's own root (its folder for a local dump, its
        bucket for an s3:// one): prefixes such as ``s3://brand-bucket/media/``, ``file:///data/media/`` or
        ``https://cdn.example.com/``. Anything else is status fetch_error ("refused by input.uri_allow"),
        checked before any file or socket is opened (fer_core.fetch). http(s) is off unless listed.
    uri_allow_private_hosts: let listed http(s) prefixes reach loopback/private/link-local addresses
        (an on-premise media server, tests). Off: such hosts are refused after DNS resolution.
    posted_at_format: how posted_at is read. auto: timestamps (any unit, naive = UTC), dates and ISO-8601
        text; epoch_s / epoch_ms: integers (an integer column is never guessed); iso8601: text only.
    since: only the dated folders (``date=YYYY-MM-DD`` anywhere in a file's path) on or after this date
        are read: ``YYYY-MM-DD``, or ``Nd`` for N days before today (UTC; ``1d`` = yesterday and today).
        Files outside any ``date=`` folder are read as before. Overridden by --since. null: every date.
    """

    format: Literal["parquet", "folders"] = "parquet"
    path: str = "sample_data/dump"
    payload: Literal["auto", "image", "uri"] = "auto"
    columns: Columns = field(default_factory=Columns)
    extra_columns: list[str] = field(default_factory=list)
    campaign_from: Literal["partition", "first_level"] = "partition"
    default_campaign: str = "unknown"
    default_platform: str | None = None
    glob_filter: str = ""
    storage_options: dict[str, str] = field(default_factory=dict)
    retry_fetch_errors: bool = True
    fetch_threads: int = 16
    uri_allow: list[str] = field(default_factory=list)
    uri_allow_private_hosts: bool = False
    posted_at_format: Literal["auto", "iso8601", "epoch_s", "epoch_ms"] = "auto"
    since: str | None = None

    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "max_fetch_bytes": "moved to the top-level max_bytes (the pipeline config's limit, shared with "
                           "`python -m fer_core predict`); see conf/default.yaml"}

    def __post_init__(self) -> None:
        if self.since is not None:
            self.since_date()  # a bad value fails when the config is read
        if self.fetch_threads < 1:
            raise ConfigError(f"fetch_threads: must be >= 1, got {self.fetch_threads}")
        for prefix in self.uri_allow:
            if not isinstance(prefix, str) or not prefix.strip() or "*" in prefix:
                raise ConfigError(f"uri_allow: {prefix!r} is not a prefix; write e.g. s3://bucket/media/, "
                                  "file:///data/media/ or https://cdn.example.com/ (no globs)")
            if "://" in prefix and prefix.split("://", 1)[1].strip("/") == "":
                raise ConfigError(f"uri_allow: {prefix!r} allows a whole scheme; name a bucket, folder or host")

    def since_date(self, today: datetime.date | None = None) -> datetime.date | None:
        """``since`` as a date (None: every date)."""
        import re

        if self.since is None:
            return None
        text = str(self.since).strip()
        m = re.fullmatch(r"(\d{1,5})d", text)
        if m:
            return (today or datetime.datetime.now(datetime.timezone.utc).date()) - datetime.timedelta(int(m.group(1)))
        try:
            return datetime.date.fromisoformat(text)
        except ValueError:
            raise ConfigError(f"since: {self.since!r} is neither a date (YYYY-MM-DD) nor a number of days "
                              "back (e.g. 1d = yesterday and today)") from None

    def uri_policy(self):
        """The fer_core.fetch.UriPolicy of this input: the dump's root plus uri_allow."""
        from fer_core.fetch import UriPolicy

        return UriPolicy.for_dump(dump_root(self.path), self.uri_allow,
                                  allow_private_hosts=self.uri_allow_private_hosts)


def dump_root(path: str) -> str:
    """The folder (or bucket prefix) a dump path, glob or file lies in: where its own URIs may point."""
    import os
    import re

    m = re.search(r"[*?\[{]", path)
    head = path[: m.start()].rsplit("/", 1)[0] if m else path
    if "://" not in head or head.startswith("file://"):
        local = head[len("file://"):] if head.startswith("file://") else head
        local = os.path.abspath(local or ".")
        return local if os.path.isdir(local) or not os.path.splitext(local)[1] else os.path.dirname(local)
    if head.rstrip("/").lower().endswith((".parquet", ".parq", ".pq")):
        head = head.rstrip("/").rsplit("/", 1)[0]
    return head


@dataclass(frozen=True)
class OutputConfig:
    """``output:`` the Delta lake and the dashboards.

    path: lake root (local dir or s3://bucket/prefix); tables land in <path>/images, faces, campaigns, runs.
    dashboards: render HTML dashboards at the end of a run.
    dashboards_path: where (default <path>/dashboards; may be a local dir when the lake is remote).
    target_file_rows: an executor starts a new Parquet file after this many rows of one table.
    lock_wait_s: how long a run waits for the lake while another run, maintenance or erasure holds it
        (jobs/campaign/lease.py); after that it exits with code 75 and the next run records it.
    lock_ttl_s: a holder that has not renewed its lease for this long is taken for dead (SIGKILL, lost
        host) and the next run takes the lake over; renewed every lock_ttl_s / 6.
    """

    path: str = "lake"
    storage_options: dict[str, str] = field(default_factory=dict)
    dashboards: bool = True
    dashboards_path: str | None = None
    target_file_rows: int = 200_000
    lock_wait_s: float = 3600.0
    lock_ttl_s: float = 120.0

    def __post_init__(self) -> None:
        if self.target_file_rows < 1:
            raise ConfigError(f"target_file_rows: must be >= 1, got {self.target_file_rows}")
        if self.lock_wait_s < 0:
            raise ConfigError(f"lock_wait_s: must be >= 0, got {self.lock_wait_s}")
        if self.lock_ttl_s < 2:
            raise ConfigError(f"lock_ttl_s: must be >= 2 seconds, got {self.lock_ttl_s}")


@dataclass(frozen=True)
class SparkSettings:
    """``spark:`` session and partitioning settings. ``master`` applies only when not launched by
    spark-submit with --master.

    arrow_batch_size: rows per Arrow batch handed to the pandas UDFs
        (spark.sql.execution.arrow.maxRecordsPerBatch); images are decoded one Arrow batch at a time.
    images_per_task: target images per Spark task (sets the partition count: parallelism and progress
        granularity).
    conf: any Spark conf, e.g. spark.executor.resource.gpu.amount (see conf/gpu.yaml).
    """

    master: str = "local[*]"
    app_name: str = "score_campaign"
    arrow_batch_size: int = 64
    images_per_task: int = 2000
    conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("arrow_batch_size", "images_per_task"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class ProgressSettings:
    """``progress:`` driver progress lines every ``interval_s`` seconds (0 = off)."""

    interval_s: float = 10.0


@dataclass(frozen=True)
class HealthSettings:
    """``health:`` each run's metrics and its drift check against the trailing runs (jobs/campaign/health.py).

    A run drifts when, against the median of the last ``trailing_runs`` runs with at least ``min_images``
    scored images, its error share or mean detector confidence moves by more than the given absolute
    amount, its faces per image by more than the given fraction, or its emotion mix by a total variation
    distance above ``max_mix_change``. Nothing is judged before ``min_trailing_runs`` such runs.
    ``textfile``: where the Prometheus textfile goes (default ``<output.path>/_job/score_campaign.prom``).
    """

    trailing_runs: int = 10
    min_trailing_runs: int = 3
    min_images: int = 50
    max_error_share_change: float = 0.05
    max_faces_per_image_change: float = 0.3
    max_confidence_change: float = 0.05
    max_mix_change: float = 0.15
    textfile: str | None = None


@dataclass(frozen=True)
class BackfillSettings:
    """``backfill:`` how a new scoring identity (fer_core.identity: a new model, TTA, detector policy...)
    reaches the images an older identity scored.

    Each run first scores the images new to the lake, then rescores at most ``max_images_per_run`` of the
    input's images that only older identities scored, newest first (posted_at), so that an upgrade never
    turns one hourly run into a rescoring of the whole history: 2,000 images is about a minute on a
    16-core executor pool, a few on a laptop (README "Upgrades and backfills"). The rest waits for the
    next runs; the console and the runs table (n_backlog_left) say how much. 0: never rescore (new
    images only); null: rescore the whole backlog at once.
    """

    max_images_per_run: int | None = 2000

    def __post_init__(self) -> None:
        if self.max_images_per_run is not None and self.max_images_per_run < 0:
            raise ConfigError(f"max_images_per_run: must be >= 0 or null, got {self.max_images_per_run}")


@dataclass(frozen=True)
class JobConfig(InferenceConfig):
    """The whole job config (conf/default.yaml documents every key): the pipeline sections of
    ``InferenceConfig`` (detector, model, sentiment, runtime, max_pixels, max_bytes: one schema and one
    set of defaults with the CLI), plus the job-only sections below. ``pipeline_config()`` is the
    InferenceConfig executors build their FacePipeline from."""

    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    spark: SparkSettings = field(default_factory=SparkSettings)
    progress: ProgressSettings = field(default_factory=ProgressSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    backfill: BackfillSettings = field(default_factory=BackfillSettings)

    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "tta": "moved to model.tta (model: {name: default, tta: true}); see conf/default.yaml",
        "inference": "this section was split into the pipeline config's runtime (device, intra_threads, "
                     "inter_threads), model.batch_size and max_pixels, and spark (arrow_batch_size, "
                     "images_per_task); see conf/default.yaml",
    }

    def with_overrides(self, *, input: str | None = None, output: str | None = None,
                       since: str | None = None, backfill_max: int | None = None) -> "JobConfig":
        """Apply --input / --output / --since / --backfill-max."""
        cfg = self
        if backfill_max is not None:
            cfg = dataclasses.replace(cfg, backfill=BackfillSettings(max_images_per_run=backfill_max))
        if since:
            cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, since=since))
        if input:
            cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, path=input))
        if output:
            cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, path=output))
        return cfg

    def dashboards_dir(self) -> str:
        return self.output.dashboards_path or self.output.path.rstrip("/") + "/dashboards"


def load_job_config(path: str | Path | None = None, **overrides: Any) -> JobConfig:
    """Read and validate a YAML config (conf/default.yaml when None), then apply --input/--output."""
    cfg = load_yaml(path or DEFAULT_CONFIG, JobConfig)
    return cfg.with_overrides(**overrides)


def job_config_from_dict(data: dict) -> JobConfig:
    """Same validation as load_job_config, from a mapping (tests, bench)."""
    return load_dataclass(JobConfig, data)


def config_hash(cfg: InferenceConfig) -> str:
    """sha256 (first 16 hex) of the pipeline config (everything that changes the scores); the job-only
    sections (paths, Spark, progress, health) are left out on purpose, and so is the RetinaFace engine,
    whose engines return the same rows (tests/test_detectors.py), so that runs before and after it
    existed keep one hash. It is taken over the resolved config (detector defaults written out), so a
    config that states a default and one that leaves it out hash alike, from a job or an inference YAML."""
    data = dataclass_to_dict(cfg.resolved())
    data["detector"].pop("engine", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
