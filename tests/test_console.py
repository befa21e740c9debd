"""The console a user sees: the job's own lines and Spark's WARN/ERROR, not Spark's INFO nor TensorFlow's
C++ start-up lines (conf/log4j2.properties, fer_core.runtime's filter); ``--verbose`` brings them back."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._spark import PY, REPO, fast_config, make_dump, write_yaml

GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=300)


NATIVE_WRITES = """
    import os, sys
    from fer_core.runtime import filtered_native_logs
    with filtered_native_logs():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1796160650.850619    6597 port.cc:153] oneDNN custom operations are on.\\n")
        os.write(2, b"W0000 00:00:1796160650.850619    6597 x.cc:1] a warning\\n")
        os.write(2, b"E0000 00:00:1796160655.552308    6597 cuda_platform.cc:52] failed call to cuInit: (303)\\n")
        os.write(2, b"E0000 00:00:1796160655.552308    6597 y.cc:9] a real error\\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
        print("python's own stderr line", file=sys.stderr)
    print("after the block", file=sys.stderr)
"""


@pytest.mark.parametrize("level, kept", [
    ("2", ["E0000 00:00:1796160655.552308    6597 y.cc:9] a real error", "python's own stderr line",
           "after the block"]),
    ("1", ["W0000 00:00:1796160650.850619    6597 x.cc:1] a warning",
           "E0000 00:00:1796160655.552308    6597 cuda_platform.cc:52] failed call to cuInit: (303)",
           "E0000 00:00:1796160655.552308    6597 y.cc:9] a real error", "python's own stderr line",
           "after the block"]),
])
def test_native_lines_are_filtered_by_tf_cpp_min_log_level(level, kept):
    r = run_python(NATIVE_WRITES, {"TF_CPP_MIN_LOG_LEVEL": level})
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == kept


def test_level_zero_keeps_every_line():
    r = run_python(NATIVE_WRITES, {"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert r.returncode == 0, r.stderr
    assert len(r.stderr.splitlines()) == 8 and "oneDNN custom operations" in r.stderr


def test_tensorflow_start_up_is_silent_at_the_jobs_level():
    """A real TensorFlow import and GPU probe: TF_CPP_MIN_LOG_LEVEL=2 alone does not hide these lines
    (absl prints them before its logging is set up); through fer_core.runtime nothing is left."""
    code = "from fer_core.runtime import import_tensorflow; tf = import_tensorflow(); print(tf.__version__)"
    quiet = run_python(code, {"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr
    loud = run_python(code, {"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 0 and any(GLOG.match(line) for line in loud.stderr.splitlines()), loud.stderr


def demo_submit_command(demo_dir: Path) -> list[str]:
    """The Makefile's own `make demo` spark-submit line (make -n prints it without running anything)."""
    venv = Path(PY).parent.parent
    r = subprocess.run(["make", "-n", "-s", "demo", f"VENV={venv}", f"DEMO_DIR={demo_dir}"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "spark-submit" in line and "score_campaign.py" in line]
    assert len(lines) == 1, r.stdout
    return shlex.split(lines[0])


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(900)
def test_demo_console_has_no_info_line_and_verbose_brings_them_back(tmp_path):
    demo = tmp_path / "demo"
    make_dump(demo, n_images=6, days=1)  # the demo's layout (<dir>/dump), a tiny dump
    cmd = demo_submit_command(demo)
    assert any("-Dlog4j2.configurationFile=" in a and a.endswith("conf/log4j2.properties") for a in cmd)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": PY, "PYSPARK_DRIVER_PYTHON": PY,
           "PYTHONPATH": str(REPO)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the job's own default, as on a fresh shell
    r = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True, cwd=REPO, env=env, timeout=800)
    console = (r.stdout + r.stderr).splitlines()
    assert r.returncode == 0, "\n".join(console[-60:])
    assert re.search(r"^run \S+ succeeded: 11 images scored", r.stdout, re.M), r.stdout  # 6 photos + 5 bad inputs
    assert "dashboards: " in r.stdout  # the demo renders them (the driver loads TensorFlow for Grad-CAM)
    assert [line for line in console if "INFO" in line] == []
    assert [line for line in console if GLOG.match(line) or "absl::InitializeLog" in line] == []
    # what is left besides the job's lines: at most the JVM's own start-up notice and Spark WARN/ERROR lines,
    # which the quiet console keeps on purpose (e.g. "SparkUI could not bind on port 4040" when another Spark
    # application on the machine holds that port, as the suite's own session does)
    job = re.compile(r"^(run |progress: |  |dashboards: |\d\d/\d\d/\d\d \d\d:\d\d:\d\d (WARN|ERROR) )")
    assert [line for line in console if not job.match(line)] in ([], ["WARNING: Using incubator modules: "
                                                                        "jdk.incubator.vector"]), console
    assert not [line for line in console if " ERROR " in line], console

    # --verbose: Spark's INFO lines are back (a dry run, so no model is loaded)
    v = subprocess.run(["nice", "-n", "10", *cmd, "--dry-run", "--verbose"], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=600)
    assert v.returncode == 0, v.stderr[-3000:]
    assert sum(" INFO " in line for line in v.stderr.splitlines()) > 10


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(600)
def test_plain_python_launch_reads_the_quiet_log4j_file(tmp_path):
    """`python jobs/score_campaign.py` starts the JVM itself and hands it conf/log4j2.properties."""
    info = make_dump(tmp_path / "s", n_images=2, days=1)
    conf = write_yaml(tmp_path / "c.yaml", fast_config(info["dump"], tmp_path / "lake"))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": PY, "PYSPARK_DRIVER_PYTHON": PY,
           "PYTHONPATH": str(REPO)}
    r = subprocess.run(["nice", "-n", "10", PY, str(REPO / "jobs" / "score_campaign.py"), "--config", str(conf),
                        "--dry-run"], capture_output=True, text=True, cwd=REPO, env=env, timeout=500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dry run" in r.stdout
    assert [line for line in (r.stdout + r.stderr).splitlines() if "INFO" in line] == []
    assert "Using Spark's default log4j profile" not in r.stderr
