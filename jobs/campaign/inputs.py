"""Read the configured input into ONE standard DataFrame, checking the schema up front.

Output columns: image_id, campaign_id, posted_at, platform, caption, source, input_file (the dump or
image file the row came from), image (binary or null),
uri (string or null), then the configured extra columns. Nothing is collected to the driver: the
driver only lists files and reads Parquet footers (metadata) to fail early with a clear message.

Kinds of input (``input.format``):
* parquet: dumps (a dir, a glob such as ``dumps/date=*/`` or an s3:// URI) with either an ``image``
  binary column or a ``uri`` string column; local dumps are read by Spark's Parquet source, remote
  ones (s3://...) by ``read_parquet_files`` on the executors with fsspec (the pyspark wheel has no s3a).
* folders: image files; local folders through Spark's binaryFile source, remote ones listed by
  the driver and fetched by URI inside the UDFs. The campaign comes from the path.

This module is imported on executors (``read_parquet_files``): it must never import deltalake.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Collection, Iterator, TextIO

from fer_core.decode import IMAGE_SUFFIXES, image_glob
from fer_core.sniff import VIDEO_SUFFIXES
from fer_core.errors import FerCoreError
from fer_core.storage import fsspec_options, redact

from jobs.campaign.config import InputConfig

__all__ = ["InputError", "read_input", "read_new_input", "empty_input", "dedupe", "read_parquet_files", "list_files",
           "list_file_versions", "FileVersion", "InputFiles", "reader_key", "record_path", "STANDARD"]

STANDARD = ("image_id", "campaign_id", "posted_at", "platform", "caption", "source", "input_file", "image", "uri")
_GLOB = re.compile(r"[*?\[{]")


class InputError(FerCoreError, ValueError):
    """The input cannot be read as configured; the message names the path or column and what to do."""


# ---------------------------------------------------------------- storage helpers


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def filesystem(path: str, options: dict[str, str] | None):
    """(fsspec filesystem, path without protocol) for a local path or URI; ``options`` in deltalake's spelling."""
    import fsspec

    if not is_remote(path):
        return fsspec.filesystem("file"), os.path.abspath(local_path(path))
    fs, _, paths = fsspec.get_fs_token_paths(path, storage_options=fsspec_options(path, options))
    return fs, fs._strip_protocol(path)


def _unstrip(fs, path: str, original: str) -> str:
    """Put the protocol back on a listed path (s3fs lists 'bucket/key')."""
    if not is_remote(original):
        return path
    proto = original.split("://", 1)[0]
    return f"{proto}://{path}"


