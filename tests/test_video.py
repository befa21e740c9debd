"""fer_core.video: container sniffing, time-based sampling, orientation and every bad input of issue 23.

All clips are encoded here by FFmpeg's real encoders through PyAV (and OpenCV's VideoWriter); the only
hand-made bytes are header patches (named as such) and cuts of real files.
"""
from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _images import ASTRONAUT_FACE_XYXY, astronaut, encode, quadrant_colours, quadrants
from _videos import (animated_gif, audio_only_mp4, encode_clip, moving_texture, opencv_mp4, patch_mp4_durations,
                     patch_webm_duration, sliding_face)
from fer_core.config import load_dataclass
from fer_core.decode import decode_image
from fer_core.errors import ConfigError, DecodeError, EmptyImageError, ImageError, ImageTooLargeError, VideoBytesError
from fer_core.video import VideoOptions, frame_at, media_type, sample_frames, sniff_container

TEXTURE = moving_texture(48, 64)


def _clip(kind: str = "h264", n: int = 50, fps: int = 10, **kw) -> bytes:
    return encode_clip(TEXTURE, n, kind=kind, fps=fps, **kw)


def _close(a: np.ndarray, b: np.ndarray, tol: float = 12.0) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < tol


def _is_frame(got: np.ndarray, i: int, frame_at=TEXTURE) -> bool:
    """``got`` is source frame i: nearer to it than to its neighbours (whatever the codec's loss)."""
    def distance(j: int) -> float:
        return float(np.abs(got.astype(np.int16) - frame_at(j).astype(np.int16)).mean())

    return distance(i) < min(distance(i - 1), distance(i + 1)) and distance(i) < 25


def _no_bytes_in(message: str, data: bytes) -> None:
    assert "\\x" not in message and data[:12].hex() not in message and repr(data[:12]) not in message


# ------------------------------------------------------------------ sniffing and routing


def test_sniff_recognises_each_container_from_real_files(tmp_path):
    frames = [TEXTURE(i) for i in range(3)]
    assert sniff_container(_clip("h264", 5)) == "mp4"
    assert sniff_container(_clip("h264-mov", 5)) == "mov"
    assert sniff_container(_clip("vp9", 5)) == "webm"
    assert sniff_container(_clip("h264-mkv", 5)) == "matroska"
    assert sniff_container(opencv_mp4(frames, tmp_path / "cv.mp4")) == "mp4"
    assert sniff_container(animated_gif(frames, [100, 100, 100])) == "gif"
    assert sniff_container(animated_gif(frames[:1], [100])) is None  # a still GIF is an image
    assert sniff_container(encode(frames[0], "JPEG")) is None
    assert sniff_container(b"") is None and sniff_container(b"\x00" * 3) is None


def test_sniff_leaves_heic_and_avif_to_the_image_decoder():
    pillow_heif = pytest.importorskip("pillow_heif")
    img = quadrants()
    heic = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB", size=(img.shape[1], img.shape[0]), data=img.tobytes()).save(heic, format="HEIF")
    assert heic.getvalue()[4:8] == b"ftyp" and sniff_container(heic.getvalue()) is None
    assert sniff_container(encode(img, "AVIF")) is None
    assert quadrant_colours(decode_image(heic.getvalue())) == quadrant_colours(img)


def test_decode_image_names_video_bytes_and_keeps_images_as_before():
    mp4 = _clip("h264", 5)
    with pytest.raises(VideoBytesError) as err:
        decode_image(mp4)
    assert err.value.status == "decode_error" and err.value.container == "mp4" and isinstance(err.value, DecodeError)
    assert "MP4 video, not an image" in str(err.value)
    _no_bytes_in(str(err.value), mp4)
    again = pickle.loads(pickle.dumps(err.value))  # Spark ships errors between processes
    assert (type(again), str(again), again.container) == (VideoBytesError, str(err.value), "mp4")
    with pytest.raises(VideoBytesError, match="WEBM video"):
        decode_image(_clip("vp8", 5))
    gif = animated_gif([quadrants(), quadrants()[::-1]], [100, 100])
    assert quadrant_colours(decode_image(gif)) == quadrant_colours(quadrants())  # first frame, as before


def test_media_type_routes_animated_gifs_only_when_asked():
    gif = animated_gif([TEXTURE(0), TEXTURE(5)], [100, 100])
    assert media_type(_clip("h264", 5)) == "video"
    assert media_type(gif) == "image" and media_type(gif, VideoOptions(gif=True)) == "video"
    assert media_type(encode(TEXTURE(0), "PNG")) == "image" and media_type(b"") == "image"


