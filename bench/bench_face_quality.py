"""Face-quality cut-offs from a model-accuracy curve, then the accuracy gap they buy on PublicTest.

    nice -n 10 python bench/bench_face_quality.py [--data ../shared/data/fer2013/fer2013.csv.gz]

Decision rule, fixed before the run: faces are degraded in known ways (downscaled, blurred, darkened),
each family over a range of strengths (the undegraded faces included, so a cut-off that would flag
ordinary faces shows), and the served model (the default, with its TTA) classifies
them. For each measure (face_px, sharpness, brightness) the degraded faces are sorted by the measure
into bins of equal size; walking from the worst bin up, the cut-off is the lower edge of the first bin
whose accuracy is within 5 points of the undegraded faces' accuracy. Cut-offs are chosen on the
Training rows the default model never trained on (its validation hold-out: 10%, stratified, seed 13),
never on PublicTest. PublicTest is then degraded the same way and flagged with the chosen cut-offs
once, to report accuracy on good vs flagged faces with 95% Wilson intervals.

Simulated face size: a 48 px FER crop spans the face box plus the model's crop margin, so a crop
downscaled to s px stands for a face box of s / (1 + margin) px. yaw / pitch need landmarks, which these
crops do not have: the "turned" flag is an uncalibrated heuristic (fer_core/quality.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DROP_POINTS = 5.0
SCALES = (6, 8, 10, 12, 14, 16, 20, 24, 32, 40, 48)  # 48: undegraded
SIGMAS = (0.0, 0.6, 0.9, 1.2, 1.6, 2.0, 2.5, 3.0, 4.0)  # 0: undegraded
GAINS = (1.0, 0.6, 0.4, 0.3, 0.22, 0.16, 0.12, 0.08, 0.05)  # 1: undegraded


def degrade(images: np.ndarray, family: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 48, 48) -> the same faces degraded by one family at one strength."""
    import cv2

    out = []
    if (family, level) in (("scale", 48), ("blur", 0.0), ("dark", 1.0)):
        return images.copy()  # each family's pool holds the undegraded faces too
    for img in images:
        if family == "scale":
            s = int(level)
            small = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA)
            out.append(cv2.resize(small, (48, 48), interpolation=cv2.INTER_LINEAR))
        elif family == "blur":
            out.append(cv2.GaussianBlur(img, (0, 0), float(level)))
        elif family == "dark":  # less light: scaled down, with the sensor noise a dim photo carries
            dim = img.astype(np.float32) * float(level) + rng.normal(0, 2.0, img.shape)
            out.append(np.clip(dim, 0, 255).astype(np.uint8))
        else:
            raise ValueError(family)
    return np.stack(out)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    from fer_core.metrics import wilson_interval

    return wilson_interval(k, n, z)


def build(images: np.ndarray, labels: np.ndarray, model, margin: float, rng) -> dict[str, dict[str, np.ndarray]]:
    """Per family: the measure of every degraded face and whether the model read it right."""
    from fer_core.quality import brightness, sharpness

    families = {"scale": SCALES, "blur": SIGMAS, "dark": GAINS}
    out: dict[str, dict[str, np.ndarray]] = {}
    for family, levels in families.items():
        measures, correct, level_of = [], [], []
        for level in levels:
            faces = degrade(images, family, level, rng)
            pred = model.predict(faces).argmax(axis=1)
            correct.append(pred == labels)
            level_of.append(np.full(len(labels), level, np.float64))
            if family == "scale":
                measures.append(np.full(len(labels), level / (1 + margin)))
            elif family == "blur":
                measures.append(sharpness(faces))
            else:
                measures.append(brightness(faces))
        out[family] = {"measure": np.concatenate(measures), "correct": np.concatenate(correct),
                       "level": np.concatenate(level_of)}
    return out


