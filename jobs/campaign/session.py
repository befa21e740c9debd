"""Build (or reuse) the SparkSession the job runs on.

Works three ways: ``spark-submit jobs/score_campaign.py`` (the master and confs given to spark-submit win),
``python jobs/score_campaign.py`` (master from ``spark.master`` in the config, default local[*]), and a
standalone cluster (``--master spark://host:7077``). The executors' Python defaults to the driver's
interpreter (PYSPARK_PYTHON) unless set.
"""
from __future__ import annotations

import os
import sys

from jobs.campaign.config import JobConfig

__all__ = ["build_session", "session_confs"]


def session_confs(cfg: JobConfig) -> dict[str, str]:
    """Spark confs the job needs, then the config's own ``spark.conf`` (which wins)."""
    confs = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.inference.arrow_batch_size),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # Models are cached per Python worker (scoring.ModelCache): workers must be reused across tasks.
        "spark.python.worker.reuse": "true",
        # The job sets the partition count from the number of images to score (parallelism, progress).
        "spark.sql.adaptive.coalescePartitions.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
    }
    confs.update({k: str(v) for k, v in cfg.spark.conf.items()})
    return confs


def build_session(cfg: JobConfig):
    """getOrCreate a session. Import deltalake only AFTER this (the JVM is started by a fork)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if "PYSPARK_GATEWAY_PORT" in os.environ:  # launched by spark-submit: its JVM holds --master and --conf
        SparkContext._ensure_initialized()
        launched = SparkConf()
    else:  # plain `python`: the JVM starts with the builder's confs (driver memory etc.)
        launched = SparkConf(loadDefaults=False)
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    if not launched.contains("spark.master"):
        master = cfg.spark.master
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master(master)
    if not launched.contains("spark.pyspark.python"):
        builder = builder.config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
    for key, value in session_confs(cfg).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in session_confs(cfg).items():  # a reused session: apply the runtime (SQL) confs anyway
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    spark.sparkContext.setLogLevel("WARN")
    return spark
