"""Read the configured input into ONE standard DataFrame, checking the schema up front.

Output columns: image_id, campaign_id, posted_at, platform, caption, source, image (binary or null),
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

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, TextIO

from fer_core.decode import IMAGE_SUFFIXES, image_glob
from fer_core.errors import FerCoreError
from fer_core.storage import fsspec_options

from jobs.campaign.config import InputConfig

__all__ = ["InputError", "read_input", "dedupe", "read_parquet_files", "list_files", "STANDARD"]

STANDARD = ("image_id", "campaign_id", "posted_at", "platform", "caption", "source", "image", "uri")
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
    fs, stripped = filesystem(path, options)
    try:
        roots = sorted(fs.glob(stripped)) if _GLOB.search(stripped) else ([stripped] if fs.exists(stripped) else [])
    except Exception as e:  # fsspec backends raise many types (permissions, credentials, endpoint)
        raise InputError(f"input path {path}: cannot list it ({type(e).__name__}: {e}); check the path and credentials") from e
    files: list[str] = []
    for root in roots:
        found = fs.find(root) if fs.isdir(root) else [root]
        for f in found:
            name = f.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith((".", "_")) or any(part.startswith((".", "_")) for part in f.split("/")[-3:-1]):
                continue
            if suffixes and not name.lower().endswith(suffixes):
                continue
            files.append(_unstrip(fs, f, path))
    return sorted(set(files))


# ---------------------------------------------------------------- Parquet footers (driver, metadata only)


def _footer_schema(path: str, options: dict[str, str] | None):
    import pyarrow.parquet as pq

    fs, stripped = filesystem(path, options)
    try:
        with fs.open(stripped, "rb") as f:
            return pq.read_schema(f)
    except Exception as e:
        raise InputError(
            f"unreadable Parquet file {path}: {type(e).__name__}: {e}; remove or re-export it "
            f"(the job reads no input until every file of the dump is readable)"
        ) from None


def check_parquet_files(files: list[str], options: dict[str, str] | None, required: list[str]):
    """Read every footer (in threads); return the first file's Arrow schema. Raises InputError naming
    the unreadable file, or the file lacking a required column."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        schemas = list(pool.map(lambda f: _footer_schema(f, options), files))
    for f, s in zip(files, schemas):
        missing = [c for c in required if c not in s.names]
        if missing:
            raise InputError(
                f"Parquet file {f} has no column {missing[0]!r} (it has {s.names}); "
                f"map the right column in input.columns / input.extra_columns"
            )
    return schemas[0]


# ---------------------------------------------------------------- executor-side Parquet reader


