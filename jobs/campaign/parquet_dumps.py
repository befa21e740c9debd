"""Parquet dumps as other tools write them: one plan per file, checked on the driver, applied on executors.

Producers disagree on how to store the same column: pandas writes ``timestamp[ns]`` (which Spark 4
refuses to read), Spark may write legacy INT96, polars writes ``large_string``/``binary_view``, DuckDB
and pyarrow write microseconds, a CSV export writes ISO-8601 text or epoch integers, pandas' categories
arrive as dictionaries, an all-None column as Arrow's ``null`` type, and Hive-partitioned folders carry
columns in their paths. So dumps are not read by Spark's Parquet source but by pyarrow on the executors,
and each file gets a ``FilePlan``: which of its columns (found by name, in any case) feeds which
standard column, and how its type is normalised. The driver builds the plan of EVERY file from its
footer before any image is read, so an unreadable column is refused up front with the file, the column,
its physical type and the fix; the executors rebuild the same plan from the same footer.

Output types: strings, binary, ``timestamp[us, UTC]`` (a naive time is read as UTC; a date as its UTC
midnight), and for extra columns their own type with views/large/dictionary types made plain.
This module is imported on executors: it never imports deltalake.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import unquote

from jobs.campaign.config import InputConfig
from jobs.campaign.inputs import InputError, file_listing, filesystem

__all__ = ["FilePlan", "plan_file", "partition_values", "read_dump", "output_fields", "check_posted_at_text",
           "TEXT_TYPES"]

TEXT_TYPES = "string, large_string, string_view or dictionary of strings"
_KINDS_OF = {
    "image_id": "id", "campaign_id": "id", "platform": "text", "caption": "text", "uri": "text",
    "image": "binary", "posted_at": "time",
}


def _pa():
    import pyarrow as pa

    return pa


# ---------------------------------------------------------------- type classes


def _plain(t):
    """A dictionary type's value type; everything else unchanged."""
    pa = _pa()
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_text(t) -> bool:
    pa = _pa()
    t = _plain(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary(t) -> bool:
    pa = _pa()
    t = _plain(t)
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t))


def _is_integer(t) -> bool:
    return _pa().types.is_integer(_plain(t))


def _is_number(t) -> bool:
    pa = _pa()
    return pa.types.is_integer(_plain(t)) or pa.types.is_floating(_plain(t))


def _is_null(t) -> bool:
    return _pa().types.is_null(t)


