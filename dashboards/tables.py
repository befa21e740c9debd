"""Readers for the Delta tables the job writes (images, faces, campaigns, runs).

The dashboards read only these tables, and only the columns a chart needs, through
``DeltaTable.to_pyarrow_dataset`` so column pruning and filters reach the Parquet
scan. Everything returned is a ``pyarrow.Table``; nothing here loops over rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fer_core.tables import ADJUSTED_COLUMNS, EMOTIONS, PROB_COLUMNS, SCHEMAS, TABLE_NAMES, read_types

__all__ = ["EMOTIONS", "PROB_COLUMNS", "ADJUSTED_COLUMNS", "TABLE_NAMES", "COLUMN_TYPES", "REQUIRED", "Lake",
           "DashboardError"]

# The types the dashboards bring each column to: the table contract's (fer_core.tables), widened on
# purpose (int32 counts read as int64, float32 as float64). A column missing from an older table is
# filled with nulls of this type (except the REQUIRED ones, whose absence is an error).
COLUMN_TYPES: dict[str, dict[str, pa.DataType]] = {name: read_types(name) for name in SCHEMAS}
REQUIRED: dict[str, tuple[str, ...]] = {
    "images": ("image_id", "campaign_id", "status"),
    "faces": ("image_id", "campaign_id"),
    "runs": ("run_id",),
}


class DashboardError(Exception):
    """The tables cannot be rendered; the message says what was wrong and what to do."""


@dataclass
class Lake:
    """The folder or URI holding the job's Delta tables, one sub-folder per table."""

    uri: str
    storage_options: Mapping[str, str] | None = None
    _datasets: dict[str, ds.Dataset | None] = field(default_factory=dict, repr=False)
    _tables: dict[str, Any] = field(default_factory=dict, repr=False)

    def table_uri(self, name: str) -> str:
        return f"{self.uri.rstrip('/')}/{name}"

    def _unopenable(self, name: str, exc: Exception) -> DashboardError:
        return DashboardError(
            f"could not open the Delta table {self.table_uri(name)!r}: {exc}. Check the path and the "
            "storage options (credentials, endpoint) passed to the dashboards.")

    def delta(self, name: str) -> Any:
        """The table's DeltaTable (its log only: no data file listed or opened), or None when no Delta
        table exists there."""
        if name not in self._tables:
            from deltalake import DeltaTable  # deferred: importing deltalake forbids fork() later

            uri, opts = self.table_uri(name), dict(self.storage_options or {}) or None
            try:
                self._tables[name] = (DeltaTable(uri, storage_options=opts)
                                      if DeltaTable.is_deltatable(uri, storage_options=opts) else None)
            except Exception as exc:  # deltalake raises several unrelated types
                raise self._unopenable(name, exc) from exc
        return self._tables[name]

    def dataset(self, name: str) -> ds.Dataset | None:
        """The table as a pyarrow dataset, or None when no Delta table exists there."""
        if name not in self._datasets:
            table = self.delta(name)
            try:
                self._datasets[name] = None if table is None else table.to_pyarrow_dataset()
            except Exception as exc:  # deltalake raises several unrelated types
                raise self._unopenable(name, exc) from exc
        return self._datasets[name]

    def files_by_campaign(self, name: str) -> dict[str, list[str]] | None:
        """campaign_id partition value ('' for null) -> the table's files there, from its Delta log (no
        data file opened); empty for a missing table, None for one not partitioned by campaign_id (the
        job's are). A run's append adds files, a delete or a compaction rewrites them: the list changes
        whenever the campaign's rows may have."""
        table = self.delta(name)
        if table is None:
            return {}
        if "campaign_id" not in table.metadata().partition_columns:
            return None
        actions = pa.table(table.get_add_actions(flatten=True))
        values = actions["partition.campaign_id"].to_pylist()
        out: dict[str, list[str]] = {}
        for campaign, path in zip(values, actions["path"].to_pylist()):
            out.setdefault(campaign or "", []).append(path)
        return {c: sorted(p) for c, p in out.items()}

    def require(self, name: str) -> ds.Dataset:
        dataset = self.dataset(name)
        if dataset is None:
            raise DashboardError(
                f"no Delta table {name!r} at {self.table_uri(name)!r}. Point --tables at the folder "
                f"that holds the job's tables ({', '.join(TABLE_NAMES)}), or run "
                "jobs/score_campaign.py first."
            )
        return dataset

    def read(self, name: str, columns: Iterable[str], filter: pc.Expression | None = None,
             *, optional_table: bool = False, files: Iterable[str] | None = None) -> pa.Table:
        """Read ``columns`` of table ``name`` (filter pushed into the scan).

        Columns the table lacks are filled with typed nulls unless they are REQUIRED.
        With ``optional_table``, a missing table reads as an empty table. ``files``: read only these
        of its files (add-action paths, as :meth:`files_by_campaign` gives them).
        """
        columns = list(dict.fromkeys(columns))
        types = COLUMN_TYPES.get(name, {})
        dataset = self.dataset(name) if optional_table else self.require(name)
        if dataset is not None and files is not None:
            dataset = _only_files(dataset, files)
        if dataset is None:
            return pa.table({c: pa.array([], types.get(c, pa.string())) for c in columns})
        present = set(dataset.schema.names)
        missing_required = [c for c in REQUIRED.get(name, ()) if c in columns and c not in present]
        if missing_required:
            raise DashboardError(
                f"table {name!r} at {self.table_uri(name)!r} lacks column(s) {missing_required}; "
                "it was not written by this job version. Re-run jobs/score_campaign.py."
            )
        usable = [c for c in columns if c in present]
        try:
            try:
                table = dataset.to_table(columns=usable, filter=filter)
            except pa.ArrowNotImplementedError:  # a file delta-rs rewrote (a delete) holds string_view
                table = _scan_with_views(dataset, usable, filter)
        except pa.ArrowInvalid as exc:
            raise DashboardError(f"reading {name!r} columns {usable}: {exc}") from exc
        out = []
        for c in columns:
            if c in present:
                out.append(_normalise(table.column(c), types.get(c)))
            else:
                out.append(pa.nulls(table.num_rows, types.get(c, pa.string())))
        return pa.table(out, names=columns)


