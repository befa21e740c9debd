"""CPU-seconds per minute of video through the Spark job (local[2]), at the default sampling, in one run.

    nice -n 10 python bench/bench_video_job.py [--clips 10] [--seconds 30,60] [--size 1280x720]
                                               [--detector retinaface]

Makes ``--clips`` real H.264 MP4 posts (30 fps, a keyframe every 2 s, lengths spread over ``--seconds``)
of a face moving across a ``--size`` frame, writes them as a Parquet dump of bytes and prints:
1. job: the scoring run's wall time on local[2], wall x 2 cores per minute of video (the CPU budget a
   video-minute takes), the sampled frames per video-minute and frames/s;
2. raw: one process (one TensorFlow thread), one video at a time through ``FacePipeline.score_images``, and within it the share of
   time spent sampling (``fer_core.video.sample_frames``: demux + decode + RGB) against the rest
   (detect, align, classify, tracks), measured on the same clips.
The job's first run (model load, Python worker start) is a warm-up on one clip and is not timed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

CORES = 2


def make_clips(n: int, seconds: tuple[float, float], size: tuple[int, int]) -> list[tuple[float, bytes]]:
    """n (duration_s, MP4 bytes): the astronaut's face sliding across a grey frame, 30 fps, GOP 2 s."""
    import cv2
    from skimage import data as skdata

    from _videos import encode_clip, sliding_face

    w, h = size
    face = skdata.astronaut()[0:256, 80:400]
    scale = min(1.5, (h - 40) / face.shape[0])
    face = cv2.resize(face, (int(face.shape[1] * scale) // 2 * 2, int(face.shape[0] * scale) // 2 * 2))
    clips = []
    for k in range(n):
        dur = seconds[0] + (seconds[1] - seconds[0]) * (k / max(1, n - 1))
        frames = int(round(dur * 30))
        frame_at, _ = sliding_face(face, canvas_hw=(h, w), n_frames=frames, x0=0, x1=w - face.shape[1],
                                   y=(h - face.shape[0]) // 2, fill=60 + 10 * k)
        clips.append((frames / 30, encode_clip(frame_at, frames, kind="h264", fps=30, gop=60)))
    return clips


def write_dump(clips: list[bytes], path: Path) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    t0 = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    pq.write_table(pa.table({
        "image_id": [f"clip-{k}" for k in range(len(clips))], "campaign_id": ["bench"] * len(clips),
        "posted_at": pa.array([t0 + dt.timedelta(minutes=k) for k in range(len(clips))], pa.timestamp("us", tz="UTC")),
        "platform": ["tiktok"] * len(clips), "caption": [""] * len(clips), "image": pa.array(clips, pa.binary()),
    }), path / "dump.parquet")


def job_config(dump: Path, lake: Path, detector: str) -> dict:
    return {
        "input": {"path": str(dump)}, "output": {"path": str(lake), "dashboards": False},
        "detector": {"name": detector}, "model": {"tta": True},  # the product's defaults, video: defaults too
        "runtime": {"intra_threads": 1, "inter_threads": 1},
        "spark": {"master": f"local[{CORES}]", "arrow_batch_size": 1, "images_per_task": 1,
                  "conf": {"spark.driver.memory": "2g"}},
        "progress": {"interval_s": 30},
    }


def bench_raw(clips: list[bytes], detector: str) -> tuple[float, float, int]:
    """(seconds scoring, seconds of that in sample_frames, frames) for one process, one clip at a time."""
    from fer_core.pipeline import DetectorOptions, FacePipeline, InferenceConfig
    from fer_core.runtime import RuntimeConfig
    from fer_core.video import sample_frames

    # one TensorFlow thread: its wall time is its CPU time, comparable with the job's wall x cores
    pipe = FacePipeline.from_config(InferenceConfig(detector=DetectorOptions(name=detector),
                                                    runtime=RuntimeConfig(intra_threads=1, inter_threads=1)))
    pipe.score_images(clips[:1])  # warm-up (graph tracing), not timed
    t = time.perf_counter()
    frames = sum(r.n_frames or 0 for clip in clips for r in pipe.score_images([clip]))
    total = time.perf_counter() - t
    t = time.perf_counter()
    for clip in clips:
        sample_frames(clip, pipe.video)
    sampling = time.perf_counter() - t
    return total, sampling, frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--seconds", default="30,60", help="shortest,longest clip in seconds")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--skip-raw", action="store_true")
    args = ap.parse_args(argv)
    lo, hi = (float(v) for v in args.seconds.split(","))
    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench_video_job_"))
    t = time.perf_counter()
    made = make_clips(args.clips, (lo, hi), (w, h))
    clips = [b for _, b in made]
    minutes = sum(d for d, _ in made) / 60
    print(f"bench: {len(clips)} clips {w}x{h} 30 fps, {minutes:.1f} video-minutes, "
          f"{sum(map(len, clips)) / 2**20:.1f} MiB, made in {time.perf_counter() - t:.0f}s; detector {args.detector}")
    write_dump(clips[:1], work / "warm")
    write_dump(clips, work / "dump")

    from jobs.campaign.config import job_config_from_dict
    from jobs.campaign.job import run_job
    from jobs.campaign.session import build_session

    spark = build_session(job_config_from_dict(job_config(work / "warm", work / "lake_warm", args.detector)))
    run_job(spark, job_config_from_dict(job_config(work / "warm", work / "lake_warm", args.detector)))
    t = time.perf_counter()
    row = run_job(spark, job_config_from_dict(job_config(work / "dump", work / "lake", args.detector)))
    wall = time.perf_counter() - t
    spark.stop()
    from deltalake import DeltaTable

    images = DeltaTable(str(work / "lake" / "images")).to_pandas(columns=["status", "n_frames", "n_faces"])
    frames = int(images.n_frames.sum())
    print(f"job local[{CORES}]: {row['n_scored']} videos ({dict(images.status.value_counts())}), {frames} frames "
          f"sampled, {row['n_faces']} face rows, {int(images.n_faces.sum())} tracks, in {wall:.1f}s wall")
    print(f"job: {wall * CORES / minutes:.1f} CPU-s per video-minute (wall x {CORES} cores), "
          f"{frames / minutes:.1f} sampled frames per video-minute, {frames / wall:.2f} frames/s")
    if not args.skip_raw:
        total, sampling, n = bench_raw(clips, args.detector)
        print(f"raw one process: {n} frames in {total:.1f}s = {total / minutes:.1f} CPU-s per video-minute; "
              f"sampling (demux+decode+RGB) {sampling:.1f}s = {sampling / total:.0%} of it, "
              f"detect+align+classify+tracks {total - sampling:.1f}s")
        print(f"ratio job CPU-s / raw CPU-s per video-minute: {wall * CORES / total:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
