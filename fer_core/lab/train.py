"""Train (and cross-validate) an emotion model: `python -m fer_core.train --config conf/experiments/train_default.yaml`.

Data go through the same `preprocess(crops, spec)` as inference; augmentation runs in a
tf.data pipeline on top of it. Checkpoints are written every epoch and a run resumes from
them when started again with the same output directory. A long run spans machines through
one small committed file (`portable_checkpoint`, fer_core.lab.checkpoint): export it with
`--export-checkpoint`; a run whose output directory is empty starts from it.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from fer_core.config import dataclass_to_dict, load_yaml
from fer_core.errors import ConfigError
from fer_core.lab import checkpoint
from fer_core.lab.config import TrainConfig, model_spec
from fer_core.lab.data import FaceDataset, load_dataset, stratified_kfold, stratified_split
from fer_core.lab.distill import teacher_targets
from fer_core.lab.loop import fit
from fer_core.lab.measure import accuracy, predict_probs
from fer_core.lab.model_card import write_outputs
from fer_core.metrics import wilson_interval
from fer_core.quantify import mix_calibration


def split_data(cfg: TrainConfig) -> tuple[FaceDataset, FaceDataset, FaceDataset | None, str]:
    """(train, val, test|None, report) from the configured source; val is held out of train when not given."""
    splits, report = load_dataset(cfg.data.path, model_spec(cfg.model).frame)
    if cfg.data.train_split not in splits:
        raise ValueError(f"data.train_split: {cfg.data.train_split!r} not in {cfg.data.path} (found {sorted(splits)})")
    train = splits[cfg.data.train_split]
    if cfg.data.limit:
        keep, _ = stratified_split(train.labels, 1 - cfg.data.limit / len(train), cfg.seed)
        train = train.subset(keep[: cfg.data.limit])
    if cfg.data.val_split:
        val = splits[cfg.data.val_split]
    else:
        keep, held = stratified_split(train.labels, cfg.data.val_fraction, cfg.seed)
        train, val = train.subset(keep, f"{train.name}[train]"), train.subset(held, f"{train.name}[val]")
    test = splits.get(cfg.data.test_split) if cfg.data.test_split else None
    if len(val) == 0 or len(train) == 0:
        raise ValueError(f"{cfg.data.path}: {len(train)} training and {len(val)} validation faces; "
                         "add data or raise data.val_fraction (model selection needs a validation set)")
    return train, val, test, report.summary()


def cross_validate(cfg: TrainConfig) -> dict:
    """k-fold CV on the training split: validation accuracy per fold and mean +- std."""
    train, val, _, report = split_data(cfg)
    pool = FaceDataset(np.concatenate([train.images, val.images]), np.concatenate([train.labels, val.labels]), "cv")
    scores = []
    for f, (tr, va) in enumerate(stratified_kfold(pool.labels, cfg.cv_folds, cfg.seed)):
        print(f"fold {f + 1}/{cfg.cv_folds}: {len(tr)} train, {len(va)} val", flush=True)
        res = fit(cfg, pool.subset(tr), pool.subset(va), Path(cfg.output_dir) / f"fold{f + 1}")
        scores.append(res.best_val_accuracy)
    out = {"folds": scores, "mean": float(np.mean(scores)), "std": float(np.std(scores)), "k": cfg.cv_folds}
    Path(cfg.output_dir, "cv.json").write_text(json.dumps(out, indent=2))
    print(f"{cfg.cv_folds}-fold CV accuracy: {out['mean']:.4f} +- {out['std']:.4f}", flush=True)
    return out


def train(cfg: TrainConfig, command: str = "") -> dict:
    """One training run: fit on train, select on val, report val and test; writes the outputs."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(dataclass_to_dict(cfg), indent=2))
    train_set, val_set, test_set, report = split_data(cfg)
    print(report, flush=True)
    print(f"train {len(train_set)}  val {len(val_set)}  test {len(test_set) if test_set is not None else 0}", flush=True)
    soft = teacher_targets(cfg.distill, train_set.images) if cfg.distill.teacher and not cfg.distill.online else None
    result = fit(cfg, train_set, val_set, out / "checkpoints", soft_targets=soft,
                 portable=Path(cfg.portable_checkpoint) if cfg.portable_checkpoint else None)
    spec = model_spec(cfg.model)
    val_probs = predict_probs(result.model, val_set.images, spec)
    metrics: dict = {
        "val_accuracy": round(float((val_probs.argmax(1) == val_set.labels).mean()), 4),
        "best_epoch": result.best_epoch,
        "selected": result.selected,
        "epochs": len(result.history),
        "n_train": len(train_set),
        "n_val": len(val_set),
    }
    if result.swa_val_accuracy is not None:
        metrics["swa_val_accuracy"] = round(result.swa_val_accuracy, 4)
    metrics["val_accuracy_tta"] = round(accuracy(result.model, val_set, spec, tta=True), 4)
    if spec.frame > spec.input_size:
        metrics["val_accuracy_ten_crop"] = round(accuracy(result.model, val_set, spec, "ten_crop"), 4)
    if test_set is not None:
        test_accuracy = accuracy(result.model, test_set, spec)
        metrics[f"{cfg.data.test_split}_accuracy"] = round(test_accuracy, 4)
        low, high = wilson_interval(round(test_accuracy * len(test_set)), len(test_set))
        metrics[f"{cfg.data.test_split}_accuracy_95ci"] = f"{low:.4f}-{high:.4f}"  # Wilson: how far the figure may be noise
        metrics[f"{cfg.data.test_split}_accuracy_tta"] = round(accuracy(result.model, test_set, spec, tta=True), 4)
        if spec.frame > spec.input_size:
            metrics[f"{cfg.data.test_split}_accuracy_ten_crop"] = round(accuracy(result.model, test_set, spec, "ten_crop"), 4)
        metrics["n_test"] = len(test_set)
    try:  # the job's confusion-adjusted campaign mix (fer_core.quantify) needs this profile
        calibration = mix_calibration(val_probs, predict_probs(result.model, val_set.images, spec, tta=True),
                                      val_set.labels, source=f"{val_set.name} ({len(val_set)} faces)")
    except ValueError as e:
        calibration = None
        print(f"mix calibration skipped ({e}); campaigns scored with this model get no adjusted mix", flush=True)
    write_outputs(cfg, result, metrics, command, calibration)
    print(json.dumps(metrics, indent=2), flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fer_core.train", description=__doc__)
    p.add_argument("--config", required=True, help="YAML file matching fer_core.lab.config.TrainConfig")
    p.add_argument("--data", help="override data.path (FER2013 CSV or class-folder root)")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--epochs", type=int, help="override optim.epochs")
    p.add_argument("--cv-folds", type=int, help="override cv_folds (>=2 runs k-fold CV)")
    p.add_argument("--export-checkpoint", action="store_true",
                   help="copy the run's latest epoch (output_dir/checkpoints/portable.npz) to the config's "
                        "portable_checkpoint file, to be committed, and exit; safe while the run trains")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_yaml(args.config, TrainConfig)
    if args.data:
        cfg = replace(cfg, data=replace(cfg.data, path=args.data))
    if args.output_dir:
        cfg = replace(cfg, output_dir=args.output_dir)
    if args.epochs:
        cfg = replace(cfg, optim=replace(cfg.optim, epochs=args.epochs))
    if args.cv_folds:
        cfg = replace(cfg, cv_folds=args.cv_folds)
    command = "python -m fer_core.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.export_checkpoint:
        if not cfg.portable_checkpoint:
            raise ConfigError(f"{args.config}: portable_checkpoint is not set; name the committed file "
                              "(e.g. checkpoints/<run>.npz) in the config to export to it")
        done = checkpoint.export(Path(cfg.output_dir) / "checkpoints" / checkpoint.FILENAME, Path(cfg.portable_checkpoint))
        print(f"exported epoch {done['epoch']} (best validation {done['best_val_accuracy']:.4f}) to {done['path']}: "
              f"{done['bytes'] / 1e6:.2f} MB", flush=True)
        return 0
    if cfg.cv_folds >= 2:
        cross_validate(cfg)
    else:
        train(cfg, command)
    return 0
