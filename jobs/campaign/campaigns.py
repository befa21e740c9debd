"""The campaign recompute: the campaigns rows of the campaigns a run touched, from the images and faces tables.

The KPIs themselves are fer_core.kpis' (the one implementation, which the dashboards call too); this
module runs it in Spark, one campaign per group (``cogroup(...).applyInArrow``), so only one row per
(campaign, scoring identity) reaches the driver, and adds what only the job knows: which input files
are gone (``gone_input_files``: the images of those an upgrade can never rescore), the model's
confusion-adjusted mix, the run and the time.
"""
from __future__ import annotations

from typing import Any

from fer_core.kpis import FACE_INPUTS, IMAGE_INPUTS, campaign_kpis, kpi_schema
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


def recompute_campaigns(spark, lake: Lake, campaigns: list[str], scoring_id: str, run_id: str, *,
                        mix_matrix: list[list[float]] | None = None, sentiment_groups: dict[str, str] | None = None,
                        gone_files: list[str] | None = None):
    """Campaign rows recomputed from the whole images and faces tables, as a pyarrow Table with one row per
    (campaign, scoring identity): equal to what one run over all the data gives, whatever the runs were.

    scoring_id: the run's (the lake's current) identity: its rows get n_images_gone, counted against
    ``gone_files`` (``gone_input_files``), and the adjusted_share_* columns
    (``fer_core.quantify.adjusted_mix`` of the mean face probabilities, grouped into sentiments by
    ``sentiment_groups``) from ``mix_matrix``, its model's confusion profile (``ModelSpec.mix_matrix``).
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = campaigns_schema()
    if not campaigns:
        return schema.empty_table()
    images = lake.spark_read(spark, "images", list(IMAGE_INPUTS), campaigns)
    if images is None:
        return schema.empty_table()
    faces = lake.spark_read(spark, "faces", list(FACE_INPUTS), campaigns)
    if faces is None:  # no face found yet in the whole lake
        face_schema = faces_schema()
        faces = spark.createDataFrame([], from_arrow_schema(pa.schema([face_schema.field(c) for c in FACE_INPUTS])))
    gone = frozenset(gone_files or ())

    def kpis(images: Any, faces: Any) -> Any:  # applyInArrow body: one campaign's rows -> a row per identity
        return campaign_kpis(images, faces, current=scoring_id, gone_files=gone)

    rows = (images.groupBy("campaign_id").cogroup(faces.groupBy("campaign_id"))
            .applyInArrow(kpis, from_arrow_schema(kpi_schema())))
    pdf = rows.toArrow().cast(kpi_schema()).to_pandas()  # one row per (affected campaign, identity)
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
