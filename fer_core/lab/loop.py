"""The training loop: build (or load) the net, fit it in phases with the per-epoch callback, resume from the
run's own checkpoints or from a portable checkpoint, and pick the served weights (best epoch or SWA).

Resuming compares nothing but what `run_identity` names (net, seed, data split): neither the config
file's path nor data.path, so a config moved or a dataset copied elsewhere resumes the same run.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_core.config import dataclass_to_dict
from fer_core.errors import ConfigError
from fer_core.lab import checkpoint
from fer_core.lab.averaging import WeightAverage, recalibrate_batch_norm
from fer_core.lab.batches import make_dataset
from fer_core.lab.callbacks import EpochLog, save_atomically, write_text_atomically
from fer_core.lab.config import OptimConfig, TrainConfig, model_spec
from fer_core.lab.data import FaceDataset
from fer_core.lab.distill import online_teacher
from fer_core.lab.measure import FIT_SAMPLE, accuracy
from fer_core.lab.optim import PlateauSchedule, class_weights, make_loss, make_optimizer
from fer_core.labels import EMOTIONS


def build_from_config(cfg: TrainConfig):
    """Random-init (or init_from) keras model for the configured architecture."""
    import keras

    if cfg.model.init_from:
        if not Path(cfg.model.init_from).is_file():
            raise ConfigError(f"model.init_from: {cfg.model.init_from} is not a file; train that model first (a config's "
                              "header says how it was made) or point init_from at a .keras model")
        model = keras.models.load_model(cfg.model.init_from, compile=False, safe_mode=True)
        if cfg.model.resize_widths:
            from fer_core.lab.resize import resize_vgg, vgg_widths

            before = model.count_params()
            print(f"resizing {cfg.model.init_from}: widths {vgg_widths(model)} -> {list(cfg.model.resize_widths)}",
                  end="", flush=True)
            model = resize_vgg(model, cfg.model.resize_widths, seed=cfg.seed)
            print(f", {before:,} -> {model.count_params():,} parameters", flush=True)
        want = (cfg.model.input_size, cfg.model.input_size, cfg.model.channels)
        if tuple(model.input_shape[1:]) != want:
            model = _at_input_size(model, want, cfg.model.init_from)
        return model
    if cfg.model.resize_widths:
        raise ConfigError("model.resize_widths needs model.init_from (the trained vgg net to prune or widen)")
    return _random_init(cfg)


def _random_init(cfg: TrainConfig):
    from fer_core.lab.architectures import build_model

    kwargs = dict(cfg.model.options)
    kwargs.setdefault("dropout", cfg.model.dropout)
    if cfg.model.architecture == "transfer":
        kwargs["backbone_path"] = cfg.model.backbone_path
    shape = (cfg.model.input_size, cfg.model.input_size, cfg.model.channels)
    return build_model(cfg.model.architecture, shape, len(EMOTIONS), **kwargs)


def _at_input_size(trained, shape: tuple, source: str):
    """``trained``'s weights in the same net rebuilt for inputs of ``shape``: a net with a global pooling head
    (vgg, resnet) has the same weights at any size, so a 48x48 model can start a run on 40x40 crops of 48x48
    faces (model.frame_size). The net is rebuilt from the model's own config, so a resized (pruned or
    widened) model keeps its widths."""
    config = trained.get_config()
    for layer in config.get("layers", []):
        if layer.get("class_name") == "InputLayer":
            layer["config"]["batch_shape"] = [None, *shape]
    try:
        fresh = type(trained).from_config(config)
        theirs, ours = trained.get_weights(), fresh.get_weights()
        fits = len(theirs) == len(ours) and all(a.shape == b.shape for a, b in zip(theirs, ours))
    except ValueError:
        fits = False
    if not fits:
        raise ConfigError(f"model.init_from: {source} takes {_input_shape(trained)} inputs and its weights do not "
                          f"fit the same net at the configured input {shape} (a head without global pooling is "
                          "sized by its input); set model.input_size to the model's own, or drop init_from")
    fresh.set_weights(theirs)
    print(f"init_from {source}: its weights, at input {shape} instead of {_input_shape(trained)}", flush=True)
    return fresh


def _input_shape(model) -> tuple:
    """(height, width, channels) a keras model takes."""
    return tuple(model.input_shape[1:])


def backbone_of(model):
    """The nested keras.Model a 'transfer' net wraps (None for the plain architectures)."""
    import keras

    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def set_backbone_trainable(model, trainable: bool) -> bool:
    """Freeze/unfreeze a nested backbone (transfer models); returns False when there is none."""
    backbone = backbone_of(model)
    if backbone is None:
        return False
    backbone.trainable = trainable
    return True


def configure_runtime(cfg: OptimConfig, seed: int) -> bool:
    """Seeds, threads and the dtype policy (set every time, so one run's policy never leaks into the next);
    returns True when a GPU is used."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if cfg.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, cfg.threads // 2))
        except RuntimeError:
            pass  # already initialised in this process
    gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.mixed_precision.set_global_policy(training_policy(cfg.mixed_precision, gpu))
    if cfg.mixed_precision == "bfloat16" and not gpu and not cpu_has_bf16():
        print("optim.mixed_precision bfloat16: this CPU has neither AVX512_BF16 nor AMX, so bfloat16 is emulated "
              "and slower than float32; set mixed_precision: off", flush=True)
    return gpu


def training_policy(mixed_precision: str, gpu: bool) -> str:
    """The keras dtype policy an OptimConfig.mixed_precision setting trains under."""
    if mixed_precision == "bfloat16":
        return "mixed_bfloat16"
    return "mixed_float16" if gpu and mixed_precision == "auto" else "float32"


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (x86 AVX512_BF16 or AMX-BF16; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def with_policy(model, policy: str = "float32"):
    """``model`` rebuilt with layers of the dtype ``policy`` and the same weights (its variables are float32
    under any policy; only the layers' compute dtype changes). A run trained in mixed precision serves and
    reports on its float32 twin, so the shipped model computes as inference expects on any machine; a run
    resumed under another ``optim.mixed_precision`` continues in the new one."""
    config = model.get_config()
    retyped = _retyped(config, policy)
    if retyped == config:
        return model
    twin = type(model).from_config(retyped)
    twin.set_weights(model.get_weights())
    return twin


def _retyped(node, policy: str):
    """A layer config tree with every DTypePolicy replaced by ``policy``, but for the "probabilities" softmax,
    which stays float32 under any policy (architectures._head), as mixed precision needs."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy":
            return {**node, "config": {**node["config"], "name": policy}}
        if isinstance(node.get("config"), dict) and node["config"].get("name") == "probabilities":
            return node
        return {k: _retyped(v, policy) for k, v in node.items()}
    if isinstance(node, list):
        return [_retyped(v, policy) for v in node]
    return node


@dataclass
class FitResult:
    model: object
    history: list[dict]
    best_val_accuracy: float  # of the returned model
    best_epoch: int  # best single epoch by validation accuracy
    seconds: float
    selected: str = ""  # "epoch N" or "swa over epochs A-B"
    swa_val_accuracy: float | None = None
    slices: list[dict] = field(default_factory=list)  # one per process that trained the run (callbacks.slices_of)


def resume_optimizer(model, source: Path, step: int, compile_at) -> str:
    """Compile ``model`` (``compile_at(offset)``: with an optimizer whose LR schedule is read ``offset`` steps
    on) so that training continues at phase step ``step`` with the optimizer state ``source`` (last.keras)
    holds; returns what it did, for the log.

    Adam's moments are what matter: a fresh AdamW moved to the resumed step skips its bias correction, so
    its zero moments make each update about 3x the LR for the next thousand steps (v8's resumes cost
    2.5-8.5 points of training accuracy that way, won back over 2-3 epochs). last.keras holds the moments
    and the optimizer's own step count, and loading them continues the run exactly. A file without them
    (rebuilt from a portable checkpoint, which keeps weights only) gets an optimizer that counts its own
    steps from 0, so that its bias correction rebuilds the moments in its first steps, on the schedule
    offset to ``step``; the slices after it find that count and that offset in their last.keras.
    """
    compile_at(0)
    saved = _load_optimizer_variables(model, source)
    if 0 < saved < step:  # written by an optimizer that counts from a portable restore: same offset again
        compile_at(step - saved)
        saved = _load_optimizer_variables(model, source)
    if 0 < saved <= step:
        return f"optimizer state (moments, step {step}) restored from {source}"
    compile_at(step)
    return (f"{source} holds no optimizer state for step {step} (a portable checkpoint keeps weights only): "
            f"a fresh optimizer rebuilds its moments and continues the LR schedule at step {step}")


def _load_optimizer_variables(model, source: Path) -> int:
    """Load the compiled ``model``'s optimizer variables from a .keras file; the step count they hold (0: none)."""
    import warnings

    model.optimizer.build(model.trainable_variables)
    with warnings.catch_warnings():  # Keras warns when the file has no (or other) optimizer variables
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(source)  # the same model weights again, plus the optimizer's if it has them
    return int(model.optimizer.iterations)


def run_identity(cfg: TrainConfig) -> dict:
    """What a portable checkpoint must agree with to be resumed: the net, the seed and the data split."""
    return {"model": dataclass_to_dict(cfg.model), "seed": cfg.seed,
            "data": {k: getattr(cfg.data, k) for k in ("train_split", "val_split", "val_fraction", "limit")}}


def restore_portable(cfg: TrainConfig, source: Path, ckpt_dir: Path) -> int:
    """Rebuild ckpt_dir (last.keras, best.keras, state.json, history.csv) from a portable checkpoint.

    The net is built from the config and given the file's weights, so the file holds no architecture
    of its own; a file written for another net, seed or split is refused. Returns the epoch it holds.
    """
    if cfg.optim.swa_start_epoch:
        raise ConfigError("portable_checkpoint: the portable file does not carry the SWA running average "
                          "(swa.npz); resume SWA runs on the machine that holds their output_dir")
    saved = checkpoint.read(source)
    mismatched = sorted(k for k, v in run_identity(cfg).items() if saved["identity"].get(k) != v)
    if mismatched:
        raise ConfigError(f"portable_checkpoint: {source} was written by a run with other {', '.join(mismatched)} "
                          f"settings than this config; point portable_checkpoint at this run's own file, or empty it "
                          "to start afresh")
    model = build_from_config(cfg)
    shapes = [list(w.shape) for w in model.get_weights()]
    if shapes != saved["shapes"]:
        raise ConfigError(f"portable_checkpoint: {source} holds weights shaped for another net "
                          f"({len(saved['shapes'])} arrays vs {len(shapes)} here)")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model.set_weights(saved["best"])
    save_atomically(model, ckpt_dir / "best.keras")
    model.set_weights(saved["last"])
    save_atomically(model, ckpt_dir / "last.keras")
    (ckpt_dir / "history.csv").write_text(saved["history_csv"])
    (ckpt_dir / checkpoint.FILENAME).write_bytes(Path(source).read_bytes())
    write_text_atomically(ckpt_dir / "state.json", json.dumps(saved["state"]))  # last: it marks the dir resumable
    return int(saved["state"]["epoch"])


def fit(cfg: TrainConfig, train: FaceDataset, val: FaceDataset, ckpt_dir: Path,
        soft_targets: np.ndarray | None = None, portable: Path | None = None) -> FitResult:
    """Train one model with checkpoints in ckpt_dir; resumes from ckpt_dir/last.keras if present.

    soft_targets: the teacher's probabilities for ``train`` (see DistillConfig), or None.
    portable: a portable checkpoint file (fer_core.lab.checkpoint) to start from when ckpt_dir has none.
    """
    import keras

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    configure_runtime(cfg.optim, cfg.seed)
    spec = model_spec(cfg.model)
    o = cfg.optim
    state_file = ckpt_dir / "state.json"
    if portable is not None and portable.is_file() and not (ckpt_dir / "last.keras").exists():
        epoch = restore_portable(cfg, portable, ckpt_dir)
        print(f"restored {ckpt_dir} from the portable checkpoint {portable} (epoch {epoch})", flush=True)
    start_epoch = 0
    saved_state: dict = {}
    t0 = time.time()
    if (ckpt_dir / "last.keras").exists() and state_file.exists():
        saved_state = json.loads(state_file.read_text())
        start_epoch = saved_state["epoch"]
        print(f"resuming from {ckpt_dir / 'last.keras'} after epoch {start_epoch}", flush=True)
        model = with_policy(keras.models.load_model(ckpt_dir / "last.keras", compile=False, safe_mode=True),
                            keras.mixed_precision.global_policy().name)
    else:
        model = build_from_config(cfg)
    teacher_fn = online_teacher(cfg.distill, spec) if cfg.distill.teacher and cfg.distill.online else None
    # a resumed process draws new shuffles and augmentations instead of replaying those of epoch 1
    train_ds = make_dataset(train.images, train.labels, spec, o.batch_size, training=True, augment=cfg.augment,
                            seed=cfg.seed + start_epoch, soft_targets=soft_targets, soft_weight=cfg.distill.weight,
                            teacher_fn=teacher_fn)
    val_ds = make_dataset(val.images, val.labels, spec, 256, training=False)
    steps = len(train) // o.batch_size
    loss = make_loss(o, class_weights(train.labels, o.class_weighting))
    average = WeightAverage(ckpt_dir / "swa.npz") if o.swa_start_epoch else None
    plateau = PlateauSchedule.for_run(o, saved_state.get("plateau")) if o.schedule == "plateau" else None
    sample = np.random.default_rng(cfg.seed).permutation(len(train))[:FIT_SAMPLE]
    fit_sample = (train.images[sample], train.labels[sample], spec)
    callbacks = [EpochLog(ckpt_dir, o.epochs, start_epoch, average, o.swa_start_epoch, fit_sample,
                           plateau, run_identity(cfg))]
    if o.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=o.early_stopping_patience, mode="max"))

    phases: list[tuple[int, int, bool, float]] = []  # (from_epoch, to_epoch, backbone_trainable, lr_scale)
    if o.freeze_backbone_epochs and set_backbone_trainable(model, False):
        phases.append((0, o.freeze_backbone_epochs, False, 1.0))
        phases.append((o.freeze_backbone_epochs, o.epochs, True, o.fine_tune_lr_factor))
    else:
        phases.append((0, o.epochs, True, 1.0))
    for first, last, trainable, lr_scale in phases:
        if last <= start_epoch:
            continue
        set_backbone_trainable(model, trainable)

        def compile_at(offset: int, lr_scale: float = lr_scale) -> None:
            model.compile(optimizer=make_optimizer(o, steps, lr_scale, start_step=offset), loss=loss,
                          metrics=["accuracy"])

        if start_epoch > first:  # resumed mid-phase: the optimizer continues where the last slice left it
            print(resume_optimizer(model, ckpt_dir / "last.keras", (start_epoch - first) * steps, compile_at),
                  flush=True)
        else:
            compile_at(0)
        model.fit(train_ds, validation_data=val_ds, epochs=last, initial_epoch=max(first, start_epoch),
                  callbacks=callbacks, verbose=0)
        start_epoch = last
    state = json.loads(state_file.read_text())
    history = list(csv.DictReader(open(ckpt_dir / "history.csv")))
    best_epoch = max(history, key=lambda r: float(r.get("val_accuracy", -1)))["epoch"] if history else 0
    keras.mixed_precision.set_global_policy("float32")  # what follows (and the process after fit) is inference
    best = with_policy(keras.models.load_model(ckpt_dir / "best.keras", compile=False, safe_mode=True))
    result = FitResult(best, history, float(state["best_val_accuracy"]), int(best_epoch), time.time() - t0,
                       selected=f"epoch {best_epoch}", slices=state.get("slices", []))
    if average is not None and average.count:
        swa = with_policy(model)  # the last epoch is saved in last.keras; its in-memory copy takes the average
        swa.set_weights(average.weights())
        recalibrate_batch_norm(swa, train.images, spec)
        swa.save(ckpt_dir / "swa.keras")
        result.swa_val_accuracy = accuracy(swa, val, spec)
        span = f"{average.last_epoch - average.count + 1}-{average.last_epoch}"
        print(f"swa over epochs {span}: val_acc {result.swa_val_accuracy:.4f} "
              f"(best epoch {best_epoch}: {result.best_val_accuracy:.4f})", flush=True)
        if result.swa_val_accuracy > result.best_val_accuracy:
            result.model, result.best_val_accuracy, result.selected = swa, result.swa_val_accuracy, f"swa over epochs {span}"
    return result
