"""Benchmark of the Spark job against single-process loops, on the same generated images, in one run.

    nice -n 10 python bench/bench_job.py [--n 200] [--detector retinaface|haar] [--rss 1000,10000]
    nice -n 10 python bench/bench_job.py --engines tf,tflite --rss "" --skip-raw --skip-fer

Prints:
1. job: end-to-end images/s of jobs/score_campaign's run_job on local[2] (scoring stage, and whole run);
2. raw: a single-process batched loop over fer_core (FacePipeline.score_images on batches of bytes);
   ratio job/raw (goal >= 0.9);
3. fer: the `fer` package's FER() per-image loop (Haar + its mini-Xception; install with
   `pip install fer==25.10.3 --no-deps "setuptools<81"`); ratio job/fer;
4. peak RSS of driver + JVM + Python workers (psutil, polled every 0.25 s) for dumps of each --rss size
   (rows cycle the same photos under distinct image_ids): it must stay flat as the input grows.
With --engines, step 1 runs once per RetinaFace engine on the same dump (each after its own warm-up run)
and prints each engine's rate over the first one's. With --models, the same for emotion models and their
test-time augmentation, NAME_OR_PATH:TTA pairs (issue 25: what ten-crop costs a whole run, not only the
classifier), e.g.

    nice -n 10 python bench/bench_job.py --rss "" --skip-raw --skip-fer \
        --models default:flip artifacts/train/fer-vgg-v7/best.keras:ten_crop
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def make_photos(n: int, canvas: tuple[int, int], seed: int = 1) -> list[bytes]:
    """n JPEG photos with 0-3 composited faces (the same generator as the sample dump)."""
    import io

    import numpy as np
    from PIL import Image

    from jobs.make_sample_dump import builtin_face_patches, composite_faces

    rng = np.random.default_rng(seed)
    patches = builtin_face_patches()
    out = []
    for _ in range(n):
        k = int(rng.choice([0, 1, 1, 2, 3]))
        img, _ = composite_faces([patches[int(j)] for j in rng.integers(0, len(patches), k)], rng, canvas=canvas,
                                 face_px=(50, 160))
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_dump(photos: list[bytes], rows: int, path: Path, rows_per_file: int = 2000) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    t0 = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)
    for start in range(0, rows, rows_per_file):
        idx = range(start, min(rows, start + rows_per_file))
        pq.write_table(pa.table({
            "image_id": [f"img-{i:07d}" for i in idx],
            "campaign_id": [f"c{i % 5}" for i in idx],
            "posted_at": pa.array([t0 + dt.timedelta(minutes=i) for i in idx], pa.timestamp("us", tz="UTC")),
            "platform": ["x"] * len(idx), "caption": ["bench"] * len(idx),
            "image": pa.array([photos[i % len(photos)] for i in idx], pa.binary()),
        }), path / f"part-{start // rows_per_file:05d}.parquet")


class RssSampler:
    """Peak summed RSS of this process and all its descendants (JVM, Python daemon and workers): ``peak``;
    and of this process (the Python driver) alone: ``driver``."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.driver = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            own = total = self.proc.memory_info().rss
            for p in self.proc.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak, self.driver = max(self.peak, total), max(self.driver, own)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def job_config(dump: Path, lake: Path, detector: str, batch: int, engine: str | None = None,
               model: tuple[str, str] | None = None) -> dict:
    """model: (name or path, tta mode); None is the default model without TTA, in both paths, as before
    TTA became the default."""
    name, tta = model or ("default", False)
    return {
        "input": {"path": str(dump)}, "output": {"path": str(lake), "dashboards": False},
        "detector": {"name": detector, "engine": engine},
        "model": {"name": name, "batch_size": batch, "tta": tta},
        "runtime": {"intra_threads": 1, "inter_threads": 1},
        "spark": {"master": "local[2]", "arrow_batch_size": 32, "images_per_task": 250,
                  "conf": {"spark.driver.memory": "2g"}},
        "progress": {"interval_s": 30},
    }


def bench_raw(photos: list[bytes], detector: str, batch: int) -> float:
    """Single process, batched: FacePipeline.score_images over batches of `batch` images."""
    from fer_core.pipeline import DetectorOptions, FacePipeline, InferenceConfig, ModelOptions

    pipe = FacePipeline.from_config(InferenceConfig(detector=DetectorOptions(name=detector),
                                                    model=ModelOptions(batch_size=batch, tta=False)))
    pipe.score_images(photos[:2])  # warm-up (graph tracing), not timed
    t = time.perf_counter()
    n_faces = 0
    for i in range(0, len(photos), batch):
        n_faces += sum(len(r.faces) for r in pipe.score_images(photos[i:i + batch]))
    dt_ = time.perf_counter() - t
    print(f"raw fer_core loop: {len(photos)} images, {n_faces} faces in {dt_:.1f}s = {len(photos) / dt_:.2f} images/s")
    return len(photos) / dt_


