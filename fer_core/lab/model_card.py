"""What a training run leaves behind: model.keras, model.spec.json (sha256, mix calibration), metrics.json
and the model card, which says how the model was made and what it must not be used for.
"""
from __future__ import annotations

import json
from pathlib import Path

from fer_core.config import dataclass_to_dict
from fer_core.lab.callbacks import cpu_name
from fer_core.lab.config import TrainConfig, model_spec
from fer_core.lab.loop import FitResult
from fer_core.labels import EMOTIONS


def write_outputs(cfg: TrainConfig, result: FitResult, metrics: dict, command: str,
                  mix_calibration: dict | None = None) -> Path:
    """model.keras + model.spec.json (with sha256 and the mix calibration) + metrics.json + model_card.md."""
    from fer_core.models.registry import spec_to_json
    from fer_core.weights import WeightSpec, sha256_file

    out = Path(cfg.output_dir)
    model_path = out / "model.keras"
    result.model.save(model_path)
    digest = sha256_file(model_path)
    spec = model_spec(cfg.model, WeightSpec(name=cfg.model.name, filename=model_path.name, sha256=digest,
                                            source=str(model_path.name)), mix_calibration)
    (out / "model.spec.json").write_text(spec_to_json(spec))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "model_card.md").write_text(model_card(cfg, result, metrics, command, digest))
    return model_path


def splits_text(cfg: TrainConfig) -> str:
    """The model card's account of which rows trained, selected and tested the model (no split is hidden)."""
    d = cfg.data
    if d.val_split:
        lines = [f"- Source: `{d.path}`. Training rows: `{d.train_split}`, all of them; the `{d.val_split}` split is the "
                 "validation set for model selection (by validation accuracy)."]
    else:
        lines = [f"- Source: `{d.path}`. Training rows: `{d.train_split}`; a stratified {d.val_fraction:.0%} of them is held "
                 "out for model selection (by validation accuracy)."]
    if d.test_split and d.test_split == d.val_split:
        lines.append(f"- `{d.test_split}` is both the validation and the reported test split: it chose the served weights, "
                     "so its accuracy below is optimistic. Judge this model on data it never saw.")
    elif d.test_split:
        lines.append(f"- `{d.test_split}` is reported only; nothing was tuned on it.")
    lines.append("- Splits not named here (e.g. FER2013's PrivateTest) were not read.")
    return "\n".join(lines)


def slices_text(slices: list[dict]) -> str:
    """The card's line on how the run was split: each slice is one process, resumed from the last checkpoint."""
    if len(slices) <= 1:
        return "- Slices: one, trained without a resume."

    def one(s: dict) -> str:
        where = f"{s['started']}, {s['cpu']}, {s.get('cores')} cores" if s.get("started") else "not recorded"
        return f"{s['first_epoch']}-{s['last_epoch']} ({where})"

    return (f"- Slices: {len(slices)}, each resumed from the last checkpoint; epochs " +
            "; ".join(one(s) for s in slices) + ".")


def model_card(cfg: TrainConfig, result: FitResult, metrics: dict, command: str, digest: str) -> str:
    import tensorflow as tf

    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if not isinstance(v, (dict, list)))
    swa_line = (f" (weights averaged from epoch {cfg.optim.swa_start_epoch} on, BatchNormalization re-estimated;"
                f" validation {result.swa_val_accuracy:.4f})" if result.swa_val_accuracy is not None else "")
    init_line = (f"- Initialised from `{cfg.model.init_from}` (architecture and dropout are that file's).\n"
                 if cfg.model.init_from else "")
    if cfg.distill.teacher:
        init_line += (f"- Distilled from `{cfg.distill.teacher}`{' (flip-averaged)' if cfg.distill.tta else ''}: training target "
                      f"{1 - cfg.distill.weight:g} x label + {cfg.distill.weight:g} x the teacher's probabilities"
                      f"{' on each augmented batch' if cfg.distill.online else ''}.\n")
    m, o = cfg.model, cfg.optim
    crop_line = (f" (random crops of faces resized to {m.frame_size}x{m.frame_size} in training; the centre crop single "
                 "pass, tta 'ten_crop' the centre and corner crops and their mirrors)" if m.frame_size > m.input_size else "")
    schedule_line = (f"plateau (x{o.plateau_factor} after more than {o.plateau_patience} epochs without a better "
                     "validation accuracy)" if o.schedule == "plateau" else o.schedule)
    return f"""# Model card: {cfg.model.name} v{cfg.model.version}

Facial-expression classifier over the 7 FER2013 classes ({", ".join(EMOTIONS)}), trained with `fer_core.train`.

## Command
```
{command}
```

## Data and splits
{splits_text(cfg)}

## Training
- Architecture: `{cfg.model.architecture}` {cfg.model.options}, dropout {cfg.model.dropout}, input {cfg.model.input_size}x{cfg.model.input_size}x{cfg.model.channels}{crop_line}, scaling `{cfg.model.scaling}`.
{init_line}- Optimiser: {cfg.optim.optimizer}, lr {cfg.optim.learning_rate}, {schedule_line} schedule, warmup {cfg.optim.warmup_epochs} epochs,
  weight decay {cfg.optim.weight_decay}, label smoothing {cfg.optim.label_smoothing}, loss {cfg.optim.loss}, class weighting {cfg.optim.class_weighting}.
- Augmentation: {dataclass_to_dict(cfg.augment)}.
- Epochs: {len(result.history)} run, best epoch {result.best_epoch}, served: {result.selected}{swa_line}; wall time {result.seconds / 60:.1f} min (this invocation).
{slices_text(result.slices)}
- Hardware (this invocation): {cpu_name()}, {__import__("os").cpu_count()} CPU cores, GPU: {bool(tf.config.list_physical_devices("GPU"))}; TensorFlow {tf.__version__}.
- sha256 of model.keras: `{digest}`

## Metrics
| metric | value |
|---|---|
{rows}

## Weaknesses
- FER2013 faces are 48x48 grey, mostly frontal web images; accuracy drops on profiles, occlusion, low light
  and on crops framed differently from FER2013 (see the end-to-end gap in the README).
- `disgust` has 436 training images; its recall is the lowest of the classes.
- FER2013 labels are noisy (human agreement is about 65%); demographic balance is unknown.

## Responsible use
The model estimates a facial *expression* from pixels, not a person's internal emotional state. Use it for
aggregate trends over many faces, never to make decisions about individuals. Faces are personal data:
keep crops and tables access-controlled and delete them when the analysis is done.
"""
