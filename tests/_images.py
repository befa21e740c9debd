"""Shared test helpers: a real face photo with its hand-checked face box, and image encoders.

The astronaut box was determined by inspection (a crop with the box drawn, viewed at 3x):
forehead/hairline to chin, cheek to cheek. Eyes are the pupil centres.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# skimage.data.astronaut(): 512 x 512 RGB, one face (Eileen Collins).
ASTRONAUT_FACE_XYXY = (180.0, 62.0, 268.0, 180.0)
ASTRONAUT_EYES = ((203.0, 103.0), (246.0, 103.0))  # image-left eye first, like RetinaFace


def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB face photo shipped with scikit-image (no download)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def paste(img: np.ndarray, *, canvas_hw: tuple[int, int], scale: float, offset_xy: tuple[int, int],
          fill: int = 128) -> np.ndarray:
    """Resize ``img`` by ``scale`` and paste it at ``offset_xy`` on a flat grey canvas."""
    import cv2

    h, w = img.shape[:2]
    nw, nh = round(w * scale), round(h * scale)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    canvas = np.full((*canvas_hw, 3), fill, np.uint8)
    x, y = offset_xy
    canvas[y:y + nh, x:x + nw] = small
    return canvas


def map_box(xyxy: tuple[float, float, float, float], scale: float, offset_xy: tuple[int, int]) -> np.ndarray:
    """Where a box lands after ``paste`` with that scale/offset."""
    b = np.asarray(xyxy, np.float64) * scale
    return b + np.array([offset_xy[0], offset_xy[1], offset_xy[0], offset_xy[1]], np.float64)


def xywh_to_xyxy(box: tuple[float, float, float, float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], np.float64)


def encode(img: np.ndarray | Image.Image, fmt: str, **save_kw) -> bytes:
    """Encode with Pillow (``fmt`` like "JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")."""
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **save_kw)
    return buf.getvalue()


def quadrants(h: int = 60, w: int = 80) -> np.ndarray:
    """An asymmetric test card: red TL, green TR, blue BL, white BR (orientation is checkable)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, : w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    return img


def quadrant_colours(img: np.ndarray) -> list[tuple[int, int, int]]:
    """Mean colour of the centre of each quadrant TL, TR, BL, BR, rounded to 0/255 per channel."""
    h, w = img.shape[:2]
    out = []
    for (ys, xs) in [((0, h // 2), (0, w // 2)), ((0, h // 2), (w // 2, w)),
                     ((h // 2, h), (0, w // 2)), ((h // 2, h), (w // 2, w))]:
        y0, y1 = ys
        x0, x1 = xs
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        patch = img[max(cy - 3, 0):cy + 4, max(cx - 3, 0):cx + 4].reshape(-1, 3).mean(axis=0)
        out.append(tuple(int(255 if v > 127 else 0) for v in patch))
    return out
