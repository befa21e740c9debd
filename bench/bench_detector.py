"""RetinaFace engines compared in one run: the TF graph against its TensorFlow Lite (XNNPACK) conversion.

    nice -n 10 python bench/bench_detector.py [--n 60] [--sizes 640x480,1080x1350,mixed] [--threads 1]

For each image size, both engines detect the same generated photos (0-3 composited
faces, as in the sample dump), interleaved over --reps rounds; prints images/s per engine, the ratio
tflite/tf, and whether every image got the same faces (count, boxes within 0.05 px). "mixed" draws each
photo's size from 400-1400 px per side, so the TFLite interpreter is resized for nearly every image.
--threads sets both engines' threads (TensorFlow's are fixed when it starts, so one count per run); the
job runs one Python worker per core with 1 thread each, so --threads 1 is the job's case.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def photos_for(size: str, n: int, seed: int) -> list:
    """n decoded RGB photos of one size ("WxH") or of random sizes ("mixed")."""
    import numpy as np

    from bench_job import make_photos
    from fer_core.decode import decode_image

    if size != "mixed":
        w, h = (int(v) for v in size.split("x"))
        return [decode_image(b) for b in make_photos(n, (h, w), seed=seed)]
    rng = np.random.default_rng(seed)
    return [decode_image(make_photos(1, (int(rng.integers(400, 1400)), int(rng.integers(400, 1400))),
                                     seed=seed + i)[0]) for i in range(n)]


def same_faces(a: list, b: list) -> bool:
    import numpy as np

    return all(len(x) == len(y) and all(np.allclose(f.box, g.box, atol=0.05) for f, g in zip(x, y))
               for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60, help="photos per size")
    ap.add_argument("--sizes", default="640x480,1080x1350,mixed")
    ap.add_argument("--threads", type=int, default=1, help="threads per engine (the job uses 1 per worker)")
    ap.add_argument("--reps", type=int, default=2, help="interleaved rounds per engine")
    args = ap.parse_args(argv)

    from fer_core.detectors.retinaface import RetinaFaceDetector
    from fer_core.runtime import configure_tensorflow

    configure_tensorflow("cpu", args.threads, args.threads)  # TFLite follows TF's intra-op setting
    import tensorflow as tf

    tf_det, tfl_det = RetinaFaceDetector(engine="tf"), RetinaFaceDetector(engine="tflite")
    print(f"RetinaFace {tf_det.version}: TensorFlow {tf.__version__} graph vs its TFLite conversion, "
          f"{args.threads} thread(s) each, best of {args.reps} interleaved rounds")
    for size in args.sizes.split(","):
        photos = photos_for(size, args.n, seed=7)
        tf_det.detect(photos[:1]), tfl_det.detect(photos[:1])  # warm-up, not timed
        rates: dict[str, list[float]] = {"tf": [], "tflite": []}
        results = {}
        for _ in range(args.reps):
            for name, det in (("tf", tf_det), ("tflite", tfl_det)):
                t = time.perf_counter()
                results[name] = det.detect(photos)
                rates[name].append(len(photos) / (time.perf_counter() - t))
        tf_rate, tfl_rate = max(rates["tf"]), max(rates["tflite"])
        print(f"{size}: {len(photos)} photos, {sum(map(len, results['tf']))} faces; tf {tf_rate:.2f} images/s, "
              f"tflite {tfl_rate:.2f} images/s, x{tfl_rate / tf_rate:.2f}; same faces: "
              f"{same_faces(results['tf'], results['tflite'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
