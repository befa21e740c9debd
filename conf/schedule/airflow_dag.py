"""Example Airflow DAG: score the day's dump hourly with spark-submit (copy into your dags/ folder).

The job is idempotent (images already scored by the model are skipped; the run id makes commits
exactly-once), so Airflow retries and backfills are safe: a retried task reuses the run id
``{{ run_id }}``-derived value and finds its commits done.
"""
from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

REPO = "/opt/campaign-emotion"

with DAG(
    dag_id="score_campaign",
    schedule="5 * * * *",
    start_date=dt.datetime(2024, 6, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["campaign-emotion"],
) as dag:
    BashOperator(
        task_id="score",
        bash_command=(
            f"cd {REPO} && .venv/bin/spark-submit --master ${{SPARK_MASTER:-local[*]}} "
            "--driver-java-options -Dlog4j2.configurationFile=conf/log4j2.properties jobs/score_campaign.py "
            "--config conf/default.yaml --input 'dumps/date={{ ds }}/' --output lake "
            "--run-id 'airflow-{{ ts_nodash }}'"
        ),
        execution_timeout=dt.timedelta(hours=6),
    )
