"""Write a realistic social-media image dump from face photos available offline.

    python jobs/make_sample_dump.py --out sample_data [--n-images 120] [--days 3] [--mode bytes|uri|folders]
                                    [--fer-csv ../shared/data/fer2013/fer2013.csv.gz --usage PublicTest]

Faces come from photos shipped with scikit-image (astronaut, cameraman, and the 100 LFW faces of
``skimage.data.lfw_subset``), or, with ``--fer-csv``, from FER2013 rows (upscaled) whose labels are
kept in ``<out>/labels.parquet`` (image_id, face_index, x, y, w, h, emotion, emotion_code, fer_row).
Each photo is a generated or shipped background with 0-3 faces composited at varied scales,
flipped, rotated, colour-jittered and feathered in; several campaigns, days, platforms and captions;
plus a few bad inputs (truncated JPEG, zero bytes, random bytes, a huge-dimension PNG header, a
null image cell, a duplicate image_id, and in uri mode a missing URI). With ``--n-videos`` (default 3)
some posts are short H.264 MP4 clips (a slow camera pan over 1-2 composited faces, encoded by FFmpeg
through PyAV), so the demo exercises the video path: sampled frames, tracks, the video gallery.

Layout: <out>/dump/date=YYYY-MM-DD/part-00000.parquet (mode bytes: ``image`` binary column; mode
uri: ``uri`` column pointing at <out>/images/...; mode folders: <out>/folders/campaign_id=X/*.jpg).

``composite_faces`` is importable: the lead reuses it to measure detect->align->classify accuracy
against raw crops.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.labels import EMOTIONS  # noqa: E402 (after the path set-up, so the script runs from anywhere)

__all__ = ["FacePatch", "composite_faces", "builtin_face_patches", "fer_face_patches", "make_background",
           "write_dump", "pan_clip", "huge_png_header", "main"]

CAMPAIGNS = ("summer_sale", "eco_launch", "city_marathon")
PLATFORMS = ("instagram", "x", "tiktok", "facebook")
CAPTIONS = (
    "Loving the new {c} collection! #{c}", "Can't believe this {c} deal...", "Day {d} of #{c} with friends",
    "Not impressed by {c} tbh", "{c} vibes all weekend", "Who else saw the {c} billboard?",
    "Finally tried it. #{c} #ad", "Meh. {c} again.", "Best day ever thanks to {c}!",
)


@dataclass
class FacePatch:
    """A face with some context: RGB uint8 pixels, the face box (x, y, w, h) inside them, an optional label."""

    pixels: np.ndarray
    box: tuple[int, int, int, int]
    label: int | None = None
    source: str = ""


# ---------------------------------------------------------------- face sources


def _haar_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
    if len(found) == 0:
        return None
    x, y, w, h = max(found, key=lambda b: b[2] * b[3])
    return int(x), int(y), int(w), int(h)


def _patch_around(rgb: np.ndarray, box: tuple[int, int, int, int], context: float = 0.8, source: str = "") -> FacePatch:
    """Cut the face with ``context`` x its size of surroundings on each side."""
    x, y, w, h = box
    H, W = rgb.shape[:2]
    x0, y0 = max(0, int(x - context * w)), max(0, int(y - context * h))
    x1, y1 = min(W, int(x + w + context * w)), min(H, int(y + h + context * h))
    return FacePatch(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (x - x0, y - y0, w, h), source=source)


def builtin_face_patches(max_lfw: int = 40) -> list[FacePatch]:
    """Faces shipped by installed packages: scikit-image's astronaut and cameraman, and LFW faces."""
    import cv2
    import skimage.data as data

    patches: list[FacePatch] = []
    astro = data.astronaut()
    patches.append(_patch_around(astro, _haar_box(astro) or (175, 45, 110, 130), source="skimage:astronaut"))
    cam = np.repeat(data.camera()[..., None], 3, axis=2)
    box = _haar_box(cam)
    if box is not None:
        patches.append(_patch_around(cam, box, source="skimage:camera"))
    lfw = data.lfw_subset()[:100]  # the first 100 are faces, 25x25 grey in [0, 1]
    for i, face in enumerate(lfw[:max_lfw]):
        g = (np.clip(face, 0, 1) * 255).astype(np.uint8)
        g = cv2.resize(g, (100, 100), interpolation=cv2.INTER_CUBIC)
        g = cv2.copyMakeBorder(g, 30, 30, 30, 30, cv2.BORDER_REFLECT_101)
        patches.append(FacePatch(np.repeat(g[..., None], 3, axis=2), (30, 30, 100, 100), source=f"skimage:lfw_subset[{i}]"))
    return patches


