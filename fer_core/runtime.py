"""TensorFlow process settings (device, threads), applied once before any model is built.

TF only accepts these before it initialises its runtime, so call ``configure_tensorflow``
first thing in a CLI run or a Spark worker. Calling it again with the same settings is a
no-op; different settings after TF started raise ConfigError instead of being ignored.

TensorFlow 2.21 writes its C++ start-up lines (oneDNN, cudart, cuInit, TFLite's XNNPACK delegate)
through absl before absl's logging is initialised, where ``TF_CPP_MIN_LOG_LEVEL`` does not reach them.
``import_tensorflow`` and ``filtered_native_logs`` apply that level to them after all.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal

from fer_core.errors import ConfigError

__all__ = ["RuntimeConfig", "configure_tensorflow", "import_tensorflow", "filtered_native_logs",
           "native_log_level", "is_native_noise"]

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class RuntimeConfig:
    """``runtime:`` section of the pipeline config (fer_core.pipeline_config). Threads None = TF's default
    (all cores), right for one process (``predict``, ``serve``); the Spark job runs one Python worker per
    core, so there None means the Spark task's cores (spark.task.cpus, 1 by default; jobs/campaign/job.py)."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    intra_threads: int | None = None
    inter_threads: int | None = None


_applied: tuple | None = None

# absl/glog lines "I0000 00:00:1796160650.850619    6597 port.cc:153] ..." and TFLite's "INFO: ..." lines
# (TFLite's WARNING/ERROR lines look like anyone's, so they are always kept)
_GLOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_TFLITE_LINE = re.compile(r"^(INFO): ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3, "INFO": 0}
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# TensorFlow probing for a GPU on a machine without one, and the CPU build notice: said at start-up
# on every CPU-only machine; configure_tensorflow raises its own error when a GPU was asked for.
_GPU_PROBE = ("Could not find cuda drivers", "failed call to cuInit", "To enable the following instructions",
              "rebuild TensorFlow with the appropriate compiler flags")


def native_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as an int (TensorFlow's meaning: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR)."""
    try:
        return max(0, int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")))
    except ValueError:
        return 0


def is_native_noise(line: str, level: int) -> bool:
    """Whether TensorFlow's C++ logging would have hidden ``line`` at TF_CPP_MIN_LOG_LEVEL ``level``.

    From level 2 (the job's default) the GPU-probe lines of a CPU-only machine go too, whatever their
    severity (the cuInit failure is logged as an error)."""
    if level <= 0:
        return False
    text = line.rstrip("\n")
    if text == _ABSL_BANNER:
        return True
    match = _GLOG_LINE.match(text) or _TFLITE_LINE.match(text)
    if match is None:
        return False
    if level >= 2 and any(p in text for p in _GPU_PROBE):
        return True
    return _SEVERITY[match.group(1)] < level


@contextmanager
def filtered_native_logs(level: int | None = None) -> Iterator[None]:
    """Hold what the process writes to file descriptor 2 while the block runs, then write back the lines
    that TF_CPP_MIN_LOG_LEVEL (or ``level``) lets through, in order. Python's own stderr output in the
    block is kept (only TensorFlow-format lines are dropped). A no-op at level 0.

    Keep the block short (an import, a model load): what it writes appears when it ends, and a crash
    inside it loses the held lines, so TF_CPP_MIN_LOG_LEVEL=0 is the way to debug one.
    """
    level = native_log_level() if level is None else level
    try:
        saved = os.dup(2) if level > 0 else None
    except OSError:  # no stderr at all: nothing to filter
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not is_native_noise(line, level))
            if kept:
                os.write(2, kept.encode("utf-8"))


def import_tensorflow() -> Any:
    """``import tensorflow`` with its start-up lines filtered by TF_CPP_MIN_LOG_LEVEL (see the module doc).

    Also lists the GPUs, which is when TensorFlow probes CUDA and logs cuInit; it does not initialise
    the runtime, so configure_tensorflow can still set devices and threads afterwards.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with filtered_native_logs():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    return tf


def configure_tensorflow(
    device: str = "auto", intra_threads: int | None = None, inter_threads: int | None = None
) -> str:
    """Pin TF to ``device`` ("auto" | "cpu" | "gpu") and set thread pools; returns the device used.

    cpu: hides all GPUs (so a GPU box can run CPU-only executors). gpu: enables memory
    growth on every GPU so several worker processes can share one; raises ConfigError
    when no GPU is visible. auto: gpu if one is visible, else cpu (and, unlike the others,
    never fails because TF was already initialised; it then keeps TF's GPU setup).
    """
    global _applied
    if device not in DEVICES:
        raise ConfigError(f"runtime.device: expected one of {list(DEVICES)}, got {device!r}")
    for key, value in (("intra_threads", intra_threads), ("inter_threads", inter_threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"runtime.{key}: expected a non-negative int or null, got {value!r}")
    settings = (device, intra_threads, inter_threads)
    if _applied is not None and _applied[0] == settings:
        return _applied[1]

    tf = import_tensorflow()

    try:
        gpus = tf.config.list_physical_devices("GPU")
        if device == "gpu" and not gpus:
            raise ConfigError(
                "runtime.device: 'gpu' requested but TensorFlow sees no GPU; install tensorflow[and-cuda] "
                "and check the driver (nvidia-smi), or use device 'cpu' / 'auto'"
            )
        used = "gpu" if gpus and device in ("auto", "gpu") else "cpu"
        if used == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        if used == "gpu":
            for gpu in gpus:
                if not tf.config.experimental.get_memory_growth(gpu):
                    try:
                        tf.config.experimental.set_memory_growth(gpu, True)
                    except RuntimeError:
                        if device == "gpu":
                            raise
                        # auto never fails: TF already started (e.g. a model was built first), keep its GPU setup
        if intra_threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(intra_threads)
        if inter_threads is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_threads)
    except RuntimeError as e:  # "... cannot be modified after initialization"
        raise ConfigError(
            f"runtime: cannot apply device={device!r}, intra_threads={intra_threads}, inter_threads={inter_threads} "
            f"because TensorFlow is already initialised ({e}); call configure_tensorflow before building any model"
        ) from None
    _applied = (settings, used)
    return used