def read_parquet_files(
    spark,
    files: list[str],
    schema,
    storage_options: dict[str, str] | None = None,
    *,
    constants: list[dict[str, Any]] | None = None,
    batch_rows: int = 1024,
):
    """A DataFrame of the rows of ``files`` (local or any fsspec URI), read on the executors.

    schema: Spark StructType of the columns to read (they must exist in every file);
    constants: per file, extra column values (e.g. Delta partition values), added to every row;
    a ``_file`` column holds each row's file. One Spark task per file at most; a file is read in
    row batches, so memory stays bounded whatever the file size.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    columns = [f.name for f in schema.fields if not constants or f.name not in constants[0]]
    out_schema = StructType(list(schema.fields) + [StructField("_file", StringType())])
    rows = [(f, json.dumps(c)) for f, c in zip(files, constants or [{}] * len(files))]
    n = max(1, min(len(rows), spark.sparkContext.defaultParallelism * 4))
    listing = spark.createDataFrame(rows or [("", "{}")], "file string, constants string", verifySchema=False)
    if not rows:
        listing = listing.limit(0)
    listing = listing.repartition(n)
    names = [f.name for f in out_schema.fields]
    opts = dict(storage_options or {})

    def read(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd
        import pyarrow.parquet as pq

        for batch in batches:
            for path, consts in zip(batch["file"], batch["constants"]):
                fs, stripped = filesystem(path, opts)
                values = json.loads(consts)
                with fs.open(stripped, "rb") as fh:
                    pf = pq.ParquetFile(fh)
                    for rb in pf.iter_batches(batch_size=batch_rows, columns=columns):
                        pdf = rb.to_pandas()
                        for k, v in values.items():
                            pdf[k] = v
                        pdf["_file"] = path
                        yield pdf[names]
                    if pf.metadata.num_rows == 0:
                        yield pd.DataFrame({c: [] for c in names})

    return listing.mapInPandas(read, out_schema)


# ---------------------------------------------------------------- the standard input DataFrame


def _spark_type_ok(dtype, allowed: tuple[str, ...]) -> bool:
    return dtype.typeName() in allowed


def read_input(spark, cfg: InputConfig, out: TextIO | None = None):
    """The standard input DataFrame (see module doc). Raises InputError before any image is read.

    out: where to say which files of an image folder the glob filter left out (none are dropped silently).
    """
    if cfg.format == "parquet":
        return _read_parquet(spark, cfg)
    return _read_folders(spark, cfg, out)


def _payload_column(cfg: InputConfig, names: list[str], where: str) -> str:
    cols = cfg.columns
    if cfg.payload == "image" or (cfg.payload == "auto" and cols.image in names):
        if cols.image not in names:
            raise InputError(f"{where}: no image column {cols.image!r} (input.columns.image); columns are {names}")
        return "image"
    if cols.uri not in names:
        raise InputError(
            f"{where}: neither an image column {cols.image!r} nor a uri column {cols.uri!r} "
            f"(input.columns.image / input.columns.uri); columns are {names}"
        )
    return "uri"


def _read_parquet(spark, cfg: InputConfig):
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    files = list_files(cfg.path, cfg.storage_options, suffixes=(".parquet", ".parq", ".pq"))
    if not files:
        raise InputError(f"no input: no Parquet file matches input.path {cfg.path!r}; check the path or --input")
    cols = cfg.columns
    first = _footer_schema(files[0], cfg.storage_options)
    payload = _payload_column(cfg, first.names, files[0])
    required = [cols.campaign_id, getattr(cols, payload), *cfg.extra_columns]
    arrow_schema = check_parquet_files(files, cfg.storage_options, required)

    wanted = {cols.image_id, cols.campaign_id, cols.posted_at, cols.platform, cols.caption, getattr(cols, payload),
              *cfg.extra_columns}
    present = [n for n in arrow_schema.names if n in wanted]
    if is_remote(files[0]):
        import pyarrow as pa

        sub = pa.schema([arrow_schema.field(n) for n in present])
        df = read_parquet_files(spark, files, from_arrow_schema(sub), cfg.storage_options)
        source = F.col("_file")
    else:
        df = spark.read.parquet(*[local_path(f) for f in files]).select(*present)
        source = F.input_file_name()
    return _standardise(df, cfg, payload, source, files[0])


def _check_type(df, column: str, allowed: tuple[str, ...], our: str, where: str) -> None:
    dtype = df.schema[column].dataType
    if not _spark_type_ok(dtype, allowed):
        raise InputError(
            f"{where}: column {column!r} (input.columns.{our}) has type {dtype.simpleString()}, "
            f"expected one of {list(allowed)}"
        )


def _standardise(df, cfg: InputConfig, payload: str, source, where: str):
    from pyspark.sql import functions as F

    cols = cfg.columns
    names = df.columns
    str_like = ("string", "integer", "long", "short")
    _check_type(df, cols.campaign_id, str_like, "campaign_id", where)
    if payload == "image":
        _check_type(df, cols.image, ("binary",), "image", where)
    else:
        _check_type(df, cols.uri, ("string",), "uri", where)
    for our, allowed in (("image_id", str_like), ("posted_at", ("timestamp", "timestamp_ntz", "date")),
                         ("platform", ("string",)), ("caption", ("string",))):
        if getattr(cols, our) in names:
            _check_type(df, getattr(cols, our), allowed, our, where)
        elif getattr(cols, our) != our:  # renamed in the config, so it was expected
            raise InputError(f"{where}: no column {getattr(cols, our)!r} (input.columns.{our}); columns are {names}")

    def opt(name: str, dtype: str):
        return F.col(name).cast(dtype) if name in names else F.lit(None).cast(dtype)

    image = F.col(cols.image) if payload == "image" else F.lit(None).cast("binary")
    uri = F.col(cols.uri) if payload == "uri" else F.lit(None).cast("string")
    source_col = (uri if payload == "uri" else source).cast("string")
    std = df.select(
        opt(cols.image_id, "string").alias("image_id"),
        F.coalesce(F.col(cols.campaign_id).cast("string"), F.lit(cfg.default_campaign)).alias("campaign_id"),
        opt(cols.posted_at, "timestamp").alias("posted_at"),
        F.coalesce(opt(cols.platform, "string"), F.lit(cfg.default_platform).cast("string")).alias("platform"),
        opt(cols.caption, "string").alias("caption"),
        source_col.alias("source"),
        image.alias("image"),
        uri.alias("uri"),
        *[F.col(c) for c in cfg.extra_columns],
    )
    return std.withColumn("image_id", fallback_image_id())


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


def folder_glob(cfg: InputConfig) -> str:
    """The file-name pattern for image folders: input.glob_filter, or every format fer_core decodes, any case."""
    return cfg.glob_filter or image_glob()


def _report_left_out(all_files: list[str], kept: list[str], cfg: InputConfig, out: TextIO | None) -> None:
    left_out = sorted(set(all_files) - set(kept))
    if left_out and out is not None:
        names = ", ".join(f.rsplit("/", 1)[-1] for f in left_out[:5]) + (", ..." if len(left_out) > 5 else "")
        what = f"input.glob_filter {cfg.glob_filter!r}" if cfg.glob_filter else "the image-format filter"
        print(f"input: {len(left_out)} of {len(all_files)} files under {cfg.path} left out by {what}: {names}"
              " (not images? else set input.glob_filter to include them)", file=out, flush=True)


def _no_images(cfg: InputConfig, n_files: int) -> str:
    what = (f"input.glob_filter {cfg.glob_filter!r}" if cfg.glob_filter
            else "an image suffix fer_core reads (" + " ".join(IMAGE_SUFFIXES) + ", any case)")
    return (f"no input: none of the {n_files} files under input.path {cfg.path!r} matches {what}; "
            "check the path, or set input.glob_filter")


def _read_folders(spark, cfg: InputConfig, out: TextIO | None = None):
    import fnmatch

    from pyspark.sql import functions as F

    root = _glob_root(cfg.path).rstrip("/")
    pattern = folder_glob(cfg)
    pats = _expand_braces(pattern)

    def matching(files: list[str]) -> list[str]:
        return [f for f in files if any(fnmatch.fnmatchcase(f.rsplit("/", 1)[-1], p) for p in pats)]

    if is_remote(cfg.path):
        # No s3a in the pyspark wheel: list on the driver, fetch each file by URI inside the UDFs.
        all_files = list_files(cfg.path, cfg.storage_options)
        files = matching(all_files)
        _report_left_out(all_files, files, cfg, out)
        if not files:
            raise InputError(_no_images(cfg, len(all_files)))
        df = spark.createDataFrame([(f,) for f in files], "path string").repartition(
            max(1, min(len(files), spark.sparkContext.defaultParallelism * 4)))
        df = df.select("path", F.lit(None).cast("timestamp").alias("modificationTime"),
                       F.lit(None).cast("binary").alias("content"))
        payload = "uri"
        rel = F.regexp_replace(F.col("path"), "^" + re.escape(root) + "/+", "")
    else:
        local = local_path(cfg.path)
        all_files = list_files(local, None)
        if not all_files:
            raise InputError(f"no input: nothing matches input.path {cfg.path!r}; check the path or --input")
        files = matching(all_files)
        _report_left_out(all_files, files, cfg, out)
        if not files:
            raise InputError(_no_images(cfg, len(all_files)))
        df = (spark.read.format("binaryFile").option("pathGlobFilter", pattern)
              .option("recursiveFileLookup", "true").load(local))
        payload = "image"
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
        (F.col("content") if payload == "image" else F.lit(None).cast("binary")).alias("image"),
        (F.col("path") if payload == "uri" else F.lit(None).cast("string")).alias("uri"),
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
