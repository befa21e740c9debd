"""Gallery thumbnails made at render time from the source images.

The tables hold no pixels, only ``source`` (a path/URI, or a marker for bytes that were
inline in the dump). Bytes come from the job's ``image_bytes_loader(image_id, source)``
when given, else from ``source`` through fsspec. Decoding reuses fer_core.decode so the
pixels (EXIF orientation included) are the ones the face boxes were measured on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fer_core.storage import fsspec_options

BytesLoader = Callable[[str, "str | None"], "bytes | None"]

MAX_SOURCE_BYTES = 64 * 1024 * 1024
THUMB_SIDE = 360
CROP_SIDE = 112
JPEG_QUALITY = 82
BLUR_MARGIN = 0.25
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
DUMP_ID_COLUMN, DUMP_IMAGE_COLUMN = "image_id", "image"
"""Column names of a bytes dump (the job's defaults); other layouts need image_bytes_loader."""


class ThumbnailError(Exception):
    """A thumbnail could not be made; the message is shown in place of the image."""


@dataclass
class GalleryImage:
    """What the template needs for one gallery card (paths relative to the page)."""

    image_id: str
    thumb: str | None = None
    problem: str | None = None
    faces: list[dict] = field(default_factory=list)  # per face: index, emotion, p, valence, colour, overlay
    explain_note: str | None = None


# ----------------------------------------------------------------------------- reading bytes


def default_loader(storage_options: Mapping[str, str] | None = None) -> BytesLoader:
    """Read ``source`` as a local path or fsspec URI (s3://, gs://, file://, http://...)."""

    def load(image_id: str, source: str | None) -> bytes:
        if not source:
            raise ThumbnailError("no source recorded for this image")
        if "://" not in source and not Path(source).is_file():
            raise ThumbnailError(
                f"source {source[:80]!r} is not a readable file or URI (bytes inline in the dump?); "
                "pass image_bytes_loader to render_dashboards to show these thumbnails")
        import fsspec

        options = fsspec_options(source, storage_options)
        if source.lower().endswith(PARQUET_SUFFIXES):
            return _parquet_cell(source, image_id, options)
        try:
            with fsspec.open(source, "rb", **options) as fh:
                data = fh.read(MAX_SOURCE_BYTES + 1)
        except Exception as exc:  # fsspec backends raise many types
            raise ThumbnailError(f"could not read {source[:120]!r}: {type(exc).__name__}: {exc}") from exc
        if len(data) > MAX_SOURCE_BYTES:
            raise ThumbnailError(f"source is larger than {MAX_SOURCE_BYTES // 2**20} MiB; not thumbnailed")
        return data

    return load


def chain_loaders(first: BytesLoader, fallback: BytesLoader) -> BytesLoader:
    """Ask ``first`` (the job's loader); when it returns None, read the source with ``fallback``.

    The job knows inline-bytes dumps; plain paths and URIs are easier read directly.
    """

    def load(image_id: str, source: str | None) -> bytes | None:
        try:
            data = first(image_id, source)
        except ThumbnailError:
            raise
        except Exception as exc:
            raise ThumbnailError(f"image_bytes_loader failed: {type(exc).__name__}: {exc}") from exc
        return data if data is not None else fallback(image_id, source)

    return load


def _parquet_cell(source: str, image_id: str, options: dict) -> bytes:
    """The image bytes of one row of a Parquet dump (the job's default column names)."""
    import fsspec
    import pyarrow.parquet as pq

    try:
        with fsspec.open(source, "rb", **options) as fh:
            table = pq.read_table(fh, columns=[DUMP_IMAGE_COLUMN], filters=[(DUMP_ID_COLUMN, "=", image_id)])
    except Exception as exc:
        raise ThumbnailError(
            f"the image bytes sit inline in the Parquet dump {source[:120]!r} and could not be read with the "
            f"default columns {DUMP_ID_COLUMN!r}/{DUMP_IMAGE_COLUMN!r} ({type(exc).__name__}: {exc}); "
            "pass image_bytes_loader to render_dashboards") from exc
    if table.num_rows == 0 or table.column(0)[0].as_py() is None:
        raise ThumbnailError(f"image {image_id!r} has no bytes in the dump {source[:120]!r}")
    data = table.column(0)[0].as_py()
    if len(data) > MAX_SOURCE_BYTES:
        raise ThumbnailError(f"source is larger than {MAX_SOURCE_BYTES // 2**20} MiB; not thumbnailed")
    return data


def load_rgb(loader: BytesLoader, image_id: str, source: str | None, frame_ms: int | None = None) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB, or ThumbnailError saying why not. ``frame_ms``: the source is a
    video post; its frame at that time (fer_core.video.frame_at: the frame the job sampled there)."""
    try:
        data = loader(image_id, source)
    except ThumbnailError:
        raise
    except Exception as exc:
        raise ThumbnailError(f"reading the image failed: {type(exc).__name__}: {exc}") from exc
    if not data:
        raise ThumbnailError("the image source holds no bytes")
    from fer_core.decode import decode_image
    from fer_core.errors import ImageError

    if frame_ms is not None:
        from fer_core.video import frame_at

        try:
            return frame_at(bytes(data), int(frame_ms))
        except ImageError as exc:
            raise ThumbnailError(f"could not decode the video's frame at {int(frame_ms)} ms: {exc}") from exc
    try:
        return decode_image(bytes(data))
    except ImageError as exc:
        raise ThumbnailError(f"could not decode the image: {exc}") from exc


# ----------------------------------------------------------------------------- drawing


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def pixelate(img: Image.Image, box: tuple[int, int, int, int]) -> None:
    """Make the region unrecognisable in place: coarse blocks, then a blur over them."""
    x0, y0, x1, y1 = box
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    region = img.crop(box)
    small = region.resize((max(1, (x1 - x0) // 12), max(1, (y1 - y0) // 12)), Image.Resampling.BILINEAR)
    coarse = small.resize(region.size, Image.Resampling.NEAREST)
    img.paste(coarse.filter(ImageFilter.GaussianBlur(radius=max(2, (x1 - x0) // 10))), box)


def blur_whole(img: Image.Image) -> Image.Image:
    """A face crop (e.g. a Grad-CAM overlay) made unrecognisable while keeping its colours."""
    out = img.copy()
    pixelate(out, (0, 0, out.width, out.height))
    return out


def make_thumbnail(rgb: np.ndarray, faces: Sequence[dict], colours: Sequence[str], *,
                   blur: bool, table_size: tuple[int | None, int | None] = (None, None),
                   labels: Sequence[str] | None = None) -> Image.Image:
    """Downscaled image with numbered face boxes in each face's emotion colour.

    Boxes are in original pixels; if the decoded size differs from the table's
    width/height (a source changed since scoring), they are rescaled to fit. ``labels``: the text of each
    box (default 1, 2, ...; a video frame's boxes carry the number of their track).
    """
    img = Image.fromarray(rgb)
    w0, h0 = img.size
    tw, th = table_size
    sx = w0 / tw if tw else 1.0
    sy = h0 / th if th else 1.0
    scale = min(1.0, THUMB_SIDE / max(w0, h0))
    thumb = img.resize((max(1, round(w0 * scale)), max(1, round(h0 * scale))), Image.Resampling.LANCZOS)
    boxes = []
    for face in faces:
        x0 = int(round(float(face["x"] or 0) * sx * scale))
        y0 = int(round(float(face["y"] or 0) * sy * scale))
        x1 = int(round((float(face["x"] or 0) + float(face["w"] or 0)) * sx * scale))
        y1 = int(round((float(face["y"] or 0) + float(face["h"] or 0)) * sy * scale))
        boxes.append((max(0, x0), max(0, y0), min(thumb.width, x1), min(thumb.height, y1)))
    if blur:
        for x0, y0, x1, y1 in boxes:  # detector boxes are tight: blur a margin of hair and jaw too
            mx, my = (x1 - x0) * BLUR_MARGIN, (y1 - y0) * BLUR_MARGIN
            pixelate(thumb, (max(0, int(x0 - mx)), max(0, int(y0 - my)),
                             min(thumb.width, int(x1 + mx)), min(thumb.height, int(y1 + my))))
    draw = ImageDraw.Draw(thumb)
    font = _font(13)
    line = max(2, round(thumb.width / 180))
    for n, (box, colour) in enumerate(zip(boxes, colours), start=1):
        draw.rectangle(box, outline=colour, width=line)
        label = str(n) if labels is None else str(labels[n - 1])
        tx, ty = box[0], max(0, box[1] - 16)
        tb = draw.textbbox((tx + 3, ty + 1), label, font=font)
        draw.rectangle((tx, ty, tb[2] + 3, ty + 16), fill=colour)
        draw.text((tx + 3, ty + 1), label, fill="#ffffff", font=font)
    return thumb


def save_jpeg(img: Image.Image | np.ndarray, path: Path, side: int | None = None) -> None:
    """Write a small JPEG (optionally resized to ``side`` x ``side``)."""
    pil = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    if side and pil.size != (side, side):
        pil = pil.resize((side, side), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.convert("RGB").save(path, "JPEG", quality=JPEG_QUALITY, optimize=True)