def _scan_with_views(dataset: ds.Dataset, columns: list[str], filter: pc.Expression | None) -> pa.Table:
    """``dataset.to_table(columns, filter)`` where some files hold string_view columns. delta-rs writes
    them when it rewrites a file (a delete: an erasure, a superseded fetch error), and pyarrow has no kernel
    comparing their statistics (the file's guarantee, its row groups' bounds) with a filter in the table's
    string type. Files are then pruned by partition only, and those files are read whole, cast to the
    table's types and filtered in memory; the others are scanned with the filter as before."""
    parts = []
    for f in _partition_guarantees_only(dataset).get_fragments(filter=filter if filter is not None else pc.scalar(True)):
        if any(pa.types.is_string_view(t) or pa.types.is_binary_view(t) for t in f.physical_schema.types):
            whole = f.to_table(schema=dataset.schema)
            parts.append(ds.dataset(whole).to_table(columns=columns, filter=filter))
        else:
            parts.append(f.to_table(schema=dataset.schema, columns=columns, filter=filter))
    if not parts:
        return dataset.schema.empty_table().select(columns)
    return pa.concat_tables(parts)


def _partition_guarantees_only(dataset: ds.Dataset) -> ds.Dataset:
    """The dataset with each file's guarantee (deltalake: its partition values and column statistics) cut
    to its partition values."""
    fragments = []
    for f in dataset.get_fragments():
        guarantee = pc.scalar(True)
        for column, value in ds.get_partition_keys(f.partition_expression).items():
            field = pc.field(column)
            guarantee = guarantee & (field.is_null() if value is None else
                                     field == pa.scalar(value, dataset.schema.field(column).type))
        fragments.append(dataset.format.make_fragment(f.path, dataset.filesystem, partition_expression=guarantee))
    return ds.FileSystemDataset(fragments, schema=dataset.schema, format=dataset.format,
                                filesystem=dataset.filesystem)


def _only_files(dataset: ds.Dataset, files: Iterable[str]) -> ds.Dataset:
    """The part of a Delta table's dataset made of ``files`` (paths relative to the table). deltalake's add
    paths may be percent-encoded once more than its dataset's file paths, so both spellings match; a file
    name alone would not do (Spark names one task's files alike in every partition folder)."""
    from urllib.parse import unquote

    wanted = {p.strip("/") for p in files} | {unquote(p).strip("/") for p in files}

    def listed(path: str) -> bool:
        parts = path.strip("/").split("/")
        return any("/".join(parts[i:]) in wanted for i in range(len(parts)))

    fragments = [f for f in dataset.get_fragments() if listed(f.path)]
    return ds.FileSystemDataset(fragments, schema=dataset.schema, format=dataset.format,
                                filesystem=dataset.filesystem)


def _normalise(col: pa.ChunkedArray, want: pa.DataType | None) -> pa.ChunkedArray:
    """Bring a column to the type the aggregations expect (timestamps in UTC, int64, float64, no NaN)."""
    if want is None or (col.type == want and not pa.types.is_floating(want)):
        return col
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_timestamp(want):
        if pa.types.is_timestamp(col.type):
            if col.type.tz is None:
                col = pc.assume_timezone(col, "UTC")
            return col.cast(want)
        if pa.types.is_date(col.type):
            return pc.assume_timezone(col.cast(pa.timestamp("us")), "UTC")
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return _parse_timestamps(col).cast(want)
        return pa.nulls(len(col), want)
    try:
        col = col.cast(want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return col  # keep what is there; charts treat it as opaque
    if pa.types.is_floating(want):
        # the job writes NaN for "no value" (e.g. valence of a no-face image): treat it as null
        col = pc.if_else(pc.is_nan(col), pa.scalar(None, want), col)
    return col


def _parse_timestamps(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO-8601 strings to UTC timestamps; unparseable values become null, not an error."""
    try:
        return col.cast(pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return pc.assume_timezone(pc.strptime(col, format=fmt, unit="us", error_is_null=True), "UTC")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return pa.chunked_array([pa.nulls(len(col), pa.timestamp("us", tz="UTC"))])
