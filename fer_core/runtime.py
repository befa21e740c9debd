"""TensorFlow process settings (device, threads), applied once before any model is built.

TF only accepts these before it initialises its runtime, so call ``configure_tensorflow``
first thing in a CLI run or a Spark worker. Calling it again with the same settings is a
no-op; different settings after TF started raise ConfigError instead of being ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fer_core.errors import ConfigError

__all__ = ["RuntimeConfig", "configure_tensorflow"]

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class RuntimeConfig:
    """``runtime:`` section of the configs. Threads None = TF's default (all cores)."""

    device: Literal["auto", "cpu", "gpu"] = "auto"
    intra_threads: int | None = None
    inter_threads: int | None = None


_applied: tuple | None = None


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

    import tensorflow as tf

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
