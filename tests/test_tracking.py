"""fer_core.tracking: linking faces across sampled frames, and per-track summaries."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.errors import ConfigError
from fer_core.tracking import TrackOptions, link_tracks, track_summary
from fer_core.types import Face

# Landmarks of a face box as fractions of (w, h): eyes, nose, mouth corners (image-left first).
_MARKS = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)


def face(x: float, y: float, size: float = 80.0, landmarks: bool = True) -> Face:
    marks = (np.array([x, y]) + _MARKS * size).astype(np.float32) if landmarks else np.full((5, 2), np.nan, np.float32)
    return Face(box=(x, y, size, size), score=0.99, landmarks=marks)


def ms(n: int, step: int = 1000) -> list[int]:
    return [step * i for i in range(n)]


def test_a_face_moving_smoothly_across_30_frames_is_one_track():
    frames = [[face(10 + 25 * i, 100 + 3 * i)] for i in range(30)]  # 25 px a frame: boxes overlap little
    assert link_tracks(frames, ms(30)) == [[0]] * 30


def test_a_fast_face_with_little_box_overlap_stays_one_track():
    frames = [[face(10 + 70 * i, 100)] for i in range(12)]  # 70 px jumps with an 80 px box: IoU ~ 0.07
    assert link_tracks(frames, ms(12)) == [[0]] * 12
    without_landmarks = [[face(10 + 70 * i, 100, landmarks=False)] for i in range(12)]
    assert link_tracks(without_landmarks, ms(12)) == [[0]] * 12


def test_two_faces_crossing_paths_keep_their_tracks():
    """Between frames 9 and 10 they pass each other: each face is then nearer the OTHER one's last
    sighting (21 px against 30 px), so only the velocity prediction keeps the identities."""
    n = 21
    frames = []
    for i in range(n):
        left_to_right = face(20 + 30 * i, 200)
        right_to_left = face(605 - 30 * i, 215)
        frames.append([left_to_right, right_to_left] if i % 2 else [right_to_left, left_to_right])
    ids = link_tracks(frames, ms(n))
    ltr = [row[0] if i % 2 else row[1] for i, row in enumerate(ids)]
    rtl = [row[1] if i % 2 else row[0] for i, row in enumerate(ids)]
    assert len(set(ltr)) == 1 and len(set(rtl)) == 1 and ltr[0] != rtl[0]


def test_a_face_gone_longer_than_the_gap_comes_back_as_a_new_track():
    seen = [face(100, 100)]
    short_gap = [seen, seen, [], seen, seen]  # one sampled frame without the face
    assert link_tracks(short_gap, ms(5)) == [[0], [0], [], [0], [0]]
    long_gap = [seen, seen, [], [], [], seen, seen]
    assert link_tracks(long_gap, ms(7)) == [[0], [0], [], [], [], [1], [1]]
    in_time = link_tracks(long_gap, ms(7), TrackOptions(max_gap_frames=3, max_gap_ms=10_000))
    assert in_time == [[0], [0], [], [], [], [0], [0]]
    by_ms = link_tracks(short_gap, [0, 1000, 2000, 9000, 10_000])  # 8 s apart: more than max_gap_ms
    assert by_ms == [[0], [0], [], [1], [1]]


def test_two_people_side_by_side_and_a_new_one_entering():
    a, b, c = face(50, 100), face(400, 100), face(250, 300, size=40)
    frames = [[a, b], [b, a], [a, b, c], [c, a, b]]
    assert link_tracks(frames, ms(4)) == [[0, 1], [1, 0], [0, 1, 2], [2, 0, 1]]


def test_a_small_background_face_does_not_take_over_a_near_one():
    frames = [[face(100, 100, size=200)], [face(150, 150, size=40)]]  # same place, 25x smaller area
    assert link_tracks(frames, ms(2)) == [[0], [1]]


def test_inputs_and_options_are_checked():
    with pytest.raises(ValueError, match="2 frames of faces but 1 frame_ms"):
        link_tracks([[], []], [0])
    with pytest.raises(ConfigError, match="^max_distance: must be > 0"):
        TrackOptions(max_distance=0)
    with pytest.raises(ConfigError, match="^max_gap_frames: must be >= 0"):
        TrackOptions(max_gap_frames=-1)


def test_track_summary_weights_probabilities_by_face_area():
    small, big, other = face(0, 0, size=10), face(0, 0, size=30), face(500, 0, size=20)
    faces = [[small, other], [big], [other]]
    p = np.eye(3)
    probs = [np.stack([p[0], p[2]]), p[1][None], p[2][None]]
    ids = [[0, 1], [0], [1]]
    summaries = track_summary(ids, faces, probs, [0, 1000, 2500])
    assert [s.track_id for s in summaries] == [0, 1]
    first, second = summaries
    np.testing.assert_allclose(first.probabilities, [100 / 1000, 900 / 1000, 0.0])  # areas 100 and 900
    assert (first.frames_seen, first.first_ms, first.last_ms, first.area_sum) == (2, 0, 1000, 1000.0)
    np.testing.assert_allclose(second.probabilities, [0, 0, 1])
    assert (second.frames_seen, second.first_ms, second.last_ms, second.area_sum) == (2, 0, 2500, 800.0)
    with pytest.raises(ValueError, match="1 track ids for 2 faces"):
        track_summary([[0]], [[small, big]], [np.stack([p[0], p[1]])], [0])
