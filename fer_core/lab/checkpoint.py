"""Portable training checkpoints: one small file that carries a long run from machine to machine.

A run's own checkpoints (``<output_dir>/checkpoints/``: last.keras, best.keras, state.json,
history.csv) live in an ignored directory that a replaced machine loses. This file holds what
resuming needs, small enough to commit once per slice: the last and the best epoch's weights in
float16 (float32 where float16 would overflow), state.json (epoch, best validation accuracy, the
plateau schedule), history.csv, and the weight shapes and config it was written for. Optimiser
moments are not kept (they would double the file): last.keras holds them for a resume on the same
machine, and a resume from this file starts an optimizer whose bias correction rebuilds them
(fer_core.lab.loop.resume_optimizer).

numpy only: exporting needs no TensorFlow, so it can run next to a training process.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

FORMAT = "fer_core.portable_checkpoint/1"
FILENAME = "portable.npz"  # the copy a run keeps next to last.keras, rewritten every epoch


def _compact(weights: list[np.ndarray]) -> list[np.ndarray]:
    """float16 copies, except arrays that float16 cannot hold (inf after the cast)."""
    out = []
    for w in weights:
        w = np.asarray(w)
        half = w.astype(np.float16) if w.dtype.kind == "f" else w
        out.append(half if np.isfinite(half).all() or not np.isfinite(w).all() else w.astype(np.float32))
    return out


def write(path: Path, last: list[np.ndarray], best: list[np.ndarray], state: dict, history_csv: str,
          identity: dict) -> Path:
    """Write the checkpoint atomically (temporary file, then rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "state": state, "history_csv": history_csv, "identity": identity,
            "shapes": [list(np.shape(w)) for w in last], "best_is_last": best is last}
    arrays = {f"last_{i}": w for i, w in enumerate(_compact(last))}
    if best is not last:
        arrays.update({f"best_{i}": w for i, w in enumerate(_compact(best))})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def read(path: Path) -> dict:
    """{"last": [...], "best": [...], "state", "history_csv", "identity", "shapes"}; weights as float32."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as f:
        if "meta" not in f.files:
            raise ValueError(f"{path}: not a portable checkpoint (no meta entry); write it with "
                             "`python -m fer_core.train --config <config> --export-checkpoint`")
        meta = json.loads(bytes(f["meta"]).decode("utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, this code reads {FORMAT!r}")
        n = len(meta["shapes"])
        last = [f[f"last_{i}"].astype(np.float32) for i in range(n)]
        best = last if meta["best_is_last"] else [f[f"best_{i}"].astype(np.float32) for i in range(n)]
    return {**meta, "last": last, "best": best}


def export(run_copy: Path, dest: Path) -> dict:
    """Copy a run's per-epoch portable file to ``dest`` (the committed path), checking it reads back."""
    run_copy, dest = Path(run_copy), Path(dest)
    if not run_copy.is_file():
        raise FileNotFoundError(f"{run_copy} does not exist: the run has not finished an epoch with this code yet "
                                "(it writes the file at the end of every epoch); train first, then export")
    data = run_copy.read_bytes()  # written by rename, so this is one whole epoch's file
    tmp = dest.with_name(f".{dest.name}.tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    meta = read(tmp)
    os.replace(tmp, dest)
    return {"path": str(dest), "bytes": len(data), "epoch": meta["state"]["epoch"],
            "best_val_accuracy": meta["state"].get("best_val_accuracy")}