@pytest.mark.parametrize("key, value", [("sample_fps", 0), ("sample_fps", float("nan")), ("max_frames", 0),
                                        ("max_seconds", -1.0), ("max_pixels_per_frame", 0), ("sample_fps", 61)])
def test_video_options_name_the_bad_key(key, value):
    with pytest.raises(ConfigError, match=rf"^video\.{key}: "):
        load_dataclass(VideoOptions, {key: value}, "video")


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("kind", ["h264", "mpeg4", "vp9", "vp8", "h264-mov", "h264-mkv"])
def test_samples_one_frame_per_second_by_time_with_every_strategy(kind):
    data = _clip(kind, n=50, fps=10, gop=10)  # 5 s
    results = {s: sample_frames(data, strategy=s) for s in ("auto", "seek", "sequential")}
    for strategy, got in results.items():
        assert got.frame_ms == [0, 1000, 2000, 3000, 4000], strategy
        assert (got.width, got.height, got.truncated, got.rotation) == (64, 48, False, 0)
        assert got.duration_s == pytest.approx(5.0, abs=0.11) and got.container == sniff_container(data)
        for k, frame in enumerate(got.frames):
            assert frame.dtype == np.uint8 and frame.flags.c_contiguous
            assert _is_frame(frame, 10 * k), (strategy, k)
    assert results["sequential"].n_seeks == 0 and results["sequential"].n_decoded >= 41
    assert results["seek"].n_decoded < results["sequential"].n_decoded  # a keyframe at every target


def test_auto_seeks_over_sparse_keyframes_only_where_it_skips_frames():
    data = _clip("h264", n=300, fps=30, gop=60, codec_options={"x264-params": "scenecut=0"})  # keys every 2 s
    auto, seq = (sample_frames(data, strategy=s) for s in ("auto", "sequential"))
    assert auto.frame_ms == seq.frame_ms == list(range(0, 10_000, 1000))
    assert 0 < auto.n_seeks < 9 and auto.n_decoded < seq.n_decoded
    assert all(_close(a, b, 3) for a, b in zip(auto.frames, seq.frames))


def test_opencv_mp4v_clip(tmp_path):
    frames = [TEXTURE(i) for i in range(25)]
    got = sample_frames(opencv_mp4(frames, tmp_path / "cv.mp4", fps=10), VideoOptions(sample_fps=2))
    assert got.frame_ms == [0, 500, 1000, 1500, 2000] and got.codec == "mpeg4"
    assert all(_is_frame(f, 5 * k) for k, f in enumerate(got.frames))


def test_variable_frame_rate_reports_real_timestamps():
    pts = [0, 100, 250, 1300, 1350, 2900, 2950, 4100, 5000]
    data = _clip("h264", n=len(pts), pts_ms=pts)
    for strategy in ("auto", "seek", "sequential"):
        got = sample_frames(data, strategy=strategy)
        assert got.frame_ms == [0, 1300, 2900, 4100, 5000], strategy  # first frame at/after 0, 1, 2, 3, 4, 5 s
        assert [_is_frame(f, pts.index(ms)) for f, ms in zip(got.frames, got.frame_ms)] == [True] * 5


@pytest.mark.parametrize("kind, sample_fps", [("h264", 1.0), ("vp9", 7.0)])
def test_frame_at_returns_the_frame_sampled_at_that_time(kind, sample_fps):
    """The dashboards draw a video's boxes on frame_at(frame_ms): the very frame the job sampled there,
    also where frame_ms was rounded (7 fps targets at 10 fps); a time past the end is a DecodeError."""
    data = _clip(kind, n=30)
    sampled = sample_frames(data, VideoOptions(sample_fps=sample_fps))
    assert len(sampled.frames) > 2
    for frame, ms in zip(sampled.frames, sampled.frame_ms):
        assert np.array_equal(frame_at(data, ms), frame), ms
    with pytest.raises(DecodeError, match="no frame at 60000 ms"):
        frame_at(data, 60_000)
    vfr = _clip("h264", n=4, pts_ms=[0, 100, 1300, 2900])
    assert _is_frame(frame_at(vfr, 1300), 2) and _is_frame(frame_at(vfr, 1000), 2)


def test_animated_gif_samples_by_its_frame_delays():
    colours = [np.full((24, 32, 3), c, np.uint8) for c in (0, 60, 120, 180, 240)]
    gif = animated_gif(colours, [100, 300, 100, 500, 100])  # frames at 0, 100, 400, 500, 1000 ms
    got = sample_frames(gif, VideoOptions(sample_fps=2, gif=True))
    assert got.container == "gif" and got.frame_ms == [0, 500, 1000]
    assert [int(f.mean().round()) for f in got.frames] == [0, 180, 240]


