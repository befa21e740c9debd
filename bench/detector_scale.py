"""What does detector.max_side trade: RetinaFace speed against the faces it finds, by face size?

RetinaFace is most of a run's time (bench/bench_inference.py), and it runs on a copy downscaled so the
long side is <= detector.max_side (default 1024). This composites one FER2013 face per 1280x960 scene
(sizes drawn evenly from three bands: 24-48, 48-96 and 96-240 px; flip, +-8 deg, colour jitter,
feathered; jobs/make_sample_dump.composite_faces), then for each max_side measures in one run: scenes/s,
recall per size band (a detection matches when IoU >= 0.3), detections that match no face, and the
emotion accuracy of the detected faces (detect -> align -> classify; alignment crops the original
pixels, so max_side only moves the boxes). Needs ../shared/data/fer2013 for the faces. Usage:

    .venv/bin/python bench/detector_scale.py [--per-band 60] [--sides 0,1280,1024,800,640,480]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fer_core  # noqa: E402,F401  (before TensorFlow: it turns oneDNN on)
from bench.e2e_gap import iou  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013" / "fer2013.csv.gz"
BANDS = ((24, 48), (48, 96), (96, 240))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(DATA))
    p.add_argument("--per-band", type=int, default=60, help="scenes (one face each) per face-size band")
    p.add_argument("--sides", default="0,1280,1024,800,640,480", help="max_side values (0: no downscaling)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if not Path(a.csv).exists():
        print(f"FER2013 CSV not found at {a.csv}; pass --csv", file=sys.stderr)
        return 2

    from fer_core.align import align_faces
    from fer_core.detectors import create_detector
    from fer_core.models import create_emotion_model
    from jobs.make_sample_dump import composite_faces, fer_face_patches

    patches = fer_face_patches(a.csv, usage="PublicTest", limit=a.per_band * len(BANDS), seed=a.seed)
    rng = np.random.default_rng(a.seed)
    scenes, truth, band_of, labels = [], [], [], []
    for i, patch in enumerate(patches):
        band = i % len(BANDS)
        img, boxes = composite_faces([patch], rng, canvas=(960, 1280), face_px=BANDS[band], rotate=8.0)
        if boxes:
            scenes.append(img)
            truth.append(boxes[0])
            band_of.append(band)
            labels.append(patch.label)
    band_of, labels = np.array(band_of), np.array(labels)
    model = create_emotion_model("default")
    print(f"{len(scenes)} scenes of 1280x960, one PublicTest face each; detector retinaface, model {model.version}")
    header = " ".join(f"{f'{lo}-{hi}px':>9}" for lo, hi in BANDS)
    print(f"{'max_side':>8} {'scenes/s':>9} {'x vs 1024':>9} {'recall':>7} {header} {'false':>6} {'emotion acc':>11}")
    results = {}
    for side in (int(s) for s in a.sides.split(",")):
        detector = create_detector("retinaface", max_side=side)
        detector.detect(scenes[:2])  # warm-up
        t0 = time.perf_counter()
        detections = detector.detect(scenes)
        seconds = time.perf_counter() - t0
        matched, false = [], 0
        for faces, box in zip(detections, truth):
            best = max(faces, key=lambda f: iou(f.box, box), default=None)
            hit = best is not None and iou(best.box, box) >= 0.3
            matched.append(best if hit else None)
            false += len(faces) - int(hit)
        found = np.array([m is not None for m in matched])
        crops = np.concatenate([align_faces(img, [m], size=model.spec.input_size, margin=model.spec.crop_margin)
                                for img, m in zip(scenes, matched) if m is not None])
        accuracy = float((model.predict(crops).argmax(1) == labels[found]).mean()) if found.any() else float("nan")
        results[side] = {"speed": len(scenes) / seconds, "recall": found.mean(), "false": false,
                         "bands": [found[band_of == b].mean() for b in range(len(BANDS))], "accuracy": accuracy}
    base = results.get(1024, next(iter(results.values())))["speed"]
    for side, r in results.items():
        bands = " ".join(f"{v:>9.3f}" for v in r["bands"])
        print(f"{side or 'none':>8} {r['speed']:>9.2f} {r['speed'] / base:>9.2f} {r['recall']:>7.3f} {bands} "
              f"{r['false']:>6d} {r['accuracy']:>11.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
