"""What rendering the dashboards costs, first render and a re-render, at 10k and 100k faces rows.

    python bench/bench_dashboards.py [--faces 10000 100000] [--campaigns 50] [--max-gallery 8]

Builds a synthetic lake directly (deltalake.write_deltalake in fer_core.tables' schemas, partitioned by
campaign_id as the job writes it; no scoring), two runs, ~1.5 faces per ok image. Every image's source is
one of a few small JPEGs on disk, so each gallery pick loads and decodes a real file. Each render runs in
a fresh Python process (peak RSS = that process's ru_maxrss):

* ``first``: an empty output folder;
* ``again``: the same folder, nothing changed in the lake;
* ``touched``: after one more run appended to one campaign.

Prints wall time (and of it: aggregate.compute, which reads every images and faces row of the columns
the figures need; the gallery, which reads and draws the picks), peak RSS, and how many images were
loaded and thumbnails / pages (re)written (files whose mtime moved).
Grad-CAM is off (no TensorFlow on this 2-core box; an overlay costs a model call per face on top).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_SOURCE_FILES = 12
UTC = dt.timezone.utc


def _source_files(folder: Path) -> list[str]:
    """A few 480x360 JPEGs; every image row points at one of them (boxes below fit inside)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_SOURCE_FILES):
        pixels = rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)
        path = folder / f"src-{i}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=80)
        paths.append(str(path))
    return paths


def _run_rows(n_images: int, n_campaigns: int, run_id: str, scored_at: dt.datetime, sources: list[str],
              seed: int, first_id: int = 0, campaigns: list[int] | None = None):
    """images and faces tables of one run, in the contract's schemas (fer_core.tables)."""
    import numpy as np
    import pyarrow as pa

    from fer_core import tables
    from fer_core.labels import EMOTIONS

    rng = np.random.default_rng(seed)
    weights = np.array([-0.9, -0.8, -0.7, 1.0, -0.8, 0.3, 0.0])
    camp = rng.choice(np.array(campaigns), n_images) if campaigns else rng.integers(0, n_campaigns, n_images)
    status = rng.choice(np.array(["ok", "no_face", "decode_error", "fetch_error"]), n_images, p=[.8, .15, .03, .02])
    n_faces = np.where(status == "ok", rng.integers(1, 3, n_images), 0).astype(np.int32)
    ids = np.arange(first_id, first_id + n_images)
    image_id = np.char.add("img-", ids.astype(str))
    campaign_id = np.char.add("campaign-", camp.astype(str))
    posted = (np.datetime64("2026-10-01T00:00:00", "us")
              + rng.integers(0, 60 * 86400, n_images).astype("timedelta64[s]")).astype("datetime64[us]")
    face_img = np.repeat(np.arange(n_images), n_faces)
    n_f = len(face_img)
    probs = rng.dirichlet(np.ones(7), n_f)
    valence = np.clip(probs @ weights, -1, 1)
    sentiment = np.where(valence > 0.15, "positive", np.where(valence < -0.15, "negative", "neutral"))
    img_val = np.full(n_images, np.nan)
    sums = np.bincount(face_img, weights=valence, minlength=n_images)
    img_val[n_faces > 0] = sums[n_faces > 0] / n_faces[n_faces > 0]
    model, detector = "fer-vgg@3", "retinaface@0.0.17"
    scoring = f"{model}/retinaface@0.9,1024px,min20/bench"
    ts = pa.timestamp("us", tz="UTC")
    images = pa.table({
        "image_id": image_id, "campaign_id": campaign_id, "posted_at": pa.array(posted, pa.timestamp("us")).cast(ts),
        "platform": rng.choice(np.array(["instagram", "x", "tiktok", "facebook"]), n_images),
        "caption": np.char.add("caption of ", image_id), "source": np.array(sources)[ids % len(sources)],
        "status": status, "error": pa.nulls(n_images, pa.string()),
        "width": np.full(n_images, 480, np.int32), "height": np.full(n_images, 360, np.int32),
        "n_faces": n_faces, "dominant_emotion": pa.nulls(n_images, pa.string()),
        **{f"p_{e}": pa.nulls(n_images, pa.float64()) for e in EMOTIONS},
        "sentiment": pa.nulls(n_images, pa.string()), "valence": pa.array(img_val, pa.float64(), from_pandas=True),
        "model_version": np.full(n_images, model), "detector_version": np.full(n_images, detector),
        "run_id": np.full(n_images, run_id), "scored_at": pa.array([scored_at] * n_images, ts),
        "media_type": np.full(n_images, "image"), "duration_s": pa.nulls(n_images, pa.float64()),
        "n_frames": np.ones(n_images, np.int32), "scoring_id": np.full(n_images, scoring),
        "input_file": pa.nulls(n_images, pa.string()),
    }, schema=tables.images_schema())
    x = rng.uniform(0, 300, n_f)
    faces = pa.table({
        "image_id": image_id[face_img], "campaign_id": campaign_id[face_img],
        "face_index": np.zeros(n_f, np.int32), "x": x, "y": rng.uniform(0, 200, n_f),
        "w": np.full(n_f, 120.0), "h": np.full(n_f, 120.0), "det_score": rng.uniform(0.9, 1.0, n_f),
        "landmarks": pa.nulls(n_f, pa.list_(pa.float64())), "emotion": np.array(EMOTIONS)[probs.argmax(axis=1)],
        **{f"p_{e}": probs[:, i] for i, e in enumerate(EMOTIONS)},
        "sentiment": sentiment, "valence": valence, "model_version": np.full(n_f, model),
        "run_id": np.full(n_f, run_id), "frame_ms": pa.nulls(n_f, pa.int64()), "track_id": pa.nulls(n_f, pa.int32()),
        "face_px": np.full(n_f, 120.0), "sharpness": rng.uniform(0.3, 3.0, n_f),
        "brightness": rng.uniform(40, 160, n_f), "yaw": pa.nulls(n_f, pa.float64()),
        "pitch": pa.nulls(n_f, pa.float64()), "quality": np.where(rng.uniform(size=n_f) < 0.8, "good", "blurred"),
        "scoring_id": np.full(n_f, scoring),
    }, schema=tables.faces_schema())
    run = {"run_id": run_id, "started_at": scored_at, "finished_at": scored_at, "status": "succeeded",
           "n_input": n_images, "n_scored": n_images, "n_faces": n_f, "model_version": model,
           "detector_version": detector, "scoring_id": scoring}
    return images, faces, pa.Table.from_pylist([run], schema=tables.runs_schema())