@pytest.mark.parametrize("rotation, hflip, expected", [
    (90, False, lambda a: np.rot90(a, 1)), (-90, False, lambda a: np.rot90(a, -1)),
    (180, False, lambda a: np.rot90(a, 2)), (0, True, lambda a: a[:, ::-1]), (90, True, lambda a: np.rot90(a, 1)[:, ::-1]),
])
def test_rotation_metadata_gives_display_orientation(tmp_path, rotation, hflip, expected):
    card = quadrants(48, 64)
    data = encode_clip(lambda i: card, 12, fps=10, rotation=rotation, hflip=hflip)
    got = sample_frames(data)
    want = expected(card)
    assert (got.height, got.width) == want.shape[:2]
    assert quadrant_colours(got.frames[0]) == quadrant_colours(want)
    if not hflip:  # an independent reader: OpenCV's FFmpeg backend autorotates (rotation only, no mirror)
        import cv2

        (tmp_path / "rot.mp4").write_bytes(data)
        ok, bgr = cv2.VideoCapture(str(tmp_path / "rot.mp4")).read()
        assert ok and quadrant_colours(bgr[..., ::-1]) == quadrant_colours(got.frames[0])


def test_one_frame_video():
    got = sample_frames(_clip("h264", n=1))
    assert got.frame_ms == [0] and len(got.frames) == 1 and _is_frame(got.frames[0], 0)


def test_max_frames_and_max_seconds_mark_the_result_truncated():
    data = _clip("h264", n=100, fps=10)  # 10 s
    by_frames = sample_frames(data, VideoOptions(max_frames=3))
    assert by_frames.frame_ms == [0, 1000, 2000] and by_frames.truncated and by_frames.truncated_by == "max_frames"
    by_seconds = sample_frames(data, VideoOptions(max_seconds=4.5))
    assert by_seconds.frame_ms == [0, 1000, 2000, 3000, 4000] and by_seconds.truncated_by == "max_seconds"
    whole = sample_frames(data, VideoOptions(max_seconds=10.0))
    assert len(whole.frames) == 10 and not whole.truncated


def test_fifteen_minute_video_stops_at_max_seconds_without_decoding_the_rest():
    data = encode_clip(moving_texture(32, 32), 900, fps=1)  # 15 min at 1 fps
    got = sample_frames(data, VideoOptions(max_seconds=60, max_frames=1000))
    assert got.frame_ms == [1000 * k for k in range(60)] and got.truncated and got.truncated_by == "max_seconds"
    assert got.duration_s == pytest.approx(900, abs=1) and got.n_frames_declared == 900
    assert got.n_decoded <= 61  # 840 frames after the limit are never decoded


def test_header_declaring_ten_hours_costs_only_the_sampled_frames():
    mp4 = patch_mp4_durations(_clip("h264", n=50, fps=10), seconds=36_000)
    got = sample_frames(mp4)  # FFmpeg times an MP4 stream by its sample table, not by mvhd/mdhd
    assert got.duration_s == pytest.approx(5.0) and got.frame_ms == [0, 1000, 2000, 3000, 4000]
    webm = patch_webm_duration(_clip("vp8", n=50, fps=10), seconds=36_000)
    got = sample_frames(webm, VideoOptions(max_seconds=3))
    assert got.duration_s == pytest.approx(36_000) and got.frame_ms == [0, 1000, 2000] and got.truncated
    assert got.n_decoded <= 21
    with pytest.raises(DecodeError, match=r"ends before 5\.0 s but its header declares 36000\.0 s"):
        sample_frames(webm)  # the data ends after 5 s: a cut file or a lying header, not 10 hours of video


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def clip_8k() -> bytes:
    return encode_clip(lambda i: np.zeros((4320, 7680, 3), np.uint8), 1, fps=1)


def test_8k_stream_is_too_large_before_any_frame_is_decoded(clip_8k):
    with pytest.raises(ImageTooLargeError, match=r"declares 7680x4320 = 33,177,600 pixels per frame") as err:
        sample_frames(clip_8k)
    assert err.value.status == "too_large" and "video.max_pixels_per_frame" in str(err.value)
    got = sample_frames(clip_8k, VideoOptions(max_pixels_per_frame=7680 * 4320))  # the limit is what refused it
    assert (got.width, got.height, got.n_decoded) == (7680, 4320, 1)