def list_files(path: str, options: dict[str, str] | None, *, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """All files under a path / glob (recursively), sorted; hidden and _underscore files are skipped."""
    return [f for f, _ in list_files_with_mtime(path, options, suffixes=suffixes)]


@dataclass(frozen=True)
class FileVersion:
    """One listed input file as the listing saw it: what the record of consumed files (the inputs table)
    keys on. path: a local absolute path or ``proto://bucket/key``; etag: S3's ETag (None locally)."""

    path: str
    size: int | None
    mtime_s: float | None
    etag: str | None = None

    def key(self) -> tuple[str, int | None, float | None, str | None]:
        return (self.path, self.size, self.mtime_s, self.etag)


@dataclass
class InputFiles:
    """What a run's listing found: the files it reads (new or changed since recorded) and those it skipped,
    unopened, because the record says this scoring identity consumed them as they are."""

    read: list[FileVersion] = field(default_factory=list)
    skipped: list[FileVersion] = field(default_factory=list)
    format: str = "parquet"
    n_changed: int = 0  # of ``read``: files recorded before in another version (size, mtime or ETag changed)


def list_files_with_mtime(path: str, options: dict[str, str] | None, *,
                          suffixes: tuple[str, ...] | None = None) -> list[tuple[str, float | None]]:
    """(file, modification time in epoch seconds or None) for every file ``list_files`` returns, from
    the one listing (no request per file)."""
    return [(v.path, v.mtime_s) for v in list_file_versions(path, options, suffixes=suffixes)]


def list_file_versions(path: str, options: dict[str, str] | None, *,
                       suffixes: tuple[str, ...] | None = None) -> list[FileVersion]:
    """Every file ``list_files`` returns with its size, modification time and (S3) ETag, from the one
    listing (no request per file), sorted by path."""
    fs, stripped = filesystem(path, options)
    try:
        roots = sorted(fs.glob(stripped)) if _GLOB.search(stripped) else ([stripped] if fs.exists(stripped) else [])
        files: dict[str, FileVersion] = {}
        for root in roots:
            found = fs.find(root, detail=True) if fs.isdir(root) else {root: fs.info(root)}
            for f, info in found.items():
                name = f.rstrip("/").rsplit("/", 1)[-1]
                if name.startswith((".", "_")) or any(part.startswith((".", "_")) for part in f.split("/")[-3:-1]):
                    continue
                if suffixes and not name.lower().endswith(suffixes):
                    continue
                listed = _unstrip(fs, f, path)
                size = info.get("size", info.get("Size"))
                etag = info.get("ETag", info.get("etag"))
                files[listed] = FileVersion(listed, None if size is None else int(size), _mtime(info),
                                            None if etag is None else str(etag))
    except InputError:
        raise
    except Exception as e:  # fsspec backends raise many types (permissions, credentials, endpoint)
        raise InputError(f"input path {path}: cannot list it ({type(e).__name__}: {redact(str(e), options)[:300]}); "
                         "check the path and credentials") from None
    return [files[k] for k in sorted(files)]


def reader_key(cfg: InputConfig) -> str:
    """A short hash of the input settings that decide which rows (ids, campaigns, columns) a file yields and
    which of its images a run fetches again: a consumed-file record is valid for this reader only, so a new
    column mapping, payload, extra column, default or retry setting re-reads the files once (their images
    already scored are still skipped by id). Paths, since and credentials are not part of it, nor the URI
    policy: a record names it only for the files in which it refused a URI (the inputs table's uri_policy)."""
    settings: dict[str, Any] = {
        "format": cfg.format, "payload": cfg.payload, "columns": asdict(cfg.columns),
        "extra_columns": list(cfg.extra_columns), "campaign_from": cfg.campaign_from,
        "default_campaign": cfg.default_campaign, "default_platform": cfg.default_platform,
        "posted_at_format": cfg.posted_at_format, "retry_fetch_errors": cfg.retry_fetch_errors,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_path(input_file: str | None) -> str | None:
    """An images row's input_file as the listing (and so the record) names the file: local image-folder
    rows carry Spark's ``file:`` URI."""
    if input_file is None:
        return None
    return input_file[len("file:"):] if input_file.startswith("file:") and not is_remote(input_file) else input_file


def _split_consumed(listed: list[FileVersion], consumed: Collection[tuple] | None) -> tuple[list[FileVersion],
                                                                                           list[FileVersion]]:
    """(to read, skipped): a file is skipped when its exact (path, size, mtime, etag) is recorded."""
    if not consumed:
        return list(listed), []
    read = [v for v in listed if v.key() not in consumed]
    return read, [v for v in listed if v.key() in consumed]


def _mtime(info: dict[str, Any]) -> float | None:
    """A listing entry's modification time: local ``mtime`` (seconds), S3 ``LastModified`` (datetime)."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- Parquet footers (driver, metadata only)


def _footer_schema(path: str, options: dict[str, str] | None):
    from jobs.campaign.parquet_dumps import open_parquet

    try:
        fh, pf = open_parquet(path, options)
        with fh:
            return pf.schema_arrow
    except Exception as e:
        raise InputError(
            f"unreadable Parquet file {path}: {type(e).__name__}: {redact(str(e), options)[:300]}; remove or "
            f"re-export it (the job reads no input until every file of the dump is readable)"
        ) from None


def footer_schemas(files: list[str], options: dict[str, str] | None) -> list[Any]:
    """Every file's Arrow schema (footers only, read in threads); InputError names an unreadable file."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda f: _footer_schema(f, options), files))


# ---------------------------------------------------------------- executor-side Parquet reader


def read_parquet_files(
    spark,
    files: list[str],
    schema,
    storage_options: dict[str, str] | None = None,
    *,
    constants: list[dict[str, Any]] | None = None,
    batch_rows: int = 1024,
    keep: tuple[str, list[str]] | None = None,
):
    """A DataFrame of the rows of ``files`` (local or any fsspec URI), read on the executors.

    schema: Spark StructType of the columns to read (they must exist in every file);
    constants: per file, extra column values (e.g. Delta partition values), added to every row;
    keep: (column, values): only rows whose column is one of the values, filtered by pyarrow in each batch
    before anything reaches pandas or Spark (the incremental skip's candidate ids);
    a ``_file`` column holds each row's file. One Spark task per file at most; a file is read in
    row batches, so memory stays bounded whatever the file size.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    columns = [f.name for f in schema.fields if not constants or f.name not in constants[0]]
    out_schema = StructType(list(schema.fields) + [StructField("_file", StringType())])
    rows = [(f, json.dumps(c)) for f, c in zip(files, constants or [{}] * len(files))]
    listing = file_listing(spark, rows, "constants")
    names = [f.name for f in out_schema.fields]
    opts = dict(storage_options or {})
    keep_column, keep_values = keep if keep is not None else (None, None)

    def read(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        wanted = pa.array(keep_values, pa.string()) if keep_column is not None else None
        for batch in batches:
            for path, consts in zip(batch["file"], batch["constants"]):
                fs, stripped = filesystem(path, opts)
                values = json.loads(consts)
                with fs.open(stripped, "rb") as fh:
                    pf = pq.ParquetFile(fh)
                    for rb in pf.iter_batches(batch_size=batch_rows, columns=columns):
                        if wanted is not None:
                            rb = _without_views(rb)  # a file delta-rs rewrote holds string_view: no filter kernel
                            rb = rb.filter(pc.is_in(rb.column(keep_column), value_set=wanted))
                            if not rb.num_rows:
                                continue
                        pdf = rb.to_pandas()
                        for k, v in values.items():
                            pdf[k] = v
                        pdf["_file"] = path
                        yield pdf[names]
                    if pf.metadata.num_rows == 0:
                        yield pd.DataFrame({c: [] for c in names})

    return listing.mapInPandas(read, out_schema)


def _without_views(batch):
    """A record batch with its string_view / binary_view columns as plain string / binary (pyarrow has no
    filter or take kernel for views; delta-rs writes them when it rewrites a file, e.g. for a delete)."""
    import pyarrow as pa

    plain = {pa.types.is_string_view: pa.string(), pa.types.is_binary_view: pa.binary()}
    arrays = []
    for column in batch.columns:
        target = next((t for test, t in plain.items() if test(column.type)), None)
        arrays.append(column if target is None else column.cast(target))
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def file_listing(spark, rows: list[tuple[str, str]], second: str):
    """One row (file, ``second``: a JSON string) per file, spread over up to 4x the default parallelism, so
    executor-side readers get one task per file at most."""
    n = max(1, min(len(rows), spark.sparkContext.defaultParallelism * 4))
    listing = spark.createDataFrame(rows or [("", "{}")], f"file string, {second} string", verifySchema=False)
    if not rows:
        listing = listing.limit(0)
    return listing.repartition(n)


# ---------------------------------------------------------------- the standard input DataFrame


def read_input(spark, cfg: InputConfig, out: TextIO | None = None):
    """The standard input DataFrame (see module doc). Raises InputError before any image is read.

    out: where to say which files of an image folder the glob filter, or ``input.since``, left out (none
    are dropped silently).
    """
    return read_new_input(spark, cfg, out)[0]


def read_new_input(spark, cfg: InputConfig, out: TextIO | None = None, consumed: Collection[tuple] | None = None):
    """(standard input DataFrame or None, InputFiles): as ``read_input``, but the listed files whose
    ``FileVersion.key()`` is in ``consumed`` (the record of consumed files for this scoring identity and
    reader) are skipped without being opened: no footer, no Spark read. None when every listed file was
    skipped (``empty_input`` gives a DataFrame of no rows)."""
    files = InputFiles(format=cfg.format)
    if cfg.format == "parquet":
        return _read_parquet(spark, cfg, out, consumed, files), files
    return _read_folders(spark, cfg, out, consumed, files), files


def empty_input(spark, cfg: InputConfig, extra_fields: list[Any]):
    """A standard input DataFrame of no rows (every listed file was consumed). extra_fields: pyarrow fields of
    the configured extra columns (the lake's images table has their types; string where it has none)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    known = {f.name: f for f in extra_fields}
    standard = [pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()),
                pa.field("posted_at", pa.timestamp("us", tz="UTC")), pa.field("platform", pa.string()),
                pa.field("caption", pa.string()), pa.field("source", pa.string()),
                pa.field("input_file", pa.string()), pa.field("image", pa.binary()), pa.field("uri", pa.string())]
    extras = [known.get(c, pa.field(c, pa.string())) for c in cfg.extra_columns]
    return spark.createDataFrame([], from_arrow_schema(pa.schema(standard + extras)))


_DATE_FOLDER = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")


def keep_since(files: list[Any], cfg: InputConfig, out: TextIO | None, key: Callable[[Any], str] = str) -> list[Any]:
    """The files (or listing rows, by ``key``) that ``input.since`` keeps: those in a ``date=`` folder on or
    after it, and those in no ``date=`` folder. The older ones are never opened (not even their footers);
    how many were left out is said on ``out``."""
    import datetime

    since = cfg.since_date()
    if since is None:
        return files

    def kept(f: Any) -> bool:
        m = _DATE_FOLDER.search(key(f))
        if not m:
            return True
        try:
            return datetime.date.fromisoformat(m.group(1)) >= since
        except ValueError:  # date=2026-13-45: not a date folder after all
            return True

    out_files = [f for f in files if kept(f)]
    if out is not None and len(out_files) < len(files):
        print(f"input: {len(files) - len(out_files)} of {len(files)} files under {cfg.path} are in date= folders "
              f"before {since.isoformat()} (input.since {cfg.since}); not read", file=out, flush=True)
    return out_files


def _payload_column(cfg: InputConfig, names: list[str], where: str) -> str:
    """Which column carries the image; ``names`` in lower case (dump columns are matched in any case)."""
    cols = cfg.columns
    if cfg.payload == "image" or (cfg.payload == "auto" and cols.image.lower() in names):
        if cols.image.lower() not in names:
            raise InputError(f"{where}: no image column {cols.image!r} (input.columns.image); columns are {names}")
        return "image"
    if cols.uri.lower() not in names:
        raise InputError(
            f"{where}: neither an image column {cols.image!r} nor a uri column {cols.uri!r} "
            f"(input.columns.image / input.columns.uri); columns are {names}"
        )
    return "uri"


def _read_parquet(spark, cfg: InputConfig, out: TextIO | None = None, consumed: Collection[tuple] | None = None,
                  found: InputFiles | None = None):
    """Every file's footer is planned on the driver (jobs/campaign/parquet_dumps.py), then pyarrow reads
    the files on the executors: Spark's own Parquet source refuses nanosecond timestamps and reads
    neither Hive folders given as files nor columns in another case. Files in ``consumed`` are not
    opened (None when that leaves none); ``found`` gets what was read and skipped."""
    from pyspark.sql import functions as F

    from jobs.campaign.parquet_dumps import check_posted_at_text, output_fields, plan_file, read_dump

    listed = list_file_versions(cfg.path, cfg.storage_options, suffixes=(".parquet", ".parq", ".pq"))
    if not listed:
        raise InputError(f"no input: no Parquet file matches input.path {cfg.path!r}; check the path or --input")
    listed = keep_since(listed, cfg, out, key=lambda v: v.path)
    if not listed:
        raise InputError(f"no input: every Parquet file under input.path {cfg.path!r} is in a date= folder before "
                         f"input.since {cfg.since!r}")
    to_read, skipped = _split_consumed(listed, consumed)
    if found is not None:
        found.read, found.skipped = to_read, skipped
    if not to_read:
        return None
    files = [v.path for v in to_read]
    schemas = footer_schemas(files, cfg.storage_options)
    payload = _payload_column(cfg, [n.lower() for n in schemas[0].names], files[0])
    root = _glob_root(cfg.path).rstrip("/")
    if not is_remote(root):
        root = os.path.abspath(local_path(root))
    plans = [plan_file(schema, f, root, cfg, payload) for f, schema in zip(files, schemas)]
    fields = output_fields(plans[0], schemas[0], payload)
    for f, plan, schema in zip(files[1:], plans[1:], schemas[1:]):
        other = output_fields(plan, schema, payload)
        for a, b in zip(fields, other):
            if a.type != b.type and not _pa_castable(b.type, a.type):
                raise InputError(f"Parquet file {f}: column {plan.columns[b.name][0]!r} has type {b.type}, but "
                                 f"{files[0]} has {a.type}; export every file of the dump with one type")
    check_posted_at_text(spark, files, plans, cfg.storage_options)
    df = read_dump(spark, files, plans, fields, cfg.storage_options)
    image = F.col("image") if payload == "image" else F.lit(None).cast("binary")
    uri = F.col("uri") if payload == "uri" else F.lit(None).cast("string")
    std = df.select(
        F.col("image_id"),
        F.coalesce(F.col("campaign_id"), F.lit(cfg.default_campaign)).alias("campaign_id"),
        F.col("posted_at"),
        F.coalesce(F.col("platform"), F.lit(cfg.default_platform).cast("string")).alias("platform"),
        F.col("caption"),
        (uri if payload == "uri" else F.col("_file")).alias("source"),
        F.col("_file").alias("input_file"),  # the dump file: a rescore tells an image whose dump is gone
        image.alias("image"),
        uri.alias("uri"),
        *[F.col(c) for c in cfg.extra_columns],
    )
    return std.withColumn("image_id", fallback_image_id())


def _pa_castable(source, target) -> bool:
    import pyarrow as pa

    try:
        pa.array([], source).cast(target)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def fallback_image_id():
    """image_id, else sha256 of the bytes, else of the URI, else of the row's metadata (null payload)."""
    from pyspark.sql import functions as F

    meta = F.concat_ws("|", F.lit("null-payload"), F.col("source"), F.col("campaign_id"),
                       F.col("posted_at").cast("string"), F.col("caption"))
    return F.coalesce(F.col("image_id"), F.sha2(F.col("image"), 256), F.sha2(F.col("uri"), 256), F.sha2(meta, 256))


def _glob_root(path: str) -> str:
    """The longest folder prefix without glob characters."""
    m = _GLOB.search(path)
    head = path[: m.start()] if m else path
    return head if not m else head.rsplit("/", 1)[0]


FOLDER_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES + VIDEO_SUFFIXES
"""What image folders are read by: every photo suffix fer_core decodes and every video post suffix."""


def folder_glob(cfg: InputConfig) -> str:
    """The file-name pattern for image folders: input.glob_filter, or every photo and video format fer_core
    scores, any case."""
    return cfg.glob_filter or image_glob(FOLDER_SUFFIXES)


def _report_left_out(all_files: list[str], kept: list[str], cfg: InputConfig, out: TextIO | None) -> None:
    left_out = sorted(set(all_files) - set(kept))
    if left_out and out is not None:
        names = ", ".join(f.rsplit("/", 1)[-1] for f in left_out[:5]) + (", ..." if len(left_out) > 5 else "")
        what = f"input.glob_filter {cfg.glob_filter!r}" if cfg.glob_filter else "the image-format filter"
        print(f"input: {len(left_out)} of {len(all_files)} files under {cfg.path} left out by {what}: {names}"
              " (not images? else set input.glob_filter to include them)", file=out, flush=True)


def _no_images(cfg: InputConfig, n_files: int) -> str:
    what = (f"input.glob_filter {cfg.glob_filter!r}" if cfg.glob_filter
            else "a photo or video suffix fer_core reads (" + " ".join(FOLDER_SUFFIXES) + ", any case)")
    return (f"no input: none of the {n_files} files under input.path {cfg.path!r} matches {what}; "
            "check the path, or set input.glob_filter")


def _read_folders(spark, cfg: InputConfig, out: TextIO | None = None, consumed: Collection[tuple] | None = None,
                  found: InputFiles | None = None):
    """Image folders: one row per image file; files in ``consumed`` are left out unopened (None when that
    leaves none); ``found`` gets what was read and skipped."""
    import fnmatch

    from pyspark.sql import functions as F

    root = _glob_root(cfg.path).rstrip("/")
    pattern = folder_glob(cfg)
    pats = _expand_braces(pattern)

    def matching(files: list[str]) -> list[str]:
        return [f for f in files if any(fnmatch.fnmatchcase(f.rsplit("/", 1)[-1], p) for p in pats)]

    # Listed on the driver (one listing, with modification times) and fetched inside the UDFs through the
    # URI policy, local and remote alike: a symlink in a folder that points out of it is refused there.
    listed = list_file_versions(cfg.path if is_remote(cfg.path) else local_path(cfg.path), cfg.storage_options)
    listed = keep_since(listed, cfg, out, key=lambda v: v.path)
    all_files = [v.path for v in listed]
    if not all_files:
        raise InputError(f"no input: nothing matches input.path {cfg.path!r}; check the path or --input")
    files = matching(all_files)
    _report_left_out(all_files, files, cfg, out)
    if not files:
        raise InputError(_no_images(cfg, len(all_files)))
    kept = set(files)
    to_read, skipped = _split_consumed([v for v in listed if v.path in kept], consumed)
    if found is not None:
        found.read, found.skipped = to_read, skipped
    if not to_read:
        return None
    # local files keep the file:/ URI Spark's binaryFile source gave them, so image ids stay what they were
    rows = [(v.path if is_remote(v.path) else "file:" + v.path, v.mtime_s) for v in to_read]
    df = spark.createDataFrame(rows, "path string, mtime double").repartition(
        max(1, min(len(rows), spark.sparkContext.defaultParallelism * 4)))
    df = df.withColumn("modificationTime", F.timestamp_seconds(F.col("mtime")))
    if is_remote(cfg.path):
        rel = F.regexp_replace(F.col("path"), "^" + re.escape(root) + "/+", "")
    else:
        abs_root = os.path.abspath(local_path(root))
        rel = F.regexp_replace(F.col("path"), "^(file:)?/*" + re.escape(abs_root.lstrip("/")) + "/+", "")

    if cfg.campaign_from == "partition":
        campaign = F.regexp_extract(F.col("path"), r"campaign_id=([^/]+)/", 1)
    else:
        campaign = F.regexp_extract(rel, r"^([^/]+)/", 1)
    std = df.select(
        F.sha2(F.col("path"), 256).alias("image_id"),
        F.coalesce(F.when(campaign != "", campaign), F.lit(cfg.default_campaign)).alias("campaign_id"),
        F.col("modificationTime").cast("timestamp").alias("posted_at"),
        F.lit(cfg.default_platform).cast("string").alias("platform"),
        F.lit(None).cast("string").alias("caption"),
        F.col("path").alias("source"),
        F.col("path").alias("input_file"),
        F.lit(None).cast("binary").alias("image"),
        F.col("path").alias("uri"),
    )
    if cfg.extra_columns:
        raise InputError("input.extra_columns: folders have no extra columns; remove them or use a Parquet dump")
    return std


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [p for alt in m.group(1).split(",") for p in _expand_braces(pattern[: m.start()] + alt + pattern[m.end():])]


# ---------------------------------------------------------------- dedupe


def dedupe(df):
    """One row per image_id, chosen deterministically: earliest posted_at, then campaign, source,
    caption, then the sha256 of the payload (so byte-identical duplicates collapse the same way every run)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    payload_hash = F.sha2(F.coalesce(F.col("image"), F.encode(F.col("uri"), "utf-8")), 256)
    w = Window.partitionBy("image_id").orderBy(
        F.col("posted_at").asc_nulls_last(), F.col("campaign_id").asc_nulls_last(), F.col("source").asc_nulls_last(),
        F.col("caption").asc_nulls_last(), payload_hash.asc_nulls_last(),
    )
    return df.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") == 1).drop("_rn")
