"""Image bytes -> RGB uint8 pixels, safely.

Pillow reads the header lazily, so the pixel limit is checked BEFORE any pixel is decoded (a 1.2 MB
PNG can declare 20000x20000 = 1.2 GB of RGB). Complete RGB/grey JPEGs (the bulk of campaign photos)
are then decoded by OpenCV, about 2x faster than Pillow on large photos; everything else goes through
Pillow, which raises on truncated files (OpenCV silently returns a half-grey JPEG) and handles every
mode we meet (grey, palette, alpha, CMYK, 16-bit), GIF, AVIF and, through pillow-heif, the HEIC/HEIF photos
of phones. EXIF orientation is applied on both paths
(read once from the header) so boxes are in the pixels a person sees. Every failure becomes a typed
``ImageError`` with a ``.status``.
"""
from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from fer_core.errors import DecodeError, EmptyImageError, ImageTooLargeError, VideoBytesError
from fer_core.sniff import sniff_container

__all__ = ["decode_image", "image_size", "image_glob", "describe_bytes", "check_byte_size", "DEFAULT_MAX_PIXELS",
           "DEFAULT_MAX_BYTES", "IMAGE_SUFFIXES"]

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # the pipeline config's max_bytes default: no real photo is near it

try:  # HEIC/HEIF (iPhone photos) as a Pillow format; libheif applies the container's rotation
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF_ERROR = ""
except ImportError as exc:  # a trimmed install: HEIC files become decode_error rows that say so
    _HEIF_ERROR = str(exc)

# File-name suffixes of the formats decode_image reads (image folders are filtered on these, any case).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                                   ".heic", ".heif", ".avif")
_SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF, AVIF"
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def image_glob(suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> str:
    """A glob matching those suffixes in any case: ``*.{[jJ][pP][gG],...}``.

    Spark's pathGlobFilter and fnmatchcase are case-sensitive, and cameras write ``IMG_0001.JPG`` and
    ``IMG_0001.HEIC`` as often as ``.jpg``: a lower-case pattern would skip them.
    """
    def any_case(text: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in text)

    return "*.{" + ",".join(any_case(s.lstrip(".")) for s in suffixes) + "}"

# EXIF Orientation tag value -> the transpose that undoes it (same table as PIL.ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112


def _as_bytes(data: bytes | bytearray | memoryview | None) -> bytes:
    if data is None:
        raise EmptyImageError("image is None (empty cell); check the export that produced the dump")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"image must be bytes, got {type(data).__name__}; pass the raw file bytes")
    data = bytes(data)
    if not data:
        raise EmptyImageError("image has zero bytes (empty cell or zero-byte file); re-export or re-upload it")
    return data


def _open_unchecked(data: bytes) -> Image.Image:
    """Open lazily with every registered format, WITHOUT Pillow's global bomb check.

    Only used when Image.open refuses a huge image, so we still learn its real size and apply OUR limit.
    """
    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            return factory(io.BytesIO(data), None)
        except Exception:  # that plugin does not understand the bytes; try the next one
            continue
    raise DecodeError("not a recognised image format")


def _open(data: bytes) -> Image.Image:
    """Lazy Image.open (header only) mapping every failure onto DecodeError."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        return _open_unchecked(data)
    except UnidentifiedImageError:
        video = sniff_container(data)
        if video is not None:  # never "gif": Pillow opens every GIF, so it does not get here
            raise VideoBytesError(
                f"bytes are a {video.upper()} video, not an image ({len(data):,} bytes); "
                "score them as a video post (fer_core.video.sample_frames)", container=video) from None
        if _HEIF_ERROR and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            raise DecodeError(f"HEIC/HEIF image, but pillow-heif is not importable ({_HEIF_ERROR}); "
                              "pip install pillow-heif (a dependency of this package) and run again") from None
        raise DecodeError(
            f"not a recognised image format: {describe_bytes(data)}. Supported: {_SUPPORTED}"
        ) from None
    except Exception as e:  # corrupt headers raise SyntaxError, ValueError, struct.error, OSError...
        raise DecodeError(f"corrupt image header ({type(e).__name__}: {e}); re-export the file") from None


# Containers that reach the image decoder by mistake, recognised by their magic bytes (named, never echoed).
_KNOWN_CONTAINERS: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "an MP4/MOV/3GP video or other ISO media file"), (0, b"\x1aE\xdf\xa3", "a WebM/Matroska video"),
    (0, b"%PDF", "a PDF document"), (0, b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (0, b"\x1f\x8b", "gzip-compressed data"), (0, b"PAR1", "a Parquet file"), (0, b"RIFF", "a RIFF file (AVI/WAV?)"),
    (0, b"ID3", "an MP3 audio file"), (0, b"OggS", "an Ogg media file"),
)


def describe_bytes(data: bytes) -> str:
    """What some unreadable bytes look like, WITHOUT quoting them: ``text or HTML, 1,294 bytes``.

    Error messages end up in tables, logs and dashboards; the bytes may be a credentials file or an
    internal page fetched by mistake, so only their kind and size are ever reported.
    """
    size = f"{len(data):,} bytes"
    for offset, magic, kind in _KNOWN_CONTAINERS:
        if data[offset:offset + len(magic)] == magic:
            return f"{kind}, {size}"
    if _looks_like_text(data):
        return f"text or HTML (an error page or a wrong column?), {size}"
    return f"unknown binary data, {size}"


def _looks_like_text(data: bytes) -> bool:
    sample = data[:512]
    return bool(sample) and re.fullmatch(rb"[\x09\x0a\x0d\x20-\x7e]*", sample) is not None


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value) if int(value) in _ORIENTATION else 1
    except Exception:  # a broken EXIF block must not make the whole image unreadable
        return 1


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    w, h = im.size
    return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF orientation applied), from the header only; None if unreadable.

    Cheap enough to call on every row before deciding to decode: no pixel is decompressed.
    """
    try:
        data = _as_bytes(data)
        with _open(data) as im:
            return _oriented_size(im)
    except Exception:
        return None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB. Transparent pixels are composited on white."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3:4].astype(np.uint16)
        rgb = rgba[..., :3].astype(np.uint16)
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grey (PNG/TIFF)
        grey = np.asarray(im)
        if grey.dtype.kind == "f":
            grey = grey * 255.0 if np.nanmax(grey, initial=0.0) <= 1.0 else grey
            grey = np.clip(np.nan_to_num(grey), 0, 255).astype(np.uint8)
        elif mode.startswith("I;16") or grey.max(initial=0) > 255:
            grey = (grey.astype(np.uint32) // 257).clip(0, 255).astype(np.uint8)
        else:
            grey = grey.clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))  # L, 1, P, CMYK, YCbCr, LAB, HSV, I;16-less modes