def normalised_type(t):
    """The type a column of type ``t`` is handed to Spark as: plain strings/binary, UTC microseconds."""
    pa = _pa()
    t = _plain(t)
    if _is_text(t):
        return pa.string()
    if _is_binary(t):
        return pa.binary()
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return pa.list_(normalised_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, normalised_type(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(normalised_type(t.key_type), normalised_type(t.item_type))
    return t


# ---------------------------------------------------------------- names and partitions


def partition_values(path: str, root: str) -> dict[str, str | None]:
    """``key=value`` folders of ``path`` below ``root`` (Hive partitioning), values URL-unescaped."""
    rel = path[len(root):] if path.startswith(root) else path
    out: dict[str, str | None] = {}
    for part in rel.strip("/").split("/")[:-1]:
        if "=" in part:
            key, value = part.split("=", 1)
            value = unquote(value)
            out[unquote(key)] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    return out


def _find(names: list[str], wanted: str, where: str) -> str | None:
    """The column called ``wanted``: exactly, else the one column equal to it ignoring case."""
    if wanted in names:
        return wanted
    hits = [n for n in names if n.lower() == wanted.lower()]
    if len(hits) > 1:
        raise InputError(f"Parquet file {where}: columns {hits} all match {wanted!r} ignoring case; "
                         "name the right one exactly in input.columns")
    return hits[0] if hits else None


# ---------------------------------------------------------------- the plan of one file


@dataclass(frozen=True)
class FilePlan:
    """How one file's columns become the standard columns: ``columns`` maps an output name to
    (column in the file or in its partition folders, conversion)."""

    columns: dict[str, tuple[str | None, str]]
    partitions: dict[str, str | None]

    def to_json(self) -> str:
        return json.dumps({"columns": self.columns, "partitions": self.partitions})

    @staticmethod
    def from_json(text: str) -> "FilePlan":
        data = json.loads(text)
        return FilePlan({k: (v[0], v[1]) for k, v in data["columns"].items()}, data["partitions"])

    def file_columns(self, names: list[str]) -> list[str]:
        """The columns to read from the file (partition-only columns are not in it)."""
        return sorted({src for src, _ in self.columns.values() if src is not None and src in names})


def _refuse(where: str, column: str, our: str, t, fix: str):
    return InputError(f"Parquet file {where}: column {column!r} (input.columns.{our}) has type {t}, {fix}")


def _time_conversion(cfg: InputConfig, where: str, column: str, t) -> str:
    pa = _pa()
    fmt = cfg.posted_at_format
    plain = _plain(t)
    if _is_null(t):
        return "null"
    if pa.types.is_timestamp(plain) or pa.types.is_date(plain):
        if fmt in ("epoch_s", "epoch_ms", "iso8601"):
            raise _refuse(where, column, "posted_at", t, f"but input.posted_at_format is {fmt}; "
                          "set it to auto to read timestamps and dates")
        return "timestamp"
    if _is_text(t):
        if fmt in ("epoch_s", "epoch_ms"):
            raise _refuse(where, column, "posted_at", t, f"but input.posted_at_format is {fmt} (integers); "
                          "set it to auto or iso8601 to read ISO-8601 text")
        return "iso8601"
    if _is_number(t):
        if fmt in ("epoch_s", "epoch_ms"):
            return fmt
        raise _refuse(where, column, "posted_at", t, "and an integer time is never guessed: set "
                      "input.posted_at_format to epoch_s or epoch_ms (seconds or milliseconds since 1970 UTC)")
    raise _refuse(where, column, "posted_at", t, "expected a timestamp, date, ISO-8601 text or epoch integers")


def plan_file(arrow_schema, path: str, root: str, cfg: InputConfig, payload: str) -> FilePlan:
    """The FilePlan of one dump file from its footer schema; InputError naming file, column, type and fix."""
    pa = _pa()
    parts = partition_values(path, root)
    names = list(arrow_schema.names)
    types = {n: arrow_schema.field(n).type for n in names}
    for key in parts:
        if _find(names, key, path) is None:  # a partition that repeats a data column: the data wins
            names.append(key)
            types[key] = pa.string()
    cols = cfg.columns
    columns: dict[str, tuple[str | None, str]] = {}
    wanted = ["image_id", "campaign_id", "posted_at", "platform", "caption", payload]
    required = {"campaign_id", payload}
    for our in wanted:
        configured = getattr(cols, our)
        src = _find(names, configured, path)
        if src is None:
            if our in required:
                raise InputError(f"Parquet file {path} has no column {configured!r} (input.columns.{our}); "
                                 f"it has {names}. Map the right column in input.columns")
            if configured != our:  # renamed in the config, so it was expected
                raise InputError(f"Parquet file {path}: no column {configured!r} (input.columns.{our}); "
                                 f"columns are {names}")
            columns[our] = (None, "null")
            continue
        t = types[src]
        kind = _KINDS_OF[our]
        if kind == "time":
            conv = _time_conversion(cfg, path, src, t)
        elif _is_null(t):
            conv = "null"
        elif kind == "binary":
            if not _is_binary(t):
                raise _refuse(path, src, our, t, "expected binary image bytes (binary, large_binary or binary_view); "
                              "a text column of paths or URLs belongs in input.columns.uri")
            conv = "binary"
        elif kind == "id":
            if not (_is_text(t) or _is_integer(t)):
                raise _refuse(path, src, our, t, f"expected text ({TEXT_TYPES}) or integers")
            conv = "string"
        else:
            if not _is_text(t):
                raise _refuse(path, src, our, t, f"expected text ({TEXT_TYPES})")
            conv = "string"
        columns[our] = (src, conv)
    for extra in cfg.extra_columns:
        src = _find(names, extra, path)
        if src is None:
            raise InputError(f"Parquet file {path} has no column {extra!r} (input.extra_columns); it has {names}")
        columns[extra] = (src, "keep")
    return FilePlan(columns, parts)


def output_fields(plan: FilePlan, arrow_schema, payload: str):
    """The Arrow fields a plan yields (standard columns, then extras with their normalised types)."""
    pa = _pa()
    types = {"image_id": pa.string(), "campaign_id": pa.string(), "posted_at": pa.timestamp("us", tz="UTC"),
             "platform": pa.string(), "caption": pa.string(), payload: pa.binary() if payload == "image" else pa.string()}
    fields = []
    for name, (src, conv) in plan.columns.items():
        if name in types:
            fields.append(pa.field(name, types[name]))
        else:
            t = arrow_schema.field(src).type if src in arrow_schema.names else pa.string()
            fields.append(pa.field(name, normalised_type(t)))
    return fields


# ---------------------------------------------------------------- applying a plan (executors)


def _to_timestamp(arr, conv: str):
    """One column -> timestamp[us, UTC]; returns (array, number of text values that did not parse)."""
    import pyarrow.compute as pc

    pa = _pa()
    target = pa.timestamp("us", tz="UTC")
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if conv == "null":
        return pa.nulls(len(arr), target), 0
    if conv == "timestamp":
        t = arr.type
        if pa.types.is_date(t):
            arr = arr.cast(pa.date32()).cast(pa.timestamp("s"))
        elif t.tz is None:
            arr = arr.cast(pa.timestamp(t.unit))
        return arr.cast(pa.timestamp("us"), safe=False).cast(target), 0
    if conv in ("epoch_s", "epoch_ms"):
        scale = 1_000_000 if conv == "epoch_s" else 1_000
        micros = pc.multiply(arr.cast(pa.float64()), scale)
        return pc.round(micros).cast(pa.int64()).cast(pa.timestamp("us", tz="UTC")), 0
    values = arr.cast(pa.string()).to_pylist()
    cache: dict[str, dt.datetime | None] = {}
    out: list[dt.datetime | None] = []
    bad = 0
    for v in values:
        if v is None or not v.strip():
            out.append(None)
            continue
        if v not in cache:
            cache[v] = parse_iso8601(v)
        out.append(cache[v])
        bad += cache[v] is None
    return pa.array(out, target), bad


def parse_iso8601(text: str) -> dt.datetime | None:
    """ISO-8601 text -> an aware UTC datetime (no offset: UTC; a date: its UTC midnight); None if it is not.

    Value by value: pandas' vectorised parser reads an offset-less value in the zone of the first value
    that had one, so a dump mixing both would shift by hours."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)


def apply_plan(table, plan: FilePlan, fields) -> Any:
    """One batch of a file (pyarrow Table) -> a Table with exactly ``fields``, per the plan."""
    pa = _pa()
    n = table.num_rows
    arrays = []
    for f in fields:
        src, conv = plan.columns[f.name]
        if src is None:
            arrays.append(pa.nulls(n, f.type))
            continue
        if src in table.column_names:
            arr = table.column(src)
        else:  # a partition-folder value, the same for every row of the file
            arr = pa.array([plan.partitions.get(src)] * n, pa.string())
        if conv in ("timestamp", "epoch_s", "epoch_ms", "iso8601") or (conv == "null" and f.name == "posted_at"):
            arrays.append(_to_timestamp(arr, conv)[0])
            continue
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if conv == "null":
            arrays.append(pa.nulls(n, f.type))
        elif pa.types.is_dictionary(arr.type):
            arrays.append(arr.dictionary_decode().cast(f.type))
        else:
            arrays.append(_cast(arr, f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _cast(arr, target):
    pa = _pa()
    if pa.types.is_timestamp(arr.type) and arr.type.tz is None and pa.types.is_timestamp(target):
        arr = arr.cast(pa.timestamp(arr.type.unit))
    return arr.cast(target, safe=False) if pa.types.is_timestamp(target) else arr.cast(target)


def open_parquet(path: str, options: dict[str, str] | None):
    """(file handle, ParquetFile); INT96 times read at microseconds (nanoseconds overflow after 2262)."""
    import pyarrow.parquet as pq

    fs, stripped = filesystem(path, options)
    fh = fs.open(stripped, "rb")
    return fh, pq.ParquetFile(fh, coerce_int96_timestamp_unit="us")


def read_dump(spark, files: list[str], plans: list[FilePlan], fields, storage_options: dict[str, str] | None,
              batch_rows: int = 1024):
    """A DataFrame of the standard columns of every file (plus ``_file``), read by pyarrow on the executors."""
    from pyspark.sql.pandas.types import from_arrow_schema

    pa = _pa()
    out_fields = list(fields) + [pa.field("_file", pa.string())]
    out_schema = pa.schema(out_fields)
    rows = [(f, p.to_json()) for f, p in zip(files, plans)]
    listing = file_listing(spark, rows, "plan")
    opts = dict(storage_options or {})

    def read(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            for path, plan_json in zip(batch.column("file").to_pylist(), batch.column("plan").to_pylist()):
                plan = FilePlan.from_json(plan_json)
                fh, pf = open_parquet(path, opts)
                with fh:
                    names = pf.schema_arrow.names
                    for rb in pf.iter_batches(batch_size=batch_rows, columns=plan.file_columns(names)):
                        table = apply_plan(pa.Table.from_batches([rb]), plan, fields)
                        table = table.append_column("_file", pa.array([path] * table.num_rows, pa.string()))
                        yield from table.cast(out_schema).to_batches()

    return listing.mapInArrow(read, from_arrow_schema(out_schema))


def check_posted_at_text(spark, files: list[str], plans: list[FilePlan], storage_options: dict[str, str] | None):
    """Refuse up front a dump whose ISO-8601 posted_at text does not parse: reads only that column."""
    text_files = [(f, p) for f, p in zip(files, plans) if p.columns["posted_at"][1] == "iso8601"]
    if not text_files:
        return
    opts = dict(storage_options or {})

    def count(batches: Iterator[Any]) -> Iterator[Any]:
        pa = _pa()
        for batch in batches:
            for path, plan_json in zip(batch.column("file").to_pylist(), batch.column("plan").to_pylist()):
                plan = FilePlan.from_json(plan_json)
                src = plan.columns["posted_at"][0]
                bad, first_row, example = 0, -1, None
                fh, pf = open_parquet(path, opts)
                with fh:
                    offset = 0
                    in_file = src in pf.schema_arrow.names
                    type_name = str(pf.schema_arrow.field(src).type) if in_file else "string (partition folder)"
                    for rb in pf.iter_batches(batch_size=8192, columns=[src] if in_file else []):
                        arr = rb.column(0) if in_file else pa.array([plan.partitions.get(src)] * rb.num_rows)
                        _, n_bad = _to_timestamp(arr, "iso8601")
                        if n_bad and example is None:
                            parsed, _ = _to_timestamp(arr, "iso8601")
                            values = arr.cast(pa.string()).to_pylist()
                            for i, (v, p) in enumerate(zip(values, parsed.to_pylist())):
                                if p is None and v is not None and v.strip():
                                    first_row, example = offset + i, v[:40]
                                    break
                        bad += n_bad
                        offset += rb.num_rows
                yield pa.RecordBatch.from_pylist([{"file": path, "bad": bad, "row": first_row, "example": example,
                                                   "type": type_name}])

    schema = "file string, bad long, row long, example string, type string"
    column_of = {f: p.columns["posted_at"][0] for f, p in text_files}
    listing = file_listing(spark, [(f, p.to_json()) for f, p in text_files], "plan")
    found = [r for r in listing.mapInArrow(count, schema)
             .where("bad > 0").orderBy("file").collect()]
    if found:
        first = found[0]
        total = sum(r["bad"] for r in found)
        raise InputError(
            f"Parquet file {first['file']}: column {column_of[first['file']]!r} (input.columns.posted_at) "
            f"has type {first['type']}, read as ISO-8601 text, and {total} value(s) in {len(found)} file(s) are not ISO-8601 (first: row {first['row']}, "
            f"{first['example']!r}); fix the dump, map another column in input.columns.posted_at, or set "
            "input.posted_at_format (epoch_s | epoch_ms for numbers). Nothing was scored"
        )
