"""Build (or reuse) the SparkSession the job runs on.

Works three ways: ``spark-submit jobs/score_campaign.py`` (the master and confs given to spark-submit win),
``python jobs/score_campaign.py`` (master from ``spark.master`` in the config, default local[*]), and a
standalone cluster (``--master spark://host:7077``). The executors' Python defaults to the driver's
interpreter (PYSPARK_PYTHON) unless set.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from jobs.campaign.config import JobConfig

__all__ = ["build_session", "session_confs", "LOG4J_CONF", "QUIET_TF_LEVEL"]

LOG4J_CONF = Path(__file__).resolve().parents[2] / "conf" / "log4j2.properties"
"""Spark's console at WARN (read when the JVM starts: spark-submit needs it on its command line)."""
QUIET_TF_LEVEL = "2"
"""TF_CPP_MIN_LOG_LEVEL of the driver and the Python workers unless the environment or --verbose says."""


def session_confs(cfg: JobConfig) -> dict[str, str]:
    """Spark confs the job needs, then the config's own ``spark.conf`` (which wins)."""
    confs = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.spark.arrow_batch_size),
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


def build_session(cfg: JobConfig, *, verbose: bool = False):
    """getOrCreate a session. Import deltalake only AFTER this (the JVM is started by a fork).

    The console keeps the job's lines and Spark's WARN/ERROR: a JVM started here reads LOG4J_CONF, and the
    Python workers get TF_CPP_MIN_LOG_LEVEL (fer_core.runtime filters TensorFlow's start-up lines by it).
    ``verbose``: Spark at INFO and every TensorFlow line (level 0), on the driver and the workers.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    tf_level = "0" if verbose else os.environ.get("TF_CPP_MIN_LOG_LEVEL", QUIET_TF_LEVEL)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = tf_level  # the driver (dashboards' Grad-CAM loads TensorFlow)
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
    confs = session_confs(cfg)
    if verbose or not launched.contains("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL"):
        confs.setdefault("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", tf_level)
    if verbose:
        confs["spark.executorEnv.TF_CPP_MIN_LOG_LEVEL"] = "0"
    elif "PYSPARK_GATEWAY_PORT" not in os.environ and LOG4J_CONF.is_file():  # this process starts the JVM
        java_opts = confs.get("spark.driver.extraJavaOptions", launched.get("spark.driver.extraJavaOptions", ""))
        if "log4j2.configurationFile" not in java_opts:
            confs["spark.driver.extraJavaOptions"] = f"{java_opts} -Dlog4j2.configurationFile={LOG4J_CONF}".strip()
    for key, value in confs.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in session_confs(cfg).items():  # a reused session: apply the runtime (SQL) confs anyway
        if key.startswith("spark.sql."):
            spark.conf.set(key, value)
    spark.sparkContext.setLogLevel("INFO" if verbose else "WARN")
    return spark