def _ends_with_eoi(data: bytes) -> bool:
    """A complete JPEG ends with the EOI marker (FF D9), possibly followed by zero padding.

    OpenCV decodes a truncated JPEG silently (grey bottom), so it only gets files that end properly;
    the rest (truncated, or with trailing data) go through Pillow, which raises on truncation.
    """
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def _decode_jpeg_cv2(data: bytes, w: int, h: int) -> np.ndarray | None:
    """Fast path (about 2x Pillow on large photos): OpenCV/libjpeg-turbo, EXIF handled by us."""
    import cv2

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    if bgr is None or bgr.shape[:2] != (h, w):
        return None  # let Pillow decide and explain
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an array, like Image.transpose(_ORIENTATION[orientation])."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: a.transpose(1, 0, 2)[:, ::-1],  # 90 degrees clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: a.transpose(1, 0, 2)[::-1],  # 90 degrees counter-clockwise
    }
    if orientation in ops:
        rgb = ops[orientation](rgb)
    return np.ascontiguousarray(rgb)


def check_byte_size(n_bytes: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuse an image file before reading it: ImageTooLargeError when it holds more than ``max_bytes``.

    The pixel limit needs the header; this one needs only the size, so an oversized upload or file is
    refused without ever being held in memory.
    """
    if n_bytes > max_bytes:
        raise ImageTooLargeError(
            f"file holds {n_bytes:,} bytes, more than max_bytes={max_bytes:,}; "
            f"recompress or downscale it before scoring, or raise max_bytes"
        )


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to (H, W, 3) uint8 RGB, EXIF orientation applied, first frame only.

    Raises EmptyImageError (no bytes), ImageTooLargeError (header declares more than ``max_pixels``,
    checked before decoding) or DecodeError (anything else unreadable). Never raises raw PIL errors.
    """
    data = _as_bytes(data)
    with _open(data) as im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise DecodeError(f"image header declares an empty size {w}x{h}; re-export the file")
        if w * h > max_pixels:
            raise ImageTooLargeError(
                f"image header declares {w}x{h} = {w * h:,} pixels, more than max_pixels={max_pixels:,} "
                f"(about {3 * w * h / 1e9:.1f} GB once decoded); downscale it before scoring or raise max_pixels"
            )
        fmt = im.format or "unknown"
        orientation = _orientation(im)
        if fmt == "JPEG" and im.mode in ("RGB", "L") and _ends_with_eoi(data):
            rgb = _decode_jpeg_cv2(data, w, h)
            if rgb is not None:
                return _apply_orientation(rgb, orientation)
        try:
            im.seek(0)  # first frame of GIF / animated WebP / multi-page TIFF
            im.load()
            if orientation != 1:
                im = im.transpose(_ORIENTATION[orientation])
            rgb = _to_rgb(im)
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as e:
            what = "truncated" if "truncated" in str(e).lower() or isinstance(e, EOFError) else "corrupt"
            raise DecodeError(
                f"{fmt} image is {what} ({type(e).__name__}: {e}); {len(data)} bytes were given. "
                f"Re-download or re-export the file"
            ) from None
        except Exception as e:  # any other plugin failure must still be a per-image error
            raise DecodeError(f"{fmt} image could not be decoded ({type(e).__name__}: {e})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DecodeError(f"{fmt} image decoded to an unexpected array {rgb.shape} {rgb.dtype}")
    return np.require(rgb, requirements=["C_CONTIGUOUS", "WRITEABLE"])  # Pillow's buffer is read-only
