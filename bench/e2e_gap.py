"""End-to-end framing check: FER2013 faces composited into photos, then detect -> align -> classify,
against classifying the raw 48x48 crops of the same faces with the same model.

    python bench/e2e_gap.py --csv ../shared/data/fer2013/fer2013.csv.gz --usage PublicTest --n 600
    python bench/e2e_gap.py --usage Training --margins 0,0.1,0.2,0.3,0.4   # choose crop_margin on Training only

Each face goes alone into a 320x320 scene (random background, scale 70-150 px, flip, +-8 deg, colour
jitter, feathered edges) via jobs/make_sample_dump.composite_faces. A detection matches its face when
IoU >= 0.3. Reports detection recall, accuracy on raw crops, end-to-end accuracy (missed faces count as
wrong) and the gap, per alignment margin. Detection runs once; margins reuse it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / max(aw * ah + bw * bh - inter, 1e-9)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", default=str(Path(__file__).resolve().parents[2] / "shared/data/fer2013/fer2013.csv.gz"))
    p.add_argument("--usage", default="PublicTest")
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--model", default="default")
    p.add_argument("--detector", default="retinaface")
    p.add_argument("--margins", default="", help="comma-separated crop margins to compare (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="write the figures as JSON here")
    a = p.parse_args(argv)
    if not Path(a.csv).exists():
        print(f"FER2013 CSV not found at {a.csv}; pass --csv", file=sys.stderr)
        return 2

    from fer_core.align import align_faces
    from fer_core.detectors import create_detector
    from fer_core.models import create_emotion_model
    from jobs.make_sample_dump import composite_faces, fer_face_patches

    patches = fer_face_patches(a.csv, usage=a.usage, limit=a.n, seed=a.seed)
    rng = np.random.default_rng(a.seed)
    scenes, truth = [], []
    for patch in patches:
        img, boxes = composite_faces([patch], rng, canvas=(320, 320), face_px=(70, 150), rotate=8.0)
        if boxes:
            scenes.append(img)
            truth.append(boxes[0])
    labels = np.array([pt.label for pt in patches])[: len(scenes)]
    raw = np.stack([pt.pixels[12:60, 12:60, 0] for pt in patches])[: len(scenes)]

    model = create_emotion_model(a.model)
    detector = create_detector(a.detector)
    t0 = time.perf_counter()
    detections = detector.detect(scenes)
    det_s = time.perf_counter() - t0
    matched = []
    for faces, box in zip(detections, truth):
        best = max(faces, key=lambda f: iou(f.box, box), default=None)
        matched.append(best if best is not None and iou(best.box, box) >= 0.3 else None)
    found = np.array([m is not None for m in matched])

    raw_pred = model.predict(raw).argmax(1)
    raw_acc = float((raw_pred == labels).mean())
    margins = [float(m) for m in a.margins.split(",")] if a.margins else [model.spec.crop_margin]
    rows = []
    for margin in margins:
        crops = np.concatenate([align_faces(img, [m], size=model.spec.input_size, margin=margin)
                                for img, m in zip(scenes, matched) if m is not None])
        pred = np.full(len(labels), -1)
        pred[found] = model.predict(crops).argmax(1)
        e2e = float((pred == labels).mean())
        on_found = float((pred[found] == labels[found]).mean())
        raw_on_found = float((raw_pred[found] == labels[found]).mean())
        rows.append({"margin": margin, "e2e_accuracy": e2e, "e2e_accuracy_on_detected": on_found,
                     "raw_accuracy_on_detected": raw_on_found, "gap_points_on_detected": 100 * (raw_on_found - on_found),
                     "gap_points_all": 100 * (raw_acc - e2e)})
    result = {"model": model.version, "detector": detector.version, "usage": a.usage, "n_faces": int(len(labels)),
              "detection_recall": float(found.mean()), "raw_accuracy": raw_acc, "detect_seconds": round(det_s, 1),
              "margins": rows}
    print(f"{model.version} on {len(labels)} {a.usage} faces composited into photos; detector {detector.version}")
    print(f"detection recall {found.mean():.3f}; raw-crop accuracy {raw_acc:.4f}")
    print(f"{'margin':>7} {'e2e acc':>8} {'e2e (detected)':>15} {'raw (detected)':>15} {'gap pts (detected)':>19} {'gap pts (all)':>14}")
    for r in rows:
        print(f"{r['margin']:>7.2f} {r['e2e_accuracy']:>8.4f} {r['e2e_accuracy_on_detected']:>15.4f} "
              f"{r['raw_accuracy_on_detected']:>15.4f} {r['gap_points_on_detected']:>19.2f} {r['gap_points_all']:>14.2f}")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
