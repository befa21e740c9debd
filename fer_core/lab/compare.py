"""A trained candidate against a served model, paired on the same faces: `python -m fer_core.lab.compare`.

Issue 25's decision rules ask for each candidate's accuracy per prediction mode with McNemar's exact test
against v5 (single vs single, flip vs flip, the candidate's TTA vs v5's flip), on the validation hold-out
the candidate was selected on and once on PublicTest. The candidate is read from its committed portable
checkpoint (fer_core.lab.checkpoint: the best epoch's float16 weights), so this runs on any clone.

With ``--ensemble`` it also measures the probability average of the two (the issue's "prediction ensemble
of diverse nets"): the served model's flip TTA and the candidate's chosen mode, weighted ``w`` and
``1 - w``. The rule is fixed here, before any look: ``w`` is chosen on validation accuracy alone over
0.0, 0.1, ..., 1.0 (ties to the larger ``w``, the served model's share); PublicTest is then scored once, at
that ``w``, with McNemar's test against the served model's flip TTA. The same members at that ``w`` in
single pass (``ensemble_single``: one pass of each net per face, what `python -m fer_core.lab.ensemble`'s
model serves without TTA) are reported too, with nothing chosen on them.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from fer_core.config import load_yaml
from fer_core.lab import checkpoint
from fer_core.lab.config import TrainConfig, model_spec
from fer_core.lab.metrics import mcnemar_exact
from fer_core.metrics import wilson_interval

WEIGHTS = tuple(round(0.1 * k, 1) for k in range(11))


def candidate_model(cfg: TrainConfig, source: Path):
    """The config's net with the portable checkpoint's best weights."""
    from fer_core.lab.loop import build_from_config

    saved = checkpoint.read(source)
    model = build_from_config(cfg)
    model.set_weights(saved["best"])
    return model, saved["state"]


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> dict:
    n, k = len(labels), int((probs.argmax(1) == labels).sum())
    low, high = wilson_interval(k, n)
    return {"accuracy": round(k / n, 4), "ci95": [round(low, 4), round(high, 4)], "n": n}


def _paired(a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> dict:
    test = mcnemar_exact(a.argmax(1) == labels, b.argmax(1) == labels)
    return {"only_served_right": test["only_a"], "only_candidate_right": test["only_b"],
            "p_value": float(f"{float(test['p_value']):.3g}")}


def compare(cfg: TrainConfig, source: Path, served: str, *, candidate_tta: str, ensemble: bool) -> dict:
    from fer_core.lab.measure import predict_probs
    from fer_core.lab.train import split_data
    from fer_core.models.registry import create_emotion_model

    _, val, test, _ = split_data(cfg)
    base = create_emotion_model(served)
    model, state = candidate_model(cfg, source)
    spec = model_spec(cfg.model)
    out: dict = {"candidate": {"config": cfg.output_dir, "checkpoint": str(source), "epoch": state.get("epoch"),
                               "best_val_accuracy": state.get("best_val_accuracy")},
                 "served": base.spec.name, "candidate_tta": candidate_tta}
    sets = {"validation": val, **({cfg.data.test_split: test} if test is not None else {})}
    chosen_w = None
    for name, data in sets.items():
        probs = {"served_single": predict_probs(base.keras_model, data.images, base.spec),
                 "served_flip": predict_probs(base.keras_model, data.images, base.spec, tta=True),
                 "candidate_single": predict_probs(model, data.images, spec),
                 "candidate_flip": predict_probs(model, data.images, spec, tta=True)}
        if candidate_tta not in ("flip", "single"):
            probs[f"candidate_{candidate_tta}"] = predict_probs(model, data.images, spec, tta=candidate_tta)
        labels = data.labels
        block: dict = {mode: _accuracy(p, labels) for mode, p in probs.items()}
        chosen = probs["candidate_single" if candidate_tta == "single" else f"candidate_{candidate_tta}"]
        block["mcnemar"] = {"single_vs_single": _paired(probs["served_single"], probs["candidate_single"], labels),
                            "flip_vs_flip": _paired(probs["served_flip"], probs["candidate_flip"], labels),
                            f"{candidate_tta}_vs_served_flip": _paired(probs["served_flip"], chosen, labels)}
        if ensemble:
            curve = {w: float(((w * probs["served_flip"] + (1 - w) * chosen).argmax(1) == labels).mean())
                     for w in WEIGHTS}
            if name == "validation":  # the weight is chosen here and nowhere else
                best = max(curve.values())
                chosen_w = max(w for w, acc in curve.items() if acc == best)
                block["ensemble_curve"] = {str(w): round(a, 4) for w, a in curve.items()}
            def mix(served_probs: np.ndarray, candidate_probs: np.ndarray) -> dict:
                mixed = chosen_w * served_probs + (1 - chosen_w) * candidate_probs
                return {"served_weight": chosen_w, **_accuracy(mixed, labels),
                        "mcnemar_vs_served_flip": _paired(probs["served_flip"], mixed, labels)}

            block["ensemble"] = mix(probs["served_flip"], chosen)
            # the same members and weight, one pass each (half the flip ensemble's cost), reported, not chosen on
            block["ensemble_single"] = mix(probs["served_single"], probs["candidate_single"])
        out[name] = block
        print(f"{name}: " + ", ".join(f"{m} {block[m]['accuracy']:.4f}" for m in probs)
              + (f", ensemble (w={chosen_w}) {block['ensemble']['accuracy']:.4f}, single pass "
                 f"{block['ensemble_single']['accuracy']:.4f}" if ensemble else ""), flush=True)
    return out


def add_candidate_arguments(p: argparse.ArgumentParser) -> None:
    """--config, --checkpoint and --data: how the lab's commands name a candidate (here and fer_core.lab.ensemble)."""
    p.add_argument("--config", required=True, help="the candidate's training config (its net, split and checkpoint)")
    p.add_argument("--checkpoint", help="portable checkpoint (default: the config's portable_checkpoint)")
    p.add_argument("--data", help="override data.path")


def load_candidate(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The parsed candidate arguments -> (config, checkpoint file); exits 2 naming the file when it is missing."""
    cfg = load_yaml(args.config, TrainConfig)
    if args.data:
        cfg = replace(cfg, data=replace(cfg.data, path=args.data))
    source = Path(args.checkpoint or cfg.portable_checkpoint or "")
    if not source.is_file():
        print(f"no portable checkpoint at {source!s}: pass --checkpoint or set portable_checkpoint in the config",
              file=sys.stderr)
        raise SystemExit(2)
    return cfg, source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fer_core.lab.compare", description=__doc__.split("\n\n")[0])
    add_candidate_arguments(p)
    p.add_argument("--served", default="default", help="registered model to compare against (default: the default)")
    p.add_argument("--tta", help="the candidate's chosen mode: single, flip, ten_crop or views (default: ten_crop "
                                 "for a crop-trained net, flip for one that sees whole faces)")
    p.add_argument("--ensemble", action="store_true", help="also measure the served + candidate ensemble (module doc)")
    p.add_argument("--out", required=True, help="JSON file for the figures")
    args = p.parse_args(argv)
    cfg, source = load_candidate(args)
    spec = model_spec(cfg.model)
    tta = args.tta or ("ten_crop" if spec.frame > spec.input_size else "flip")
    result = compare(cfg, source, args.served, candidate_tta=tta, ensemble=args.ensemble)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