def fer_face_patches(csv_path: str, usage: str = "PublicTest", limit: int | None = None, seed: int = 0) -> list[FacePatch]:
    """FER2013 rows (``emotion,pixels,Usage`` CSV, .gz ok) of one Usage -> labelled face patches (48x48 + border)."""
    import cv2
    import pandas as pd

    df = pd.read_csv(csv_path)
    df = df[df["Usage"] == usage]
    if limit is not None and limit < len(df):
        df = df.sample(n=limit, random_state=seed)
    out = []
    for idx, (code, pixels) in zip(df.index, zip(df["emotion"], df["pixels"])):
        g = np.array(pixels.split(), dtype=np.uint8).reshape(48, 48)
        g = cv2.copyMakeBorder(g, 12, 12, 12, 12, cv2.BORDER_REFLECT_101)
        out.append(FacePatch(np.repeat(g[..., None], 3, axis=2), (12, 12, 48, 48), label=int(code), source=f"fer2013:{idx}"))
    return out


# ---------------------------------------------------------------- compositing


def make_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A plausible photo background: a shipped texture/photo or a generated gradient with shapes and noise."""
    import cv2
    import skimage.data as data

    h, w = size
    kind = rng.integers(0, 3)
    if kind == 0:
        src = [data.coffee, data.rocket, data.chelsea, data.brick, data.grass, data.gravel, data.hubble_deep_field][
            rng.integers(0, 7)]()
        if src.ndim == 2:
            src = np.repeat(src[..., None], 3, axis=2)
        return cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xx / w * rng.uniform(0, 1) + yy / h * rng.uniform(0, 1))[..., None]
    img = (c0 * (1 - t / t.max()) + c1 * (t / t.max())).astype(np.float32)
    for _ in range(int(rng.integers(2, 8))):
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.circle(img, center, int(rng.integers(10, max(11, min(h, w) // 3))), color, -1)
        else:
            cv2.rectangle(img, center, (center[0] + int(rng.integers(20, w // 2 + 21)), center[1] + int(rng.integers(20, h // 2 + 21))), color, -1)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _augment(patch: FacePatch, rng: np.random.Generator, face_px: int, rotate: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Scale so the face is ``face_px`` wide, maybe flip, rotate, colour-jitter. Returns pixels, face box."""
    import cv2

    px = patch.pixels
    x, y, w, h = patch.box
    s = face_px / max(w, 1)
    px = cv2.resize(px, (max(1, int(px.shape[1] * s)), max(1, int(px.shape[0] * s))),
                    interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
    x, y, w, h = x * s, y * s, w * s, h * s
    if rng.random() < 0.5:
        px = px[:, ::-1]
        x = px.shape[1] - x - w
    if rotate:
        angle = float(rng.uniform(-rotate, rotate))
        m = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), angle, 1.0)
        px = cv2.warpAffine(np.ascontiguousarray(px), m, (px.shape[1], px.shape[0]), borderMode=cv2.BORDER_REFLECT_101)
    gain = rng.uniform(0.75, 1.25, 3) * rng.uniform(0.8, 1.2)
    px = np.clip(px.astype(np.float32) * gain + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(px), (x, y, w, h)


def composite_faces(
    patches: Sequence[FacePatch],
    rng: np.random.Generator,
    *,
    canvas: tuple[int, int] = (480, 640),
    background: np.ndarray | None = None,
    face_px: tuple[int, int] = (60, 200),
    rotate: float = 12.0,
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Composite ``patches`` onto a background at random non-overlapping places and scales.

    Returns (RGB uint8 image of size ``canvas`` (h, w), the face boxes (x, y, w, h) in its pixels, in the
    order of ``patches``; a patch that found no room is dropped and its box is absent -- compare lengths).
    Faces are feathered in with an elliptical mask so no hard patch edge is left for a detector to use.
    """
    h, w = canvas
    img = (background if background is not None else make_background(rng, canvas)).astype(np.float32).copy()
    taken: list[tuple[float, float, float, float]] = []
    boxes: list[tuple[int, int, int, int]] = []
    for patch in patches:
        size = int(rng.integers(face_px[0], min(face_px[1], int(min(h, w) * 0.6)) + 1))
        px, (fx, fy, fw, fh) = _augment(patch, rng, size, rotate)
        ph, pw = px.shape[:2]
        placed = False
        for _ in range(30):
            ox = int(rng.integers(-int(fx), max(-int(fx) + 1, int(w - fx - fw))))
            oy = int(rng.integers(-int(fy), max(-int(fy) + 1, int(h - fy - fh))))
            bx, by = ox + fx, oy + fy
            if bx < 0 or by < 0 or bx + fw > w or by + fh > h:
                continue
            if any(bx < tx + tw and tx < bx + fw and by < ty + th and ty < by + fh for tx, ty, tw, th in taken):
                continue
            placed = True
            break
        if not placed:
            continue
        yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
        cx, cy = fx + fw / 2, fy + fh / 2
        rx, ry = pw / 2 * 0.98, ph / 2 * 0.98
        d = ((xx - cx) / max(rx, 1)) ** 2 + ((yy - cy) / max(ry, 1)) ** 2
        alpha = np.clip((1.0 - d) / 0.35, 0, 1)[..., None]
        x0, y0, x1, y1 = max(0, ox), max(0, oy), min(w, ox + pw), min(h, oy + ph)
        sub = px[y0 - oy:y1 - oy, x0 - ox:x1 - ox].astype(np.float32)
        a = alpha[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        img[y0:y1, x0:x1] = a * sub + (1 - a) * img[y0:y1, x0:x1]
        taken.append((bx, by, fw, fh))
        boxes.append((int(round(bx)), int(round(by)), int(round(fw)), int(round(fh))))
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def pan_clip(patches: Sequence[FacePatch], rng: np.random.Generator, *, canvas: tuple[int, int] = (480, 640),
             face_px: tuple[int, int] = (60, 200), seconds: float = 4.0, fps: int = 10, pan_px: int = 96) -> bytes:
    """An MP4 (H.264) of ``seconds``: the camera pans ``pan_px`` across a scene of ``patches`` composited by
    ``composite_faces``, so each face moves steadily through the frames, as in a handheld post."""
    import av

    h, w = (v - v % 2 for v in canvas)  # yuv420p needs even sides
    scene, _ = composite_faces(patches, rng, canvas=(h, w + pan_px), face_px=face_px, rotate=8.0)
    n = max(1, int(round(seconds * fps)))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(n):
            x = round(pan_px * i / max(1, n - 1))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(scene[:, x:x + w]), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


# ---------------------------------------------------------------- bad inputs


def huge_png_header(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression-bomb lookalike)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------- the dump


def write_dump(
    out: str | Path,
    *,
    n_images: int = 120,
    days: int = 3,
    mode: str = "bytes",
    seed: int = 7,
    canvas: tuple[int, int] = (480, 640),
    fer_csv: str | None = None,
    usage: str = "PublicTest",
    bad: bool = True,
    start: dt.date = dt.date(2024, 6, 1),
    n_videos: int = 0,
) -> dict[str, object]:
    """Write the dump (see module doc); returns a summary dict (paths, counts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    out = Path(out)
    patches = fer_face_patches(fer_csv, usage, limit=max(50, n_images * 2), seed=seed) if fer_csv else builtin_face_patches()
    labelled = fer_csv is not None
    rows_by_day: dict[int, list[dict]] = {d: [] for d in range(days)}
    labels: list[dict] = []
    face_px = (48, 160) if canvas[0] < 400 else (60, 220)
    for i in range(n_images):
        day = i % days
        campaign = CAMPAIGNS[int(rng.integers(0, len(CAMPAIGNS)))]
        n_faces = int(rng.choice([0, 1, 1, 1, 2, 2, 3], p=[0.15, 0.2, 0.2, 0.15, 0.13, 0.1, 0.07]))
        chosen = [patches[int(j)] for j in rng.integers(0, len(patches), n_faces)]
        img, boxes = composite_faces(chosen, rng, canvas=canvas, face_px=face_px)
        image_id = f"{start + dt.timedelta(days=day):%Y%m%d}-{i:05d}"
        if labelled:
            for k, (p, b) in enumerate(zip(chosen, boxes)):
                labels.append({"image_id": image_id, "face_index": k, "x": b[0], "y": b[1], "w": b[2], "h": b[3],
                               "emotion": EMOTIONS[p.label], "emotion_code": p.label, "fer_row": p.source})
        posted = dt.datetime.combine(start + dt.timedelta(days=day), dt.time(), dt.timezone.utc) + dt.timedelta(
            seconds=int(rng.integers(0, 86400)))
        rows_by_day[day].append({
            "image_id": image_id, "campaign_id": campaign, "posted_at": posted,
            "platform": PLATFORMS[int(rng.integers(0, len(PLATFORMS)))],
            "caption": CAPTIONS[int(rng.integers(0, len(CAPTIONS)))].format(c=campaign, d=day + 1),
            "likes": int(rng.integers(0, 5000)), "data": _jpeg(img, int(rng.integers(80, 96))),
        })
    for i in range(n_videos):  # video posts: 1-2 faces each, in every campaign in turn
        day = i % days
        chosen = [patches[int(j)] for j in rng.integers(0, len(patches), 1 + i % 2)]
        posted = dt.datetime.combine(start + dt.timedelta(days=day), dt.time(), dt.timezone.utc) + dt.timedelta(
            seconds=int(rng.integers(0, 86400)))
        rows_by_day[day].append({
            "image_id": f"{start + dt.timedelta(days=day):%Y%m%d}-video-{i:03d}",
            "campaign_id": CAMPAIGNS[i % len(CAMPAIGNS)], "posted_at": posted, "platform": "tiktok",
            "caption": f"Our #{CAMPAIGNS[i % len(CAMPAIGNS)]} reel, day {day + 1}", "likes": int(rng.integers(0, 20000)),
            "data": pan_clip(chosen, rng, canvas=canvas, face_px=face_px), "suffix": ".mp4",
        })
    n_bad = 0
    if bad:
        good = rows_by_day[0][0]["data"]
        bads = [("truncated", good[: len(good) // 2]), ("zero-bytes", b""), ("random-bytes", rng.bytes(3000)),
                ("huge-dimensions", huge_png_header()), ("null-cell", None)]
        for k, (name, data) in enumerate(bads):
            day = k % days
            rows_by_day[day].append({
                "image_id": f"bad-{name}", "campaign_id": CAMPAIGNS[k % len(CAMPAIGNS)],
                "posted_at": dt.datetime.combine(start + dt.timedelta(days=day), dt.time(12), dt.timezone.utc),
                "platform": "x", "caption": f"bad input: {name}", "likes": 0, "data": data,
            })
        dup = dict(rows_by_day[days - 1][0])  # the same image_id twice in one dump
        dup["caption"] = dup["caption"] + " (reposted)"
        rows_by_day[days - 1].append(dup)
        n_bad = len(bads)
        if mode == "uri":
            rows_by_day[0].append({"image_id": "bad-missing-uri", "campaign_id": CAMPAIGNS[0],
                                   "posted_at": dt.datetime.combine(start, dt.time(13), dt.timezone.utc),
                                   "platform": "x", "caption": "bad input: missing URI", "likes": 0,
                                   "data": "MISSING"})
            n_bad += 1

    dump_dir = out / ("folders" if mode == "folders" else "dump")
    n_rows = 0
    for day, rows in rows_by_day.items():
        date = start + dt.timedelta(days=day)
        if mode == "folders":
            for r in rows:
                if r["data"] is None or r["data"] == "MISSING":
                    continue
                p = dump_dir / f"campaign_id={r['campaign_id']}" / f"{r['image_id']}{r.get('suffix', '.jpg')}"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(r["data"])
                n_rows += 1
            continue
        if mode == "uri":
            for r in rows:
                if r["data"] == "MISSING":
                    r["uri"] = str((out / "images" / "does-not-exist.jpg").resolve())
                elif r["data"] is None:
                    r["uri"] = None
                else:
                    p = out / "images" / f"date={date}" / f"{r['image_id']}-{n_rows}{r.get('suffix', '.jpg')}"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(r["data"])
                    r["uri"] = str(p.resolve())
                n_rows += 1
            payload = pa.field("uri", pa.string())
            values = [r["uri"] for r in rows]
        else:
            payload = pa.field("image", pa.binary())
            values = [r["data"] for r in rows]
            n_rows += len(rows)
        schema = pa.schema([pa.field("image_id", pa.string()), pa.field("campaign_id", pa.string()),
                            pa.field("posted_at", pa.timestamp("us", tz="UTC")), pa.field("platform", pa.string()),
                            pa.field("caption", pa.string()), pa.field("likes", pa.int64()), payload])
        table = pa.table({
            "image_id": [r["image_id"] for r in rows], "campaign_id": [r["campaign_id"] for r in rows],
            "posted_at": [r["posted_at"] for r in rows], "platform": [r["platform"] for r in rows],
            "caption": [r["caption"] for r in rows], "likes": [r["likes"] for r in rows], payload.name: values,
        }, schema=schema)
        part = dump_dir / f"date={date}" / "part-00000.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part)
    labels_path = None
    if labelled:
        labels_path = out / "labels.parquet"
        pq.write_table(pa.Table.from_pylist(labels), labels_path)
    return {"dump": str(dump_dir), "rows": n_rows, "images": n_images, "videos": n_videos, "bad": n_bad, "days": days,
            "labels": str(labels_path) if labels_path else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="sample_data", help="output folder (default sample_data)")
    p.add_argument("--n-images", type=int, default=120)
    p.add_argument("--n-videos", type=int, default=3, help="video posts (short MP4 clips) among them (default 3)")
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--mode", choices=("bytes", "uri", "folders"), default="bytes")
    p.add_argument("--size", default="640x480", help="photo size WxH (default 640x480)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--fer-csv", help="FER2013 CSV (emotion,pixels,Usage; .gz ok): composite its faces, keep labels")
    p.add_argument("--usage", default="PublicTest", help="FER2013 Usage to draw faces from (default PublicTest)")
    p.add_argument("--no-bad", action="store_true", help="leave out the bad inputs")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    info = write_dump(args.out, n_images=args.n_images, days=args.days, mode=args.mode, seed=args.seed,
                      canvas=(h, w), fer_csv=args.fer_csv, usage=args.usage, bad=not args.no_bad,
                      n_videos=args.n_videos)
    print(f"sample dump: {info['dump']} ({info['rows']} rows: {info['images']} photos, {info['videos']} videos, "
          f"{info['bad']} bad inputs, "
          f"{info['days']} days)" + (f"; labels: {info['labels']}" if info["labels"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
