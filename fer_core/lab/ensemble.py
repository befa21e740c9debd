"""A prediction ensemble served as one model: `python -m fer_core.lab.ensemble`.

Issue 25's ensemble route ("a prediction ensemble of diverse nets") built so that serving needs no change:
the members are copied into ONE Keras graph on a shared input, whose output is the weighted mean of their
probabilities. The result is a .keras file of stock layers with a sidecar, like any trained model, so the
registry, flip TTA, BatchNormalization folding, ``model_version``, the mix calibration and the upgrade path
all apply as they are. Flip TTA of the merged net is exactly the weighted mean of the members' flip TTAs,
which is what ``fer_core.lab.compare --ensemble`` measures. Grad-CAM explains it through the last
convolution of the graph (the last member's).

The served model's share ``w`` is the one fer_core.lab.compare chose on validation; this tool takes it as
given, re-measures the merged file on the same validation hold-out, and never reads the test split.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_core.errors import ConfigError
from fer_core.lab.compare import add_candidate_arguments, candidate_model, load_candidate
from fer_core.lab.config import TrainConfig, model_spec
from fer_core.models.emotion import version_of
from fer_core.models.spec import ModelSpec

__all__ = ["INPUT_FIELDS", "merge_members", "shared_input", "build_ensemble", "main"]

INPUT_FIELDS = ("input_size", "channels", "scaling", "crop_margin", "frame_size", "labels")
"""What members must agree on: one preprocessed face feeds every member, and their columns are averaged."""

TOLERANCE = 1e-4  # merged file vs the members' own predictions, float32


def shared_input(specs: Sequence[ModelSpec]) -> dict[str, Any]:
    """The members' common input fields; ConfigError naming the first field on which two members differ."""
    first = specs[0]
    for spec in specs[1:]:
        for name in INPUT_FIELDS:
            if getattr(spec, name) != getattr(first, name):
                raise ConfigError(
                    f"ensemble members see faces differently: {version_of(first)} has {name}="
                    f"{getattr(first, name)!r}, {version_of(spec)} has {getattr(spec, name)!r}; members "
                    "share one preprocessed face, so pick members trained with the same input fields")
    return {name: getattr(first, name) for name in INPUT_FIELDS}


def merge_members(members: Sequence[Any], weights: Sequence[float], name: str = "ensemble") -> Any:
    """One functional Keras model: the members' layers (renamed ``m<i>_<layer>``, weights copied) on one
    input, and ``probabilities`` = sum of ``weights[i]`` x member i's output. Weights must be > 0 and sum to 1."""
    import keras

    if len(members) < 2 or len(members) != len(weights):
        raise ConfigError(f"an ensemble needs two or more members with one weight each; got {len(members)} "
                          f"members and {len(weights)} weights")
    if min(weights) <= 0 or abs(sum(weights) - 1.0) > 1e-6:
        raise ConfigError(f"ensemble weights {list(weights)} must each be > 0 and sum to 1 (a member with weight 0 "
                          "is not part of the ensemble: leave it out)")
    shapes = {tuple(m.input_shape[1:]) for m in members}
    if len(shapes) != 1:
        raise ConfigError(f"ensemble members take different inputs {sorted(shapes)}; they must share one")
    face = keras.Input(shapes.pop(), name="face")
    shares = []
    for i, (member, weight) in enumerate(zip(members, weights)):
        prefix = f"m{i}_"
        copy = keras.models.clone_model(
            member, input_tensors=face,
            clone_function=lambda layer, p=prefix: type(layer).from_config({**layer.get_config(), "name": p + layer.name}))
        copy.set_weights(member.get_weights())
        shares.append(keras.layers.Rescaling(float(weight), name=f"{prefix}share")(copy.output))
    return keras.Model(face, keras.layers.Add(name="probabilities")(shares), name=name)