def test_8k_refusal_allocates_no_frame(tmp_path, clip_8k):
    """FFmpeg's stream probe decodes frames on open; the max_pixels guard stops it (an 8K frame is 50 MB YUV)."""
    (tmp_path / "8k.mp4").write_bytes(clip_8k)
    script = textwrap.dedent(f"""
        import resource, av
        from fer_core.video import sample_frames
        from fer_core.errors import ImageTooLargeError
        data = open({str(tmp_path / "8k.mp4")!r}, "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            sample_frames(data)
        except ImageTooLargeError:
            pass
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    grown_mb = int(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout)
    assert grown_mb < 30


def test_zero_length_and_none_are_empty():
    for data in (b"", None):
        with pytest.raises(EmptyImageError) as err:
            sample_frames(data)
        assert err.value.status == "empty"


def test_not_a_video_is_a_decode_error():
    jpeg = encode(TEXTURE(0), "JPEG")
    with pytest.raises(DecodeError, match="not a recognised video container: unknown binary data") as err:
        sample_frames(jpeg)
    _no_bytes_in(str(err.value), jpeg)


def test_audio_only_mp4_has_no_video_stream():
    data = audio_only_mp4()
    assert sniff_container(data) == "mp4"
    with pytest.raises(DecodeError, match=r"no video stream \(streams: audio; audio-only\?\)") as err:
        sample_frames(data)
    assert err.value.status == "decode_error"


@pytest.mark.parametrize("kind", ["h264", "vp8"])
def test_truncated_files_are_decode_errors(kind):
    data = encode_clip(moving_texture(96, 128), 100, kind=kind, fps=10, gop=10)
    for cut in (len(data) // 2, len(data) // 5, 200):
        with pytest.raises(DecodeError) as err:
            sample_frames(data[:cut])
        assert err.value.status == "decode_error" and "truncated" in str(err.value)
        _no_bytes_in(str(err.value), data)


def test_truncated_faststart_mp4_fails_where_the_data_ends(tmp_path):
    data = encode_clip(moving_texture(96, 128), 100, fps=10, gop=10, path=tmp_path / "fs.mp4",
                       mux_options={"movflags": "faststart"})
    assert data.find(b"moov") < data.find(b"mdat")  # the index first, as streaming uploads are
    for cut in (len(data) // 2, len(data) // 3):  # (a cut after the last sampled frame is never noticed)
        with pytest.raises(DecodeError, match=r"MP4 video .*truncated"):
            sample_frames(data[:cut])


def test_corrupt_moov_box_is_a_decode_error_never_a_raw_exception():
    data = _clip("h264", n=30)
    moov = data.find(b"moov")
    seen = set()
    for offset in range(8, 700, 16):
        bad = bytearray(data)
        bad[moov + offset:moov + offset + 64] = b"\xff" * 64
        try:
            sample_frames(bytes(bad))
            seen.add("ok")
        except ImageError as e:
            assert e.status == "decode_error"
            _no_bytes_in(str(e), data)
            seen.add(str(e).split(" (")[0].split(";")[0])
    assert any("corrupt" in s for s in seen), seen


# ------------------------------------------------------------------ a real face, rotated, detected


@pytest.mark.slow
def test_moving_astronaut_in_a_rotated_phone_clip_is_found_upright_in_every_frame():
    """The clip is stored sideways (as phones store portrait video) with a display matrix; the detector
    must see the upright face in every sampled frame, at the place it was drawn, and tracking must link it."""
    from fer_core import create_detector
    from fer_core.tracking import link_tracks

    face = astronaut()[40:232, 150:310]  # 192 x 160 around the face
    frame_at, offset_at = sliding_face(face, canvas_hw=(480, 352), n_frames=50, x0=8, x1=184, y=140)
    stored = lambda i: np.ascontiguousarray(np.rot90(frame_at(i), -1))  # noqa: E731 (rotated clockwise on disk)
    data = encode_clip(stored, 50, fps=10, rotation=90, codec_options={"crf": "18"})
    got = sample_frames(data, VideoOptions(sample_fps=2))
    assert (got.width, got.height) == (352, 480) and got.frame_ms == [500 * k for k in range(10)]
    faces = create_detector("retinaface").detect(got.frames)
    assert [len(f) for f in faces] == [1] * 10
    x0, y0, x1, y1 = ASTRONAUT_FACE_XYXY
    for k, (found,) in enumerate(faces):
        dx, dy = offset_at(5 * k)
        want = np.array([x0 - 150 + dx, y0 - 40 + dy, x1 - 150 + dx, y1 - 40 + dy])
        x, y, w, h = found.box
        inter = max(0, min(x + w, want[2]) - max(x, want[0])) * max(0, min(y + h, want[3]) - max(y, want[1]))
        iou = inter / (w * h + (want[2] - want[0]) * (want[3] - want[1]) - inter)
        assert iou > 0.5, (k, found.box, want)
        assert found.landmarks[0, 0] < found.landmarks[1, 0]  # image-left eye left: upright, not mirrored
    assert link_tracks(faces, got.frame_ms) == [[0]] * 10
