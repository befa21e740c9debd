"""Face-quality flags (fer_core/quality.py) on constructed faces: each flag from the degradation it names."""
from __future__ import annotations

import numpy as np
import pytest

from fer_core.align import align_faces
from fer_core.quality import QualityOptions, face_quality, head_pose
from fer_core.types import Face
from tests._images import ASTRONAUT_EYES, ASTRONAUT_FACE_XYXY, astronaut

X0, Y0, X1, Y1 = ASTRONAUT_FACE_XYXY


def _landmarks(yaw_shift: float = 0.0, pitch_shift: float = 0.0) -> np.ndarray:
    """The astronaut's eyes (hand-checked) plus a nose and mouth placed like a frontal face's; the nose
    moved by ``yaw_shift`` half inter-ocular distances across / ``pitch_shift`` of the eye-mouth depth down."""
    (rx, ry), (lx, ly) = ASTRONAUT_EYES
    half_iod, depth = (lx - rx) / 2, 55.0
    cx, cy = (rx + lx) / 2, (ry + ly) / 2
    nose = (cx + yaw_shift * half_iod, cy + (0.5 + pitch_shift) * depth)
    return np.array([(rx, ry), (lx, ly), nose, (rx + 5, cy + depth), (lx - 5, cy + depth)], np.float32)


def _face(**kw) -> Face:
    return Face(box=(X0, Y0, X1 - X0, Y1 - Y0), score=0.99, landmarks=_landmarks(**kw))


def _crop(image: np.ndarray, face: Face) -> np.ndarray:
    return align_faces(image, [face], size=48, margin=0.0)


def test_the_sharp_frontal_astronaut_is_good() -> None:
    face = _face()
    (q,) = face_quality(_crop(astronaut(), face), [face])
    assert q.quality == "good", q
    assert q.face_px == pytest.approx(min(X1 - X0, Y1 - Y0))
    assert abs(q.yaw) < 1 and abs(q.pitch) < 1


def test_a_blurred_astronaut_is_blurred() -> None:
    import cv2

    face = _face()
    blurred = cv2.GaussianBlur(astronaut(), (0, 0), 6)  # blurred in the photo, before the crop
    (q,) = face_quality(_crop(blurred, face), [face])
    (sharp,) = face_quality(_crop(astronaut(), face), [face])
    assert q.quality == "blurred" and q.sharpness < QualityOptions().min_sharpness < sharp.sharpness


def test_a_24_px_face_is_small() -> None:
    import cv2

    small_img = cv2.resize(astronaut(), (512 * 24 // 88, 512 * 24 // 88), interpolation=cv2.INTER_AREA)
    s = 24 / 88
    face = Face(box=(X0 * s, Y0 * s, (X1 - X0) * s, (Y1 - Y0) * s), score=0.9, landmarks=_landmarks() * s)
    (q,) = face_quality(_crop(small_img, face), [face])
    assert q.face_px == pytest.approx(24, abs=0.5) and q.quality == "small"


def test_a_darkened_astronaut_is_dark() -> None:
    face = _face()
    dim = (astronaut().astype(np.float32) * 0.2).astype(np.uint8)
    (q,) = face_quality(_crop(dim, face), [face])
    assert q.quality == "dark" and q.brightness < QualityOptions().min_brightness
    (lit,) = face_quality(_crop(astronaut(), face), [face])
    assert lit.sharpness == pytest.approx(q.sharpness, rel=0.25)  # darkness is not read as blur


def test_a_face_turned_away_is_turned_and_the_pose_arithmetic() -> None:
    face = _face(yaw_shift=0.85)  # the nose most of the way to one eye: a profile-ish face
    (q,) = face_quality(_crop(astronaut(), face), [face])
    assert q.quality == "turned" and q.yaw == pytest.approx(np.degrees(np.arcsin(0.85)), abs=0.5)
    assert head_pose(_landmarks(yaw_shift=-0.5))[0] == pytest.approx(-30.0, abs=0.5)  # the other way
    assert head_pose(_landmarks(pitch_shift=0.25))[1] == pytest.approx(30.0, abs=0.5)  # nose lower: face down
    assert head_pose(None) == (None, None)
    assert head_pose(np.full((5, 2), np.nan)) == (None, None)  # Haar: no landmarks, no pose


def test_flags_follow_their_order_and_the_options() -> None:
    import cv2

    face = Face(box=(X0, Y0, 20, 20), score=0.9, landmarks=_landmarks())
    blurred = _crop(cv2.GaussianBlur(astronaut(), (0, 0), 6), _face())
    (q,) = face_quality(blurred, [face])
    assert q.quality == "small"  # small before blurred
    (q,) = face_quality(blurred, [face], QualityOptions(min_face_px=0, min_sharpness=0))
    assert q.quality == "good"
    with pytest.raises(Exception, match="min_face_px"):
        QualityOptions(min_face_px=-1)
