"""What a person is shown of scored images: the ``predict --json`` document and the annotated picture.

One home for both, because the command line (``python -m fer_core predict``) and the local page
(``python -m fer_core serve``) must show the same figures: the page's JSON download is the text
``json_document`` makes here, byte for byte what ``predict --json`` prints for the same file.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from fer_core.labels import EMOTION_COLORS, EMOTIONS
from fer_core.types import ImageResult

__all__ = ["image_record", "json_document", "annotate", "hex_to_rgb"]


def image_record(name: str, result: ImageResult, scoring_id: str | None = None) -> dict[str, Any]:
    """The JSON object of one image: image, status, error, width, height, media_type (image | video),
    duration_s, n_frames (frames scored), scoring_id (fer_core.identity: the job writes the same string
    on its rows for the same config), faces[box, score, landmarks, probabilities{7}, emotion,
    sentiment, valence, frame_ms, track_id, quality], tracks (a video's: track_id, first_ms, last_ms,
    n_frames, probabilities{7}, emotion, sentiment, valence, quality; null for a photo); numbers rounded. A video's faces are one
    per face per sampled frame, frame_ms its time and track_id the person (both null for photos)."""
    faces = []
    for fr in result.faces:
        lms = np.asarray(fr.face.landmarks, np.float64)
        faces.append({
            "box": [round(float(v), 2) for v in fr.face.box],
            "score": round(float(fr.face.score), 4),
            # null when the detector gives no landmarks (e.g. Haar): JSON has no NaN
            "landmarks": np.round(lms, 2).tolist() if np.isfinite(lms).all() else None,
            "probabilities": {e: round(float(p), 4) for e, p in zip(EMOTIONS, fr.probabilities)},
            "emotion": fr.emotion,
            "sentiment": fr.sentiment,
            "valence": round(float(fr.valence), 4),
            "frame_ms": fr.frame_ms,
            "track_id": fr.track_id,
            "quality": None if fr.quality is None else {
                "flag": fr.quality.quality, "face_px": round(fr.quality.face_px, 1),
                "sharpness": round(fr.quality.sharpness, 3), "brightness": round(fr.quality.brightness, 1),
                "yaw": None if fr.quality.yaw is None else round(fr.quality.yaw, 1),
                "pitch": None if fr.quality.pitch is None else round(fr.quality.pitch, 1)},
        })
    duration = None if result.duration_s is None else round(float(result.duration_s), 3)
    return {"image": name, "status": result.status, "error": result.error,
            "width": result.width, "height": result.height, "media_type": result.media_type,
            "duration_s": duration, "n_frames": result.n_frames, "scoring_id": scoring_id, "faces": faces,
            "tracks": _tracks(result)}


def _tracks(result: ImageResult) -> list[dict[str, Any]] | None:
    """A video's tracks (one person across its sampled frames), by the rule the job's tracks table and
    campaign KPIs use (fer_core.kpis.video_tracks); None for a photo."""
    if result.media_type != "video":
        return None
    from fer_core.tables import image_rows, track_rows

    _, faces = image_rows(result, {}, model_version="", detector_version="", run_id="", scored_at=None)
    return [{"track_id": t["track_id"], "first_ms": t["first_ms"], "last_ms": t["last_ms"], "n_frames": t["n_frames"],
             "probabilities": {e: round(float(t[f"p_{e}"]), 4) for e in EMOTIONS}, "emotion": t["emotion"],
             "sentiment": t["sentiment"], "valence": round(float(t["valence"]), 4), "quality": t["quality"]}
            for t in track_rows(faces)]


def json_document(records: Sequence[dict[str, Any]]) -> str:
    """The ``--json`` output: one JSON list, one object per image, newline-terminated."""
    return json.dumps(list(records), indent=2) + "\n"


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` -> (r, g, b)."""
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _readable_on(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on that background (relative luminance)."""
    r, g, b = rgb
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def annotate(image: np.ndarray, result: ImageResult) -> np.ndarray:
    """RGB image with each face's box and landmarks in its emotion's colour and a label
    "<n> <emotion> <p> (<valence>)"; n counts from 1 in the order of the JSON's faces."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    thick = max(1, round(max(out.shape[:2]) / 400))
    for n, fr in enumerate(result.faces, start=1):
        x, y, w, h = (int(round(v)) for v in fr.face.box)
        colour = hex_to_rgb(EMOTION_COLORS.get(fr.emotion, "#ffffff"))
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick)
        for lx, ly in fr.face.landmarks:
            if np.isfinite(lx) and np.isfinite(ly):
                cv2.circle(out, (int(lx), int(ly)), thick + 1, colour, -1)
        label = f"{n} {fr.emotion} {float(fr.probabilities.max()):.2f} ({fr.valence:+.2f})"
        scale = 0.4 * thick
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else y + h + th + 4
        cv2.rectangle(out, (x, ty - th - base), (x + tw, ty + base), colour, -1)
        cv2.putText(out, label, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, _readable_on(colour), thick, cv2.LINE_AA)
    return out