def build_ensemble(cfg: TrainConfig, source: Path, served: str, served_weight: float, out_dir: Path,
                   name: str, version: str) -> dict:
    """The served model (weight ``served_weight``) + the config's candidate from its portable checkpoint,
    merged and written to ``out_dir`` as model.keras, model.spec.json (with the mix calibration of its single
    pass and flip TTA on the validation hold-out), metrics.json and model_card.md."""
    from fer_core.lab.measure import predict_probs
    from fer_core.lab.train import split_data
    from fer_core.models.registry import create_emotion_model, spec_to_json
    from fer_core.quantify import mix_calibration
    from fer_core.weights import WeightSpec, sha256_file

    base = create_emotion_model(served)
    candidate, state = candidate_model(cfg, source)
    candidate_spec = model_spec(cfg.model)
    fields = shared_input([base.spec, candidate_spec])
    weights = (served_weight, round(1.0 - served_weight, 6))
    merged = merge_members([base.keras_model, candidate], weights, name=f"{name}-{version}".replace("@", "-"))
    members = [{"model": base.version, "weight": weights[0]},
               {"model": version_of(candidate_spec), "checkpoint": str(source),
                "epoch": state.get("epoch"), "weight": weights[1]}]
    spec = ModelSpec(name=name, version=version, weights=None, description=(
        "prediction ensemble of " + " and ".join(f"{m['model']} (weight {m['weight']})" for m in members)),
        extra={"members": members}, **fields)

    _, val, _, _ = split_data(cfg)
    probs = {mode: predict_probs(merged, val.images, spec, tta=tta) for mode, tta in (("single", False), ("flip", True))}
    expected = (weights[0] * predict_probs(base.keras_model, val.images, base.spec, tta=True)
                + weights[1] * predict_probs(candidate, val.images, candidate_spec, tta=True))
    gap = float(np.abs(probs["flip"] - expected).max())
    if gap > TOLERANCE:
        raise RuntimeError(f"the merged ensemble's flip TTA differs from its members' weighted mean by {gap:.2g} "
                           f"(> {TOLERANCE}); not written")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.keras"
    merged.save(path)
    digest = sha256_file(path)
    calibration = mix_calibration(probs["single"], probs["flip"], val.labels, source=f"{val.name} ({len(val)} faces)")
    spec = replace(spec, weights=WeightSpec(name=name, filename=path.name, sha256=digest, source=path.name),
                   mix_calibration=calibration)
    (out_dir / "model.spec.json").write_text(spec_to_json(spec))
    metrics = {"val_accuracy": round(float((probs["single"].argmax(1) == val.labels).mean()), 4),
               "val_accuracy_tta": round(float((probs["flip"].argmax(1) == val.labels).mean()), 4),
               "n_val": len(val), "max_abs_diff_vs_members_flip": float(f"{gap:.3g}"), "members": members,
               "parameters": int(merged.count_params())}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "model_card.md").write_text(_card(spec, metrics, cfg, digest))
    return metrics


def _card(spec: ModelSpec, metrics: dict, cfg: TrainConfig, digest: str) -> str:
    rows = "\n".join(f"| {m['model']} | {m['weight']} | {m.get('epoch', '(shipped)')} |" for m in metrics["members"])
    return f"""# {version_of(spec)}: a prediction ensemble served as one model

{spec.description}. Built by `python -m fer_core.lab.ensemble` (fer_core.lab.ensemble): the members'
layers in one graph on a shared input; the output is the weighted mean of their probabilities.

| member | weight | epoch |
|---|---|---|
{rows}

- The served model's weight was chosen on the validation hold-out alone (`fer_core.lab.compare --ensemble`).
- Validation (`{cfg.data.path}`, the hold-out of `{cfg.data.train_split}` the candidate was selected on,
  {metrics['n_val']} faces): single pass {metrics['val_accuracy']:.4f}, flip TTA {metrics['val_accuracy_tta']:.4f}.
  The file's flip TTA matches the members' weighted mean within {metrics['max_abs_diff_vs_members_flip']}.
- The test split was not read here: its figures are in the compare tool's output, measured once.
- Cost: every member runs on every face ({metrics['parameters']:,} parameters in all); `bench/bench_job.py`
  gives the whole-run price.
- Not for decisions about individuals (see the members' model cards).
- sha256 of model.keras: `{digest}`
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fer_core.lab.ensemble", description=__doc__.split("\n\n")[0])
    add_candidate_arguments(p)
    p.add_argument("--served", default="default", help="registered model (or file) that is the first member")
    p.add_argument("--served-weight", type=float, required=True,
                   help="the served model's share, as fer_core.lab.compare --ensemble chose it on validation")
    p.add_argument("--name", default="fer-vgg-ensemble", help="the merged model's registered name")
    p.add_argument("--version", default="1", help="the merged model's version")
    p.add_argument("--out", required=True, help="output directory (model.keras, model.spec.json, metrics, card)")
    args = p.parse_args(argv)
    cfg, source = load_candidate(args)
    metrics = build_ensemble(cfg, source, args.served, args.served_weight, Path(args.out), args.name, args.version)
    print(json.dumps({k: v for k, v in metrics.items() if k != "members"}, indent=2), flush=True)
    print(f"wrote {Path(args.out) / 'model.keras'} (serve it with --model {Path(args.out) / 'model.keras'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