def append_run(root: Path, images, faces, runs) -> None:
    from deltalake import write_deltalake

    write_deltalake(str(root / "images"), images, mode="append", partition_by=["campaign_id"])
    write_deltalake(str(root / "faces"), faces, mode="append", partition_by=["campaign_id"])
    write_deltalake(str(root / "runs"), runs, mode="append")


def build_lake(root: Path, n_faces: int, n_campaigns: int, sources: list[str]) -> int:
    """Two runs (70 % / 30 %) of about ``n_faces`` faces rows; returns the images written."""
    n_images = int(n_faces / 1.2)  # 80 % ok images with 1.5 faces each
    first = int(n_images * 0.7)
    for i, (start, n) in enumerate(((0, first), (first, n_images - first))):
        when = dt.datetime(2026, 11, 20 + i, 3, tzinfo=UTC)
        append_run(root, *_run_rows(n, n_campaigns, f"run-{i}", when, sources, seed=i, first_id=start))
    return n_images


def _render_child(lake: str, out: str, max_gallery: int) -> None:
    """Runs in the child process: one render, then its figures as JSON on stdout."""
    import resource

    from dashboards import thumbnails
    from dashboards.render import render_dashboards

    loads = {"n": 0}
    original = thumbnails.load_rgb

    def counting(*a, **kw):
        loads["n"] += 1
        return original(*a, **kw)

    thumbnails.load_rgb = counting
    import dashboards.render as render_module

    render_module.load_rgb = counting
    phases = {"aggregate_s": 0.0, "gallery_s": 0.0}

    def timed(name, fn):
        def run(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phases[name] += time.perf_counter() - t
        return run

    render_module.aggregate.compute = timed("aggregate_s", render_module.aggregate.compute)
    render_module._gallery_cards = timed("gallery_s", render_module._gallery_cards)
    t0 = time.perf_counter()
    render_dashboards(lake, out, gradcam=False, max_gallery=max_gallery)
    wall = time.perf_counter() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mib": rss_mib, "images_loaded": loads["n"], **phases}))


def _snapshot(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def measure(lake: Path, out: Path, max_gallery: int) -> dict:
    before = _snapshot(out) if out.exists() else {}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, __file__, "--child", str(lake), str(out), str(max_gallery)],
                          capture_output=True, text=True, env=env, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    after = _snapshot(out)
    changed = [p for p, m in after.items() if before.get(p) != m]
    result["pages_written"] = sum(p.startswith("campaign-") and p.endswith(".html") for p in changed)
    result["thumbs_written"] = sum(p.startswith("thumbs/") and p.endswith(".jpg") for p in changed)
    result["n_pages"] = sum(p.startswith("campaign-") and p.endswith(".html") for p in after)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--campaigns", type=int, default=50)
    parser.add_argument("--max-gallery", type=int, default=8)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _render_child(args.child[0], args.child[1], int(args.child[2]))
        return
    print(f"{'faces rows':>10} {'render':>8} {'wall s':>7} {'aggregate s':>11} {'gallery s':>9} {'peak RSS MiB':>12} "
          f"{'images loaded':>13} {'thumbs written':>14} {'pages written':>13}")
    with tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:
        sources = _source_files(Path(tmp) / "sources")
        for n_faces in args.faces:
            lake, out = Path(tmp) / f"lake-{n_faces}", Path(tmp) / f"out-{n_faces}"
            n_images = build_lake(lake, n_faces, args.campaigns, sources)
            rows = []
            for label in ("first", "again", "touched"):
                if label == "touched":  # one more run, 20 images of one campaign
                    when = dt.datetime(2026, 11, 25, 3, tzinfo=UTC)
                    append_run(lake, *_run_rows(20, args.campaigns, "run-2", when, sources, seed=9,
                                                first_id=n_images, campaigns=[0]))
                r = measure(lake, out, args.max_gallery)
                rows.append(r)
                print(f"{n_faces:>10,} {label:>8} {r['wall_s']:>7.2f} {r['aggregate_s']:>11.2f} {r['gallery_s']:>9.2f} "
                      f"{r['peak_rss_mib']:>12.0f} "
                      f"{r['images_loaded']:>13} {r['thumbs_written']:>14} "
                      f"{r['pages_written']:>6} of {r['n_pages']:<4}", flush=True)
            print(f"{'':>10} again/first wall: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