def choose_cutoff(measure: np.ndarray, correct: np.ndarray, clean_acc: float, n_bins: int = 12) -> tuple[float, list]:
    """The decision rule of the module doc; returns the cut-off and the bins (lo, hi, n, accuracy)."""
    order = np.argsort(measure, kind="stable")
    bins = []
    for idx in np.array_split(order, n_bins):
        bins.append((float(measure[idx].min()), float(measure[idx].max()), len(idx), float(correct[idx].mean())))
    for lo, _, _, acc in bins:  # worst first
        if acc >= clean_acc - DROP_POINTS / 100:
            return lo, bins
    return bins[-1][1], bins


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013.csv.gz"))
    ap.add_argument("--model", default="default")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"no FER2013 CSV at {args.data}; pass --data", file=sys.stderr)
        return 2
    from fer_core.lab.data import load_fer2013_csv, stratified_split
    from fer_core.models.registry import create_emotion_model
    from fer_core.quality import QualityOptions

    splits, _ = load_fer2013_csv(args.data)
    train, public = splits["Training"], splits["PublicTest"]
    _, held = stratified_split(train.labels, 0.1, 13)  # the default model's validation hold-out
    val = train.subset(held, "Training[val]")
    model = create_emotion_model(args.model, tta=True)
    margin = float(model.spec.crop_margin)
    rng = np.random.default_rng(0)
    print(f"model {model.version} (TTA), crop margin {margin:+.2f}; choosing on {len(val)} hold-out faces, "
          f"reporting on {len(public)} PublicTest faces")

    clean_val = float((model.predict(val.images).argmax(1) == val.labels).mean())
    print(f"\nundegraded hold-out accuracy {clean_val:.2%}; rule: first bin (worst first) within "
          f"{DROP_POINTS:g} points of it")
    curves = build(val.images, val.labels, model, margin, rng)
    names = {"scale": ("min_face_px", "face_px"), "blur": ("min_sharpness", "sharpness"),
             "dark": ("min_brightness", "brightness")}
    chosen: dict[str, float] = {}
    for family, (key, label) in names.items():
        cut, bins = choose_cutoff(curves[family]["measure"], curves[family]["correct"], clean_val)
        chosen[key] = round(cut, 3 if family == "blur" else 1)
        print(f"\n{family}: {label} bins (lo..hi: n, accuracy)")
        for lo, hi, n, acc in bins:
            mark = "  <- cut-off" if abs(lo - cut) < 1e-12 else ""
            print(f"  {lo:9.3f} .. {hi:9.3f}: {n:5d}, {acc:6.2%}{mark}")
        print(f"  chosen {key} = {chosen[key]}")

    opts = QualityOptions(**chosen)
    print(f"\nchosen cut-offs: {chosen} (QualityOptions defaults now: {QualityOptions()})")
    # PublicTest, once: the same degradations, flagged with the chosen cut-offs
    curves_pt = build(public.images, public.labels, model, margin, np.random.default_rng(1))
    good_k = good_n = flagged_k = flagged_n = 0
    print("\nPublicTest, flagged with the chosen cut-offs:")
    for family, (key, _) in names.items():
        c = curves_pt[family]
        bad = c["measure"] < getattr(opts, key)
        k_bad, n_bad = int(c["correct"][bad].sum()), int(bad.sum())
        k_ok, n_ok = int(c["correct"][~bad].sum()), int((~bad).sum())
        flagged_k, flagged_n = flagged_k + k_bad, flagged_n + n_bad
        good_k, good_n = good_k + k_ok, good_n + n_ok
        lo_b, hi_b = wilson(k_bad, n_bad) if n_bad else (float("nan"),) * 2
        lo_g, hi_g = wilson(k_ok, n_ok) if n_ok else (float("nan"),) * 2
        print(f"  {family:5s}: flagged {n_bad:6d} faces, accuracy {k_bad / max(n_bad, 1):6.2%} [{lo_b:.1%}, {hi_b:.1%}]"
              f"; not flagged {n_ok:6d}, {k_ok / max(n_ok, 1):6.2%} [{lo_g:.1%}, {hi_g:.1%}]")
    from fer_core.quality import brightness as _b, sharpness as _s

    clean_flags = {"small": 0.0, "blurred": float((_s(public.images) < opts.min_sharpness).mean()),
                   "dark": float((_b(public.images) < opts.min_brightness).mean())}
    print(f"  undegraded PublicTest faces a rule flags: blurred {clean_flags['blurred']:.1%}, dark {clean_flags['dark']:.1%}")
    lo_g, hi_g = wilson(good_k, good_n)
    lo_b, hi_b = wilson(flagged_k, flagged_n)
    print(f"  all: not flagged {good_n} faces {good_k / good_n:.2%} [{lo_g:.1%}, {hi_g:.1%}]"
          f" vs flagged {flagged_n} faces {flagged_k / max(flagged_n, 1):.2%} [{lo_b:.1%}, {hi_b:.1%}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
