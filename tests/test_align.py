"""align_faces: eye levelling, square crop with margin, padding, shape/dtype - checked on pixels."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from _images import ASTRONAUT_EYES, ASTRONAUT_FACE_XYXY, astronaut
from fer_core.align import align_faces, alignment_matrix, transform_points
from fer_core.types import Face


def _astronaut_face(landmarks: np.ndarray | None = None) -> Face:
    x1, y1, x2, y2 = ASTRONAUT_FACE_XYXY
    lm = np.full((5, 2), np.nan, np.float32)
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float32)
    return Face(box=(x1, y1, x2 - x1, y2 - y1), score=1.0, landmarks=lm)


def _eyes_lm(eyes) -> np.ndarray:
    lm = np.zeros((5, 2), np.float32)
    lm[:2] = eyes
    lm[2:] = np.mean(eyes, axis=0)  # nose/mouth are not used by alignment
    return lm


def _rotate(img: np.ndarray, centre: tuple[float, float], degrees: float) -> tuple[np.ndarray, np.ndarray]:
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT), m


def _marker_blobs(crop: np.ndarray, n: int = 2) -> np.ndarray:
    """Centroids (x, y) of the n largest magenta blobs (the painted eye markers), left to right."""
    c = crop.astype(int)
    mask = ((c[..., 0] > 180) & (c[..., 1] < 90) & (c[..., 2] > 180)).astype(np.uint8)
    count, _, stats, cents = cv2.connectedComponentsWithStats(mask)
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:n] + 1
    pts = cents[order]
    return pts[np.argsort(pts[:, 0])]


@pytest.mark.parametrize("degrees", [-25.0, 12.0, 30.0])
def test_rotated_face_comes_out_with_level_eyes(degrees: float) -> None:
    img = astronaut().copy()
    # paint magenta eye markers so the check is on real output pixels, not only on the matrix
    for x, y in ASTRONAUT_EYES:
        cv2.circle(img, (int(x), int(y)), 4, (255, 0, 255), -1)
    cx = (ASTRONAUT_FACE_XYXY[0] + ASTRONAUT_FACE_XYXY[2]) / 2
    cy = (ASTRONAUT_FACE_XYXY[1] + ASTRONAUT_FACE_XYXY[3]) / 2
    rotated, m = _rotate(img, (cx, cy), degrees)
    eyes = transform_points(m, np.asarray(ASTRONAUT_EYES))
    face = _astronaut_face(_eyes_lm(eyes))  # same box centre (rotation about it)
    size = 112
    crops = align_faces(rotated, [face], size=size, margin=0.2)
    assert crops.shape == (1, size, size, 3) and crops.dtype == np.uint8
    # landmarks mapped by the same matrix are level and symmetric about the crop centre
    out_eyes = transform_points(alignment_matrix(face, size=size, margin=0.2), eyes)
    assert abs(out_eyes[0, 1] - out_eyes[1, 1]) < 1e-3  # float32 landmarks
    assert abs((out_eyes[0, 0] + out_eyes[1, 0]) / 2 - (size / 2 - 0.5)) < 2.0
    # and the painted markers really are level in the pixels
    blobs = _marker_blobs(crops[0])
    assert abs(blobs[0, 1] - blobs[1, 1]) < 1.5, blobs
    np.testing.assert_allclose(blobs, out_eyes, atol=2.0)


def test_unrotated_equals_plain_square_crop_and_resize() -> None:
    """NaN landmarks: no rotation; the result is the square crop around the box centre, resized."""
    img = astronaut()
    face = _astronaut_face()  # 88 x 118 box, centre (224, 121)
    side = 118 * 1.5  # margin 0.5
    x0, y0 = 224 - side / 2, 121 - side / 2
    ref = cv2.resize(img[round(y0):round(y0 + side), round(x0):round(x0 + side)], (59, 59),
                     interpolation=cv2.INTER_AREA)
    crop = align_faces(img, [face], size=59, margin=0.5)[0]
    assert np.abs(crop.astype(int) - ref.astype(int)).mean() < 6  # interpolation differences only


def test_level_eyes_give_zero_rotation() -> None:
    img = astronaut()
    with_lm = align_faces(img, [_astronaut_face(_eyes_lm(ASTRONAUT_EYES))], size=64, margin=0.1)
    without = align_faces(img, [_astronaut_face()], size=64, margin=0.1)
    np.testing.assert_array_equal(with_lm, without)  # ASTRONAUT_EYES have the same y


def test_box_leaving_image_is_padded() -> None:
    img = np.full((100, 100, 3), 200, np.uint8)
    face = Face(box=(-30.0, -30.0, 60.0, 60.0), score=1.0)
    black = align_faces(img, [face], size=40, margin=0.0, border="black")[0]
    edge = align_faces(img, [face], size=40, margin=0.0, border="edge")[0]
    assert black[:15, :15].max() == 0 and black[25:, 25:].min() == 200
    assert edge.min() == 200  # replicated border of a flat image


def test_shapes_many_faces_and_none() -> None:
    img = astronaut()
    faces = [_astronaut_face(), Face(box=(0.0, 0.0, 30.0, 50.0), score=0.5),
             Face(box=(400.0, 450.0, 300.0, 300.0), score=0.5)]
    out = align_faces(img, faces, size=48, margin=0.1)
    assert out.shape == (3, 48, 48, 3) and out.dtype == np.uint8
    assert align_faces(img, [], size=48, margin=0.1).shape == (0, 48, 48, 3)


def test_strong_downscale_is_antialiased() -> None:
    """A 1-px checkerboard shrunk 8x must average to grey, not alias into stripes."""
    board = ((np.indices((800, 800)).sum(axis=0) % 2) * 255).astype(np.uint8)
    img = np.repeat(board[..., None], 3, axis=2)
    crop = align_faces(img, [Face(box=(200.0, 200.0, 400.0, 400.0), score=1.0)], size=50, margin=0.0)[0]
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 3


def test_bad_arguments() -> None:
    img = astronaut()
    with pytest.raises(ValueError, match="size"):
        align_faces(img, [], size=0, margin=0.1)
    with pytest.raises(ValueError, match="uint8"):
        align_faces(img.astype(np.float32), [], size=48, margin=0.1)
    with pytest.raises(ValueError, match="border"):
        align_faces(img, [], size=48, margin=0.1, border="wrap")


def test_matrix_maps_box_centre_to_crop_centre() -> None:
    face = Face(box=(10.0, 20.0, 100.0, 60.0), score=1.0,
                landmarks=_eyes_lm([(30.0, 40.0), (80.0, 40.0 + 50.0 * math.tan(math.radians(10)))]))
    m = alignment_matrix(face, size=100, margin=0.0)
    centre = transform_points(m, np.array([[60.0 - 0.5, 50.0 - 0.5]]))[0]
    np.testing.assert_allclose(centre, (49.5, 49.5), atol=1e-9)
    assert abs(np.linalg.det(m[:, :2]) - 1.0) < 1e-9  # side 100 -> 100 px: pure rotation