def bench_fer(photos: list[bytes]) -> float | None:
    """The fer package's FER() (Haar + mini-Xception) called per image."""
    try:
        from fer.fer import FER
    except Exception as e:  # not installed
        print(f"fer package not available ({type(e).__name__}: {e}); install fer==25.10.3 --no-deps")
        return None
    import cv2
    import numpy as np

    detector = FER(mtcnn=False)
    imgs = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in photos]
    detector.detect_emotions(imgs[0])
    t = time.perf_counter()
    n_faces = sum(len(detector.detect_emotions(img)) for img in imgs)
    dt_ = time.perf_counter() - t
    print(f"fer FER() per-image loop: {len(photos)} images, {n_faces} faces in {dt_:.1f}s = {len(photos) / dt_:.2f} images/s")
    return len(photos) / dt_


def bench_job(spark, dump: Path, lake: Path, detector: str, batch: int,
              engine: str | None = None, model: tuple[str, str] | None = None) -> tuple[dict, float, int]:
    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import run_job

    cfg = job_config_from_dict(job_config(dump, lake, detector, batch, engine, model))
    with RssSampler() as rss:
        t = time.perf_counter()
        row = run_job(spark, cfg)
        wall = time.perf_counter() - t
    return row, wall, rss.peak


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="photos for the throughput comparison")
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rss", default="1000,10000", help="dump sizes for the peak-RSS check ('' to skip)")
    ap.add_argument("--rss-detector", default="haar", help="detector for the RSS runs (haar keeps them short)")
    ap.add_argument("--skip-raw", action="store_true")
    ap.add_argument("--skip-fer", action="store_true")
    ap.add_argument("--rss-only", action="store_true", help="only the peak-RSS runs (e.g. with small --size)")
    ap.add_argument("--engines", default="", help="RetinaFace engines to compare in the job, e.g. tf,tflite")
    ap.add_argument("--models", nargs="*", default=[], metavar="NAME_OR_PATH:TTA",
                    help="emotion models to compare in the job, e.g. default:flip path/best.keras:c,c_flip,tl,br")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench_job_"))
    photos = make_photos(args.n, (h, w))
    print(f"bench: {len(photos)} photos {w}x{h}, detector {args.detector}, batch {args.batch}, work dir {work}")

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.session import build_session

    spark = build_session(job_config_from_dict(job_config(work, work, args.detector, args.batch)))
    if not args.rss_only:
        compare(spark, photos, work, args)
    for n in [int(v) for v in args.rss.split(",") if v.strip()]:
        write_dump(photos, n, work / f"dump_{n}")
        row, wall, peak = bench_job(spark, work / f"dump_{n}", work / f"lake_{n}", args.rss_detector, args.batch)
        print(f"rss: {n} images ({args.rss_detector}): {wall:.0f}s, {row['n_scored'] / wall:.1f} images/s, "
              f"peak RSS driver+JVM+workers {peak / 2**20:.0f} MiB")
    spark.stop()
    return 0


def variants(args: argparse.Namespace) -> list[tuple[str | None, tuple[str, str] | None]]:
    """(engine, (model, tta)) per job run to compare: --engines, else --models, else the one default run."""
    engines = [e for e in args.engines.split(",") if e]
    models = [tuple(m.rsplit(":", 1)) if "/" not in m.rsplit(":", 1)[-1] else (m, "flip") for m in args.models]
    if engines and models:
        raise SystemExit("--engines and --models: compare one thing at a time")
    return [(e, None) for e in engines] or [(None, m) for m in models] or [(None, None)]


def compare(spark, photos: list[bytes], work: Path, args: argparse.Namespace) -> None:
    """Job vs raw fer_core loop vs fer's FER() on the same photos."""
    write_dump(photos, len(photos), work / "dump_n")
    # warm run on a few images so Python workers have loaded TF + models (as in a long scheduled run)
    write_dump(photos[:8], 8, work / "dump_warm")
    first = None
    for i, (engine, model) in enumerate(variants(args)):
        label = engine or (f"{model[0]} tta {model[1]}" if model else "")
        tag = f"_{i}" if label else ""
        bench_job(spark, work / "dump_warm", work / f"lake_warm{tag}", args.detector, args.batch, engine, model)
        row, wall, peak = bench_job(spark, work / "dump_n", work / f"lake_n{tag}", args.detector, args.batch,
                                    engine, model)
        job_rate = row["n_scored"] / wall
        print(f"job (local[2]{', ' + label if label else ''}): {row['n_scored']} images, {row['n_faces']} "
              f"faces; scoring stage {row['images_per_s']:.2f} images/s; whole run {wall:.1f}s = {job_rate:.2f} "
              f"images/s; peak RSS {peak / 2**20:.0f} MiB")
        first = first or (label, job_rate, row["images_per_s"])
        if i:
            print(f"ratio {label} / {first[0]}: whole run x{job_rate / first[1]:.2f}, "
                  f"scoring stage x{row['images_per_s'] / first[2]:.2f}")

    raw = None if args.skip_raw else bench_raw(photos, args.detector, args.batch)
    fer = None if args.skip_fer else bench_fer(photos)
    if raw:
        print(f"ratio job/raw: whole run {job_rate / raw:.2f}, scoring stage {row['images_per_s'] / raw:.2f} (goal >= 0.9)")
    if fer:
        print(f"ratio job/fer: whole run {job_rate / fer:.2f}, scoring stage {row['images_per_s'] / fer:.2f}")


if __name__ == "__main__":
    sys.exit(main())
