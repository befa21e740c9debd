"""The per-epoch callback of a training run: progress line, history.csv, best/last checkpoints and the
resume state (state.json and the portable checkpoint), all written atomically so a killed run resumes.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fer_core.lab import checkpoint
from fer_core.lab.averaging import WeightAverage
from fer_core.lab.measure import fixed_sample_fit
from fer_core.lab.optim import PlateauSchedule
from fer_core.models.spec import ModelSpec


def save_atomically(model, path: Path) -> None:
    """model.save to a temporary .keras file, then rename: a SIGSTOP or a crash mid-write leaves the old file."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows: where a slice of a run trained."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slices_of(state: dict, start_epoch: int) -> list[dict]:
    """The run's slices so far (one per process that trained it: a long run is resumed from its checkpoint
    slice by slice, across machines) plus the one starting now. Epochs of a run resumed from a state written
    before slices were recorded become one entry with ``started`` None: unrecorded, not invented."""
    done = [dict(s) for s in state.get("slices", [])]
    if not done and start_epoch:
        done = [{"first_epoch": 1, "last_epoch": start_epoch, "started": None, "cpu": None}]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    return done + [{"first_epoch": start_epoch + 1, "last_epoch": start_epoch, "started": now, "cpu": cpu_name(),
                    "cores": os.cpu_count()}]


class EpochLog:
    """Keras callback: one progress line per epoch with ETA, appended to history.csv, plus resume state
    (state.json, and the portable checkpoint file next to it); applies the plateau schedule when given."""

    def __new__(cls, *args, **kwargs):
        import keras

        class Impl(keras.callbacks.Callback):
            def __init__(self, out: Path, total_epochs: int, start_epoch: int,
                         average: WeightAverage | None = None, average_from: int = 0,
                         fit_sample: tuple[np.ndarray, np.ndarray, ModelSpec] | None = None,
                         plateau: PlateauSchedule | None = None, identity: dict | None = None):
                super().__init__()
                self.out, self.total, self.t0, self.start = out, total_epochs, time.time(), start_epoch
                self.average, self.average_from, self.fit_sample = average, average_from, fit_sample
                self.plateau, self.identity = plateau, identity or {}
                self.best = -1.0
                self.best_weights: list[np.ndarray] | None = None  # None: on disk (best.keras) only
                state = out / "state.json"
                saved = json.loads(state.read_text()) if state.exists() else {}
                self.best = saved.get("best_val_accuracy", -1.0)
                self.slices = slices_of(saved if start_epoch else {}, start_epoch)

            def on_train_begin(self, logs=None):
                if self.plateau is not None:  # a resumed run continues at the LR its plateau schedule reached
                    self.model.optimizer.learning_rate.assign(self.plateau.lr)

            def _saved_best_weights(self) -> list[np.ndarray]:
                """The best epoch's weights of a resumed run: from its portable file, else from best.keras."""
                portable = self.out / checkpoint.FILENAME
                if portable.exists():
                    return checkpoint.read(portable)["best"]
                import keras

                return keras.models.load_model(self.out / "best.keras", compile=False, safe_mode=True).get_weights()

            def on_epoch_end(self, epoch, logs=None):
                logs = {k: float(v) for k, v in (logs or {}).items()}
                if self.fit_sample is not None:
                    logs.update(fixed_sample_fit(self.model, *self.fit_sample))
                done = epoch + 1
                rate = (time.time() - self.t0) / max(1, done - self.start)
                eta = rate * (self.total - done)
                lr = float(np.asarray(self.model.optimizer.learning_rate))
                row = {"epoch": done, **logs, "lr": lr, "seconds": round(rate, 1)}
                hist = self.out / "history.csv"
                new = not hist.exists()
                fields = list(row)
                if not new:  # a resumed run keeps the columns its history.csv was started with
                    with open(hist, newline="") as fh:
                        fields = next(csv.reader(fh))
                with open(hist, "a", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=fields, restval="", extrasaction="ignore")
                    if new:
                        w.writeheader()
                    w.writerow(row)
                val = logs.get("val_accuracy", -1.0)
                weights = self.model.get_weights()
                if val > self.best:
                    self.best, self.best_weights = val, weights
                    save_atomically(self.model, self.out / "best.keras")
                elif self.best_weights is None:
                    self.best_weights = self._saved_best_weights()
                save_atomically(self.model, self.out / "last.keras")
                if self.average is not None and done >= self.average_from:
                    self.average.add(weights, done)
                self.slices[-1]["last_epoch"] = done
                state = {"epoch": done, "best_val_accuracy": self.best, "slices": self.slices}
                if self.plateau is not None:
                    self.model.optimizer.learning_rate.assign(self.plateau.step(val))
                    state["plateau"] = self.plateau.state()
                write_text_atomically(self.out / "state.json", json.dumps(state))
                checkpoint.write(self.out / checkpoint.FILENAME, weights,
                                 weights if self.best_weights is weights else self.best_weights, state,
                                 (self.out / "history.csv").read_text(), self.identity)
                print(
                    f"epoch {done}/{self.total}  loss {logs.get('loss', float('nan')):.4f}  "
                    f"acc {logs.get('accuracy', float('nan')):.4f}  fixed-sample acc {logs.get('fit_accuracy', float('nan')):.4f}  "
                    f"val_acc {val:.4f}  best {self.best:.4f}  lr {lr:.3g}  "
                    f"{rate:.0f}s/epoch  ETA {eta / 60:.1f} min"
                    + (f"  swa {self.average.count}" if self.average is not None and self.average.count else ""),
                    flush=True,
                )

        return Impl(*args, **kwargs)
