"""Inference throughput of the batch API: images/s and faces/s end to end, classifier-only faces/s.

Generates N JPEGs with jobs/make_sample_dump's compositor (the same generator as the sample dump
and bench_job): real faces shipped by scikit-image at several scales, 0-3 per scene. Models load once; a
warm-up batch runs before timing. Usage:

    nice -n 10 .venv/bin/python bench/bench_inference.py --n 300 --batch 32
    .venv/bin/python bench/bench_inference.py --n 16 --stage-images 8 --model fer-vgg@3   # classifier figures only
    .venv/bin/python bench/bench_inference.py --n 16 --stage-images 8 --tta --compare fer-vgg@5   # vs another model
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_images(n: int, seed: int = 0) -> tuple[list[bytes], int]:
    """n JPEG scenes with 0-3 real faces (scikit-image photos) composited at 50-160 px onto varied
    backgrounds by the sample-dump generator, and the number of faces placed (for detection recall)."""
    from PIL import Image

    from jobs.make_sample_dump import builtin_face_patches, composite_faces

    rng = np.random.default_rng(seed)
    patches = builtin_face_patches()
    sizes = [(480, 640), (600, 800), (768, 1024), (720, 1280)]
    out, placed = [], 0
    for i in range(n):
        k = int(rng.choice([0, 1, 1, 1, 2, 3]))
        img, boxes = composite_faces([patches[int(j)] for j in rng.integers(0, len(patches), k)], rng,
                                     canvas=sizes[i % len(sizes)], face_px=(50, 160))
        placed += len(boxes)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out, placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images to generate and score")
    parser.add_argument("--batch", type=int, default=32, help="images per score_images call")
    parser.add_argument("--model", default="default")
    parser.add_argument("--detector", default="retinaface")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=None, help="TF intra-op threads (default: all cores)")
    parser.add_argument("--classifier-reps", type=int, default=9)
    parser.add_argument("--compare", action="append", default=[], metavar="MODEL[:tta]",
                        help="also time this classifier, interleaved with the main one (repeatable; ':tta' turns "
                             "flip TTA on for it)")
    parser.add_argument("--stage-images", type=int, default=64, help="images in the per-stage timing pass")
    args = parser.parse_args()

    from fer_core.pipeline import DetectorOptions, FacePipeline, InferenceConfig, ModelOptions
    from fer_core.runtime import RuntimeConfig

    t0 = time.perf_counter()
    images, placed = make_images(args.n)
    print(f"generated {len(images)} JPEGs with {placed} faces in {time.perf_counter() - t0:.1f}s "
          f"({sum(map(len, images)) / 1e6:.1f} MB)")

    cfg = InferenceConfig(
        detector=DetectorOptions(name=args.detector),
        model=ModelOptions(name=args.model, tta=args.tta),
        runtime=RuntimeConfig(device=args.device, intra_threads=args.threads),
    )
    t0 = time.perf_counter()
    pipe = FacePipeline.from_config(cfg)
    print(f"loaded {pipe.versions} in {time.perf_counter() - t0:.1f}s")
    pipe.score_images(images[: min(8, len(images))])  # warm-up: traces the TF functions

    stage = {"decode": 0.0, "detect": 0.0, "align": 0.0, "classify": 0.0}
    n_faces = 0
    subset = images[: args.stage_images]
    t_all = time.perf_counter()
    for start in range(0, len(subset), args.batch):
        batch = subset[start:start + args.batch]
        t = time.perf_counter()
        decoded = [d for d in pipe.decode(batch) if isinstance(d, np.ndarray)]
        stage["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        faces = pipe.detect(decoded)
        stage["detect"] += time.perf_counter() - t
        t = time.perf_counter()
        crops = [pipe.align(img, f) for img, f in zip(decoded, faces) if f]
        stage["align"] += time.perf_counter() - t
        if crops:
            t = time.perf_counter()
            pipe.classify(np.concatenate(crops))
            stage["classify"] += time.perf_counter() - t
        n_faces += sum(len(f) for f in faces)
    staged = time.perf_counter() - t_all

    t_all = time.perf_counter()
    results = []
    for start in range(0, len(images), args.batch):
        results += pipe.score_images(images[start:start + args.batch])
    elapsed = time.perf_counter() - t_all
    statuses = {s: sum(r.status == s for r in results) for s in sorted({r.status for r in results})}
    faces_found = sum(len(r.faces) for r in results)

    print(f"score_images: {len(images)} images, {faces_found} faces, statuses {statuses}")
    print(f"  end to end: {len(images) / elapsed:.1f} images/s, {faces_found / elapsed:.1f} faces/s "
          f"(batch {args.batch}, {elapsed:.1f}s)")
    print("  stage split: " + ", ".join(f"{k} {v / staged:.0%}" for k, v in stage.items())
          + f" (stage-by-stage pass over {len(subset)} images: {staged:.1f}s, {n_faces} faces)")

    model = pipe.model
    s = model.spec.input_size
    crops = np.random.default_rng(0).integers(0, 255, (256, s, s, 3), dtype=np.uint8)
    from fer_core.models import create_emotion_model
    from fer_core.models.emotion import EmotionModel

    unfolded = EmotionModel(model.keras_model, model.spec, tta=model.tta, batch_size=model.batch_size, fold=False)
    others = {}
    for entry in args.compare:
        name, _, flag = entry.partition(":")
        if flag not in ("", "tta"):
            parser.error(f"--compare {entry}: the suffix may only be ':tta'")
        others[f"{name}{' (tta)' if flag else ''}"] = create_emotion_model(name, tta=bool(flag))
    timed = {"folded": model, "unfolded": unfolded, **others}
    timings: dict[str, list[float]] = {k: [] for k in timed}
    for m in timed.values():
        m.predict(crops)  # warm-up at this shape
    for _ in range(args.classifier_reps):  # interleaved, so all see the same machine load
        for name, m in timed.items():
            t = time.perf_counter()
            m.predict(crops)
            timings[name].append(time.perf_counter() - t)
    per = {k: float(np.median(v)) for k, v in timings.items()}
    print(f"classifier only ({model.version}, tta={model.tta}): {256 / per['folded']:.0f} faces/s at batch 256 "
          f"({per['folded'] * 1000:.0f} ms per batch, preprocess included, median of {args.classifier_reps}); "
          f"without BatchNormalization folding {256 / per['unfolded']:.0f} faces/s "
          f"-> folding x{per['unfolded'] / per['folded']:.2f}")
    for name in others:
        print(f"  {name}: {256 / per[name]:.0f} faces/s (same run, interleaved) -> {model.version} is "
              f"x{per[name] / per['folded']:.2f} its speed")


if __name__ == "__main__":
    main()
