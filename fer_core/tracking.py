"""Link the faces of sampled video frames into tracks (one person = one track), numpy only.

Frames are sampled sparsely (1 per second by default), so a face may move far between two samples:
each track predicts where its face is now from its last two sightings (constant velocity), and a
face joins the track whose prediction it matches best. The match cost of a (track, face) pair is

    (1 - IoU(predicted box, box)) + landmark distance / face size

where the landmark distance is the mean distance of the 5 RetinaFace landmarks (box centres when a
detector gives none) and face size is sqrt(box area). A pair is allowed when that normalised
distance is at most ``max_distance`` and the two areas differ by at most ``max_scale_change``;
allowed pairs are assigned greedily, cheapest first (with a handful of faces per frame, greedy and
Hungarian agree except in contrived ties). A track not seen for more than ``max_gap_frames``
sampled frames or ``max_gap_ms`` ends: someone who leaves and comes back later gets a new track.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fer_core.types import Face

__all__ = ["TrackOptions", "TrackSummary", "link_tracks", "track_summary"]


@dataclass(frozen=True)
class TrackOptions:
    """max_distance: allowed landmark (or centre) distance after prediction, in face sizes.
    max_scale_change: allowed ratio of face areas between sightings (a far face is not a near one).
    max_gap_frames / max_gap_ms: a track missing for longer than either ends."""

    max_distance: float = 1.0
    max_scale_change: float = 2.5
    max_gap_frames: int = 2
    max_gap_ms: int = 3000

    def __post_init__(self) -> None:
        from fer_core.errors import ConfigError

        for key in ("max_distance", "max_scale_change"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key}: must be > 0, got {getattr(self, key)!r}")
        if self.max_scale_change < 1:
            raise ConfigError(f"max_scale_change: must be >= 1 (a ratio of areas), got {self.max_scale_change!r}")
        for key in ("max_gap_frames", "max_gap_ms"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0, got {getattr(self, key)!r}")


@dataclass
class _Track:
    track_id: int
    frame: int  # index of the last sampled frame it was seen in
    ms: int
    box: np.ndarray  # (4,) x, y, w, h
    points: np.ndarray  # (5, 2) landmarks, or (1, 2) box centre
    velocity_box: np.ndarray  # per ms
    velocity_points: np.ndarray

    def predict(self, ms: int) -> tuple[np.ndarray, np.ndarray]:
        dt = ms - self.ms
        return self.box + self.velocity_box * dt, self.points + self.velocity_points * dt


def _points(face: Face) -> np.ndarray:
    marks = np.asarray(face.landmarks, np.float64).reshape(-1, 2)
    if marks.shape == (5, 2) and np.isfinite(marks).all():
        return marks
    x, y, w, h = face.box
    return np.array([[x + w / 2, y + h / 2]], np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ax1, ay1, aw, ah = a
    bx1, by1, bw, bh = b
    iw = max(0.0, min(ax1 + aw, bx1 + bw) - max(ax1, bx1))
    ih = max(0.0, min(ay1 + ah, by1 + bh) - max(ay1, by1))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def link_tracks(faces_per_frame: Sequence[Sequence[Face]], frame_ms: Sequence[int],
                opts: TrackOptions | None = None) -> list[list[int]]:
    """Track id (0, 1, ... in order of first appearance) of every face of every sampled frame.

    ``faces_per_frame[i]`` are the faces of sampled frame i, taken at ``frame_ms[i]`` (increasing).
    The result has the same shape: ``ids[i][j]`` is the track of ``faces_per_frame[i][j]``.
    """
    opts = opts or TrackOptions()
    if len(faces_per_frame) != len(frame_ms):
        raise ValueError(f"{len(faces_per_frame)} frames of faces but {len(frame_ms)} frame_ms values")
    active: list[_Track] = []
    next_id = 0
    ids: list[list[int]] = []
    for i, (faces, ms) in enumerate(zip(faces_per_frame, frame_ms)):
        ms = int(ms)
        active = [t for t in active if i - t.frame <= opts.max_gap_frames + 1 and ms - t.ms <= opts.max_gap_ms]
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(active):
            pred_box, pred_points = track.predict(ms)
            pred_area = max(pred_box[2] * pred_box[3], 1e-6)
            for fj, face in enumerate(faces):
                box = np.asarray(face.box, np.float64)
                points = _points(face)
                area = max(face.area, 1e-6)
                if max(area / pred_area, pred_area / area) > opts.max_scale_change:
                    continue
                if points.shape != pred_points.shape:  # landmarks on one side only: compare centres
                    points, ref = points.mean(axis=0, keepdims=True), pred_points.mean(axis=0, keepdims=True)
                else:
                    ref = pred_points
                distance = float(np.linalg.norm(points - ref, axis=1).mean()) / np.sqrt(max(area, pred_area))
                if distance <= opts.max_distance:
                    pairs.append(((1.0 - _iou(pred_box, box)) + distance, ti, fj))
        pairs.sort()
        frame_ids = [-1] * len(faces)
        used_tracks: set[int] = set()
        for _, ti, fj in pairs:
            if ti in used_tracks or frame_ids[fj] >= 0:
                continue
            used_tracks.add(ti)
            track = active[ti]
            frame_ids[fj] = track.track_id
            box, points = np.asarray(faces[fj].box, np.float64), _points(faces[fj])
            dt = max(ms - track.ms, 1)
            track.velocity_box = (box - track.box) / dt
            track.velocity_points = ((points - track.points) / dt if points.shape == track.points.shape
                                     else np.zeros_like(points))
            track.frame, track.ms, track.box, track.points = i, ms, box, points
        for fj, face in enumerate(faces):
            if frame_ids[fj] < 0:
                points = _points(face)
                active.append(_Track(next_id, i, ms, np.asarray(face.box, np.float64), points,
                                     np.zeros(4), np.zeros_like(points)))
                frame_ids[fj] = next_id
                next_id += 1
        ids.append(frame_ids)
    return ids


@dataclass
class TrackSummary:
    """One track: its area-weighted mean probabilities and where it was seen.

    area_sum is the sum of its face areas over the frames it was seen in, i.e. mean area x frames
    seen: the weight a video's own aggregate gives this track.
    """

    track_id: int
    probabilities: np.ndarray  # (n_classes,) float64, sums to 1
    frames_seen: int
    first_ms: int
    last_ms: int
    area_sum: float


def track_summary(track_ids: Sequence[Sequence[int]], faces_per_frame: Sequence[Sequence[Face]],
                  probabilities_per_frame: Sequence[np.ndarray], frame_ms: Sequence[int]) -> list[TrackSummary]:
    """Per track (sorted by id): probabilities averaged over its faces weighted by face area.

    A face seen large (near the camera) says more about its expression than a thumbnail of it,
    so bigger sightings weigh more. ``probabilities_per_frame[i]`` is (len(faces_per_frame[i]), C).
    """
    sums: dict[int, np.ndarray] = {}
    weight: dict[int, float] = {}
    seen: dict[int, list[int]] = {}
    for ids, faces, probs, ms in zip(track_ids, faces_per_frame, probabilities_per_frame, frame_ms, strict=True):
        probs = np.asarray(probs, np.float64).reshape(len(faces), -1) if len(faces) else probs
        if len(ids) != len(faces):
            raise ValueError(f"frame at {ms} ms: {len(ids)} track ids for {len(faces)} faces")
        for tid, face, p in zip(ids, faces, probs):
            area = max(face.area, 1e-6)
            sums[tid] = sums.get(tid, 0.0) + area * p
            weight[tid] = weight.get(tid, 0.0) + area
            seen.setdefault(tid, []).append(int(ms))
    return [TrackSummary(tid, sums[tid] / weight[tid], len(seen[tid]), min(seen[tid]), max(seen[tid]), weight[tid])
            for tid in sorted(sums)]
