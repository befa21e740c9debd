"""Real video files made in memory with PyAV (and OpenCV), for the video tests and bench_video_sampling.

Every clip is encoded by FFmpeg's real encoders (libx264, libvpx, mpeg4, AAC) and muxed by its real
muxers; nothing is a hand-written byte string except the header patches named as such.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

FORMATS = {"h264": ("libx264", "mp4"), "mpeg4": ("mpeg4", "mp4"), "vp9": ("libvpx-vp9", "webm"),
           "vp8": ("libvpx", "webm"), "h264-mov": ("libx264", "mov"), "h264-mkv": ("libx264", "matroska")}


def encode_clip(frame_at: Callable[[int], np.ndarray], n_frames: int, *, kind: str = "h264", fps: int = 10,
                gop: int | None = None, pts_ms: Sequence[int] | None = None, rotation: int | None = None,
                hflip: bool = False, path: Path | None = None, mux_options: dict | None = None,
                codec_options: dict | None = None) -> bytes:
    """Encode ``frame_at(i)`` (RGB uint8, even sides) for i < n_frames; return the file's bytes.

    pts_ms: presentation times (variable frame rate) instead of i/fps. rotation/hflip: a display
    matrix (PyAV's counter-clockwise degrees), as phones write. path: write there instead of memory
    (needed for mp4 ``movflags=faststart``, which rewrites the file).
    """
    import av
    from fractions import Fraction

    codec, fmt = FORMATS[kind]
    first = frame_at(0)
    h, w = first.shape[:2]
    target = str(path) if path is not None else io.BytesIO()
    with av.open(target, "w", format=fmt, options=mux_options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if pts_ms is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        if gop is not None:
            stream.codec_context.gop_size = gop
        opts = {"preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime", "cpu-used": "8"} \
            if codec.startswith("libvpx") else {}
        stream.options = {**opts, **(codec_options or {})}
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(first if i == 0 else frame_at(i), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[i]), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes() if path is not None else target.getvalue()


def moving_texture(h: int = 96, w: int = 128, seed: int = 0) -> Callable[[int], np.ndarray]:
    """Random 8x8 colour blocks sliding right 2 px a frame: P-frames carry real content, and every frame
    differs from its neighbours by more than the codec's loss (4:2:0 keeps 8 px blocks)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (-(-h // 8), -(-w // 8), 3), dtype=np.uint8)
    base = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:h, :w]
    return lambda i: np.ascontiguousarray(np.roll(base, 2 * i, axis=1))


def sliding_face(face: np.ndarray, *, canvas_hw: tuple[int, int], n_frames: int, x0: int, x1: int, y: int,
                 fill: int = 90) -> tuple[Callable[[int], np.ndarray], Callable[[int], tuple[int, int]]]:
    """A face photo moving on a grey canvas from x0 to x1 over n_frames; returns (frame_at, offset_at)."""
    fh, fw = face.shape[:2]

    def offset_at(i: int) -> tuple[int, int]:
        return round(x0 + (x1 - x0) * i / max(1, n_frames - 1)), y

    def frame_at(i: int) -> np.ndarray:
        canvas = np.full((*canvas_hw, 3), fill, np.uint8)
        x, yy = offset_at(i)
        canvas[yy:yy + fh, x:x + fw] = face
        return canvas

    return frame_at, offset_at


def audio_only_mp4(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """An MP4 holding one AAC stream and no picture (a podcast clip, a voice note)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        for k in range(int(seconds * rate / 1024) + 1):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, k * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def opencv_mp4(frames: Iterable[np.ndarray], path: Path, fps: float = 10.0) -> bytes:
    """Write RGB frames with OpenCV's VideoWriter ('mp4v' = MPEG-4 part 2), the way many scripts do."""
    import cv2

    frames = list(frames)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV has no mp4v writer"
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    return path.read_bytes()


def animated_gif(frames: Sequence[np.ndarray], durations_ms: Sequence[int]) -> bytes:
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    durations = list(durations_ms) if len(ims) > 1 else int(durations_ms[0])
    ims[0].save(buf, format="GIF", save_all=len(ims) > 1, append_images=ims[1:], duration=durations, loop=0)
    return buf.getvalue()


def patch_mp4_durations(data: bytes, seconds: float) -> bytes:
    """Rewrite the mvhd and every mdhd duration (version-0 boxes) so the header declares ``seconds``.

    The frames stay as they are: a header that lies about a huge length (or a file cut after it).
    """
    out = bytearray(data)
    for box in (b"mvhd", b"mdhd"):
        at = out.find(box)
        while at >= 0:
            assert out[at + 4] == 0, "version-1 box: 64-bit fields"
            timescale = int.from_bytes(out[at + 16:at + 20], "big")
            out[at + 20:at + 24] = min(int(seconds * timescale), 2**32 - 1).to_bytes(4, "big")
            at = out.find(box, at + 4)
    return bytes(out)


def patch_webm_duration(data: bytes, seconds: float) -> bytes:
    """Rewrite the Segment Info Duration (EBML id 0x4489, an 8-byte float in ms as FFmpeg writes it)."""
    import struct

    at = data.find(b"\x44\x89\x88")
    assert at >= 0, "no 8-byte Duration element"
    return data[:at + 3] + struct.pack(">d", seconds * 1000.0) + data[at + 11:]
