"""The campaign recompute: the campaigns rows of the campaigns a run touched, from the images and faces tables.

The KPIs themselves are fer_core.kpis' (the one implementation, which the dashboards call too); this
module runs it in Spark, one campaign per group (``cogroup(...).applyInArrow``), so only one row per
(campaign, scoring identity) reaches the driver, and adds what only the job knows: which input files
are gone (``gone_input_files``: the images of those an upgrade can never rescore), the model's
confusion-adjusted mix, the run and the time. Between upgrades a campaign's stored row takes the run's own
rows instead (``fer_core.kpis.add_kpis``): a run reads its new files and the small campaigns table, not the
campaign's history.
"""
from __future__ import annotations

from typing import Any

from fer_core.kpis import (FACE_INPUTS, IMAGE_INPUTS, MERGE_INPUTS, add_kpis, addable_row, campaign_kpis,
                           kpi_schema)
from fer_core.labels import EMOTIONS
from fer_core.tables import campaigns_schema, faces_schema

from jobs.campaign.lake import Lake

__all__ = ["recompute_campaigns", "gone_input_files", "incomplete_campaigns"]


def incomplete_campaigns(lake: Lake, scoring_id: str) -> set[str]:
    """Campaigns whose row for ``scoring_id`` covers fewer images than the campaign has (an upgrade's
    backfill under way). Every run recomputes them, so their coverage, and the count of images whose dump
    has gone since, stay current even in a run that rescored none of their images."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dt = lake.table("campaigns")
    if dt is None:
        return set()
    names = pa.schema(dt.schema()).names
    if not {"scoring_id", "n_images_all", "n_images_gone"} <= set(names):
        return set()
    t = dt.to_pyarrow_table(columns=["campaign_id", "scoring_id", "n_images", "n_images_all", "n_images_gone"])
    t = t.filter(pc.equal(t["scoring_id"].cast(pa.string()), scoring_id))  # small: a row per campaign and identity
    covered = pc.add(t["n_images"], pc.fill_null(t["n_images_gone"], 0))
    return set(t.filter(pc.less(covered, t["n_images_all"]))["campaign_id"].to_pylist())


def _file_exists(path: str, options: dict[str, str] | None) -> bool:
    from jobs.campaign.inputs import filesystem

    if path.startswith("file:") and not path.startswith("file://"):
        path = path[len("file:"):]  # Spark's binaryFile spelling (file:/abs/path)
    fs, stripped = filesystem(path, options)
    return bool(fs.exists(stripped))


def gone_input_files(spark, lake: Lake, campaigns: list[str], scoring_id: str,
                     options: dict[str, str] | None) -> list[str]:
    """The input files (dump or image files) of the images in ``campaigns`` that ``scoring_id`` has not
    scored and that no longer exist: those images can never be rescored by it (a dump past its
    retention). One existence check per distinct file, on the driver, 16 at a time; nothing is opened.
    The caller skips it between upgrades (``Lake.only_identity``), when every image has the identity."""
    from concurrent.futures import ThreadPoolExecutor

    from pyspark.sql import functions as F

    if not campaigns:
        return []
    images = lake.spark_read(spark, "images", ["image_id", "scoring_id", "input_file"], campaigns)
    if images is None:
        return []
    have = images.where(F.col("scoring_id") == scoring_id).select("image_id")
    files = sorted(r.input_file for r in images.join(have, "image_id", "left_anti")
                   .where(F.col("input_file").isNotNull()).select("input_file").distinct().collect())
    if not files:
        return []
    with ThreadPoolExecutor(16) as pool:
        exists = list(pool.map(lambda f: _exists_or_unknown(f, options), files))
    return [f for f, e in zip(files, exists) if not e]


def _exists_or_unknown(path: str, options: dict[str, str] | None) -> bool:
    """Whether ``path`` exists; an error (credentials, a network blip) counts as existing: an image is
    called unrescorable only when its file is known to be gone."""
    try:
        return _file_exists(path, options)
    except Exception:
        return True


def _kpi_table(spark, lake: Lake, campaigns: list[str], scoring_id: str, gone: frozenset,
               paths: dict[str, list[str]] | None = None):
    """campaign_kpis of ``campaigns`` in Spark, one campaign per group (pyarrow, KPI schema): over all
    their rows, or over only the files in ``paths`` (table -> add-action paths: one run's own rows)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    def read(name: str, columns: tuple[str, ...]):
        if paths is not None and not paths.get(name):
            return None
        return lake.spark_read(spark, name, list(columns), campaigns,
                               paths=None if paths is None else paths[name])

    if not campaigns:
        return kpi_schema().empty_table()
    images = read("images", IMAGE_INPUTS)
    if images is None:
        return kpi_schema().empty_table()
    faces = read("faces", FACE_INPUTS)
    if faces is None:  # no face found yet in the whole lake (or in the run)
        face_schema = faces_schema()
        faces = spark.createDataFrame([], from_arrow_schema(pa.schema([face_schema.field(c) for c in FACE_INPUTS])))

    def kpis(images: Any, faces: Any) -> Any:  # applyInArrow body: one campaign's rows -> a row per identity
        return campaign_kpis(images, faces, current=scoring_id, gone_files=gone)

    rows = (images.groupBy("campaign_id").cogroup(faces.groupBy("campaign_id"))
            .applyInArrow(kpis, from_arrow_schema(kpi_schema())))
    return rows.toArrow().cast(kpi_schema())  # one row per (campaign, identity)


def _added_rows(spark, lake: Lake, addable: list[str], scoring_id: str, run_files: dict[str, list[dict]] | None,
                superseded: dict[Any, int]):
    """The rows of the ``addable`` campaigns (the job's: between upgrades, not left stale by an erasure)
    whose stored row for ``scoring_id`` can take the run's own rows (fer_core.kpis.add_kpis), and those
    campaigns. Read: the small campaigns table and the run's own files, never a campaign's history. A
    campaign without such a row (new, or a row from an older version) is left to the recompute, and so is
    every campaign when the run's files are no longer the table's (compacted before a replay)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dt = lake.table("campaigns")
    if not addable or not run_files or dt is None:
        return kpi_schema().empty_table(), set()
    if not set(MERGE_INPUTS) <= set(pa.schema(dt.schema()).names):
        return kpi_schema().empty_table(), set()
    stored = dt.to_pyarrow_table(columns=list(MERGE_INPUTS))  # small: a row per campaign and identity
    stored = stored.filter(pc.equal(stored["scoring_id"], scoring_id))
    wanted = set(addable)
    base = {r["campaign_id"]: r for r in stored.to_pylist() if r["campaign_id"] in wanted and addable_row(r)}
    added = sorted(base)
    paths = {t: [f["path"] for f in run_files.get(t, []) if f["campaign_id"] in base] for t in ("images", "faces")}
    for table, wanted_paths in paths.items():
        if wanted_paths and lake.live_paths(table, wanted_paths) != set(wanted_paths):
            return kpi_schema().empty_table(), set()
    if not paths["images"]:
        return kpi_schema().empty_table(), set()
    delta = _kpi_table(spark, lake, added, scoring_id, frozenset(), paths=paths)
    if set(delta["campaign_id"].to_pylist()) != set(added):  # every campaign of these has rows in the run
        return kpi_schema().empty_table(), set()
    return add_kpis([base[c] for c in added], delta, removed=superseded), set(added)


def recompute_campaigns(spark, lake: Lake, campaigns: list[str], scoring_id: str, run_id: str, *,
                        mix_matrix: list[list[float]] | None = None, sentiment_groups: dict[str, str] | None = None,
                        gone_files: list[str] | None = None, addable: list[str] = (),
                        run_files: dict[str, list[dict]] | None = None, superseded: dict[Any, int] | None = None,
                        report: dict[str, int] | None = None):
    """Campaign rows as a pyarrow Table with one row per (campaign, scoring identity), equal to what one run
    over all the data gives, whatever the runs were: recomputed from the images and faces tables, or, for
    the ``addable`` campaigns (between upgrades), the stored row plus the run's own rows (``run_files``: the
    manifest's files; ``superseded``: per campaign, the earlier fetch_error rows the run drops), so that a
    run's cost follows its new images, not the campaign's history.

    scoring_id: the run's (the lake's current) identity: its rows get n_images_gone, counted against
    ``gone_files`` (``gone_input_files``), and the adjusted_share_* columns
    (``fer_core.quantify.adjusted_mix`` of the mean face probabilities, grouped into sentiments by
    ``sentiment_groups``) from ``mix_matrix``, its model's confusion profile (``ModelSpec.mix_matrix``).
    report: gets ``campaigns_added`` and ``campaigns_recomputed``, how many took each way.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    schema = campaigns_schema()
    if report is not None:
        report.update(campaigns_added=0, campaigns_recomputed=0)
    if not campaigns:
        return schema.empty_table()
    added, added_campaigns = _added_rows(spark, lake, list(addable), scoring_id, run_files, superseded or {})
    rest = [c for c in campaigns if c not in added_campaigns]
    recomputed = _kpi_table(spark, lake, rest, scoring_id, frozenset(gone_files or ()))
    if report is not None:
        report.update(campaigns_added=len(added_campaigns), campaigns_recomputed=len(rest))
    pdf = pa.concat_tables([added, recomputed]).to_pandas()
    for f in schema:
        if f.name not in pdf.columns:
            pdf[f.name] = None
    mine = ((pdf["scoring_id"] == scoring_id) & (pdf["n_faces"] > 0)).to_numpy()
    if mix_matrix is not None and mine.any():
        from fer_core.quantify import adjusted_mix
        from fer_core.sentiment import SentimentConfig

        mix = adjusted_mix(pdf.loc[mine, [f"mean_p_{e}" for e in EMOTIONS]].to_numpy(np.float64),
                           np.asarray(mix_matrix, np.float64))
        for i, e in enumerate(EMOTIONS):
            pdf.loc[mine, f"adjusted_share_{e}"] = mix[:, i]
        groups = sentiment_groups or SentimentConfig().groups
        for group, column in (("positive", "adjusted_share_positive"), ("negative", "adjusted_share_negative"),
                              ("neutral", "adjusted_share_neutral_sentiment")):
            members = [i for i, e in enumerate(EMOTIONS) if groups.get(e) == group]
            pdf.loc[mine, column] = mix[:, members].sum(axis=1)
        pdf["adjusted_net_sentiment"] = pdf["adjusted_share_positive"] - pdf["adjusted_share_negative"]
    pdf["run_id"] = run_id
    pdf["updated_at"] = pd.Timestamp.now(tz="UTC")
    for c in schema.names:
        if c.startswith("adjusted_"):
            pdf[c] = pd.to_numeric(pdf[c], errors="coerce").astype("float64")
    return pa.Table.from_pandas(pdf[schema.names], schema=schema, preserve_index=False)
