"""The campaign recompute: the campaigns rows of the campaigns a run touched, from the images and faces tables.

The KPIs themselves are fer_core.kpis' (the one implementation, which the dashboards call too); this
module runs it in Spark, one campaign per group (``cogroup(...).applyInArrow``), so only one row per
campaign reaches the driver, and adds what only the job knows: the model's confusion-adjusted mix,
the run and the time.
"""
from __future__ import annotations

from fer_core.kpis import FACE_INPUTS, IMAGE_INPUTS, campaign_kpis, keep_current_model, kpi_schema
from fer_core.labels import EMOTIONS
from fer_core.tables import campaigns_schema, faces_schema

from jobs.campaign.lake import Lake

__all__ = ["recompute_campaigns"]


def _campaign_kpis(images, faces):
    """applyInArrow body: all images and faces rows of one campaign -> its one KPI row."""
    images, faces = keep_current_model(images, faces)
    return campaign_kpis(images, faces)


def recompute_campaigns(spark, lake: Lake, campaigns: list[str], model_version: str, run_id: str, *,
                        mix_matrix: list[list[float]] | None = None, sentiment_groups: dict[str, str] | None = None):
    """Campaign rows recomputed from the whole images and faces tables, as a pyarrow Table: equal to what
    one run over all the data gives, whatever the runs were.

    model_version: the run's model; mix_matrix is its confusion profile (``ModelSpec.mix_matrix``), so the
    adjusted_share_* columns (``fer_core.quantify.adjusted_mix`` of the mean face probabilities, grouped
    into sentiments by ``sentiment_groups``) are filled for the campaigns whose current model it is.
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
    rows = (images.groupBy("campaign_id").cogroup(faces.groupBy("campaign_id"))
            .applyInArrow(_campaign_kpis, from_arrow_schema(kpi_schema())))
    pdf = rows.toArrow().cast(kpi_schema()).to_pandas()  # one row per affected campaign
    for f in schema:
        if f.name not in pdf.columns:
            pdf[f.name] = None
    mine = ((pdf["model_version"] == model_version) & (pdf["n_faces"] > 0)).to_numpy()
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
