"""Video bytes -> a few RGB frames chosen by time, safely and cheaply (PyAV, from memory).

Frames are chosen by TIME, not by index: targets 0, 1/fps, 2/fps, ... (``VideoOptions.sample_fps``)
until ``max_frames`` or ``max_seconds``; each target gets the first frame whose presentation
timestamp is at or after it, so ``frame_ms`` are the real timestamps of a variable-frame-rate clip and
no frame is sampled twice. Reaching a target either decodes forward or seeks: with ``strategy="auto"``
the stream's seek index (``av_index_search_timestamp``) says where decoding would have to restart for
that target; a seek is made only when that keyframe lies AHEAD of what was already decoded, so a seek
never decodes more than reading on would (bench/bench_video_sampling.py measures what it saves).

Costs are bounded before anything is decoded: the declared frame size is checked against
``max_pixels_per_frame`` (FFmpeg's own ``max_pixels`` guard is set too, for the stream probe and the
decoder, so a header that lies cannot make it allocate an 8K frame); declared frame counts and
durations are only reported, never used to size anything; a 10-hour file costs its sampled frames.

Orientation: phone videos are stored sideways with a display matrix; frames are turned exactly as
FFmpeg's own ``autorotate`` does (rotation and mirror), so boxes are in the pixels a person sees.

Every failure is a typed ``ImageError`` (statuses decode_error, too_large, empty) whose message says
what was wrong and never quotes the bytes.
"""
from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterator, Literal

import numpy as np

from fer_core.decode import describe_bytes
from fer_core.errors import ConfigError, DecodeError, EmptyImageError, ImageTooLargeError
from fer_core.sniff import VIDEO_CONTAINERS, VIDEO_SUFFIXES, sniff_container

__all__ = ["VideoOptions", "SampledVideo", "sample_frames", "frame_at", "sniff_container", "media_type",
           "VIDEO_CONTAINERS", "VIDEO_SUFFIXES", "DEFAULT_MAX_PIXELS_PER_FRAME"]

DEFAULT_MAX_PIXELS_PER_FRAME = 4096 * 2160
"""DCI 4K (8.8 MP): every phone's 4K mode fits, 8K (33 MP) is refused as too_large. Far below the
photo limit (decode.DEFAULT_MAX_PIXELS, 50 MP) because a video holds up to ``max_frames`` such frames
at once: 60 x 4096 x 2160 x 3 bytes = 1.6 GB is the worst case of one sampled video."""

Strategy = Literal["auto", "seek", "sequential"]


@dataclass(frozen=True)
class VideoOptions:
    """``video:`` keys. Frames are sampled at ``sample_fps`` from t=0 until ``max_frames`` frames or
    ``max_seconds`` of the clip, whichever comes first (the rest is not decoded; the result is marked
    ``truncated``). ``gif``: score animated GIFs as videos; off by default, so an animated GIF stays
    what it is today, a photo scored on its first frame (the same rows as before for existing dumps)."""

    sample_fps: float = 1.0
    max_frames: int = 60
    max_seconds: float = 600.0
    max_pixels_per_frame: int = DEFAULT_MAX_PIXELS_PER_FRAME
    gif: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_fps, (int, float)) and math.isfinite(self.sample_fps)
                and 0 < self.sample_fps <= 60):
            raise ConfigError(f"sample_fps: must be a number in (0, 60] frames per second, got {self.sample_fps!r}")
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ConfigError(f"max_frames: must be an int >= 1, got {self.max_frames!r}")
        if not (isinstance(self.max_seconds, (int, float)) and math.isfinite(self.max_seconds)
                and self.max_seconds > 0):
            raise ConfigError(f"max_seconds: must be a number > 0, got {self.max_seconds!r}")
        if (isinstance(self.max_pixels_per_frame, bool) or not isinstance(self.max_pixels_per_frame, int)
                or self.max_pixels_per_frame < 1):
            raise ConfigError(f"max_pixels_per_frame: must be an int >= 1, got {self.max_pixels_per_frame!r}")
        if not isinstance(self.gif, bool):
            raise ConfigError(f"gif: must be true or false, got {self.gif!r}")


@dataclass
class SampledVideo:
    """The sampled frames of one video and what its header declared.

    frames: RGB uint8 (H, W, 3), display orientation; frame_ms: their presentation times in ms from the
    stream's start. width/height: display size. truncated: the clip goes on past ``max_seconds`` or
    ``max_frames`` and that part was not decoded. n_decoded / n_seeks: the work done (frames the
    decoder produced, sampled or not; seeks), for tests and benchmarks.
    """

    frames: list[np.ndarray]
    frame_ms: list[int]
    duration_s: float | None
    width: int
    height: int
    container: str
    truncated: bool
    n_frames_declared: int | None
    n_decoded: int = 0
    n_seeks: int = 0
    codec: str = ""
    rotation: int = 0  # clockwise degrees applied to reach display orientation
    truncated_by: str | None = field(default=None)  # "max_seconds" | "max_frames" | None


def media_type(data: bytes, opts: VideoOptions | None = None) -> Literal["image", "video"]:
    """"video" when the bytes are MP4/MOV/WebM/Matroska, or an animated GIF and ``opts.gif``; else "image".

    The one routing rule for callers: "image" bytes go to ``decode_image`` exactly as before.
    """
    kind = sniff_container(data) if data else None
    if kind is None or (kind == "gif" and not (opts or VideoOptions()).gif):
        return "image"
    return "video"


def _video_bytes(data: bytes | bytearray | memoryview | None) -> bytes:
    if data is None:
        raise EmptyImageError("video is None (empty cell); check the export that produced the dump")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"video must be bytes, got {type(data).__name__}; pass the raw file bytes")
    if not len(data):
        raise EmptyImageError("video has zero bytes (empty cell or zero-byte file); re-export or re-upload it")
    return bytes(data)


def _reason(exc: BaseException) -> str:
    """An FFmpeg/PyAV failure in words, without anything taken from the file (no bytes, no metadata)."""
    import av

    if isinstance(exc, av.error.FFmpegError):
        return f"{type(exc).__name__}: {exc.strerror or 'FFmpeg error'}"
    return type(exc).__name__  # e.g. UnicodeDecodeError's text would quote a byte of the file


# --------------------------------------------------------------------------- orientation

# FFmpeg autorotate (fftools/ffmpeg_filter.c), as array views: name -> (H, W, 3) -> (H', W', 3).
_TURNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "clock": lambda a: a.transpose(1, 0, 2)[:, ::-1],
    "cclock": lambda a: a.transpose(1, 0, 2)[::-1],
    "cclock_flip": lambda a: a.transpose(1, 0, 2),
    "clock_flip": lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
}


def _display_turns(frame) -> tuple[tuple[str, ...], int]:
    """The turns that bring a decoded frame to display orientation, and the clockwise angle.

    Read from the frame's DISPLAYMATRIX side data (FFmpeg attaches the stream's matrix to each frame),
    with FFmpeg's own rule: theta = clockwise angle rounded to a multiple of 90 (an odd angle is rare
    and would need resampling; the nearest right angle is used), plus the mirror the matrix carries.
    """
    matrix = None
    for side_data in frame.side_data:
        if "DISPLAYMATRIX" in str(side_data.type):
            raw = bytes(side_data)
            if len(raw) >= 36:
                matrix = struct.unpack("<9i", raw[:36])
            break
    if matrix is None:
        return (), 0
    m0, m1, m3, m4 = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale0, scale1 = math.hypot(m0, m3), math.hypot(m1, m4)
    if scale0 == 0 or scale1 == 0:
        return (), 0
    ccw = -math.degrees(math.atan2(m1 / scale1, m0 / scale0))  # av_display_rotation_get
    theta = (round(-ccw / 90.0) * 90) % 360
    if theta == 90:
        return (("cclock_flip",) if matrix[3] > 0 else ("clock",)), 90
    if theta == 180:
        return tuple(t for t, on in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if on), 180
    if theta == 270:
        return (("clock_flip",) if matrix[3] < 0 else ("cclock",)), 270
    return (("vflip",) if matrix[4] < 0 else ()), 0


def _to_display_rgb(frame) -> tuple[np.ndarray, int]:
    rgb = frame.to_ndarray(format="rgb24")
    turns, theta = _display_turns(frame)
    for turn in turns:
        rgb = _TURNS[turn](rgb)
    return np.ascontiguousarray(rgb), theta


# --------------------------------------------------------------------------- sampling


class _Reader:
    """Decoded frames of one stream, counting the work; ``seek`` restarts decoding at a keyframe."""

    def __init__(self, container, stream) -> None:
        self.container, self.stream = container, stream
        self.n_decoded = 0
        self.n_seeks = 0
        self.position: int | None = None  # pts of the last decoded frame
        self.max_key_gap: int | None = None  # widest distance seen between two consecutive keyframes
        self._last_key: int | None = None
        self._frames: Iterator | None = None

    def seek(self, pts: int) -> None:
        self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        self.n_seeks += 1
        self._frames = None
        self.position = None
        self._last_key = None  # the next keyframe seen is not the successor of the last one

    def next(self):
        """The next decoded frame, or None at the end of the stream."""
        if self._frames is None:
            self._frames = self.container.decode(self.stream)
        frame = next(self._frames, None)
        if frame is None:
            return None
        self.n_decoded += 1
        if frame.pts is None:  # a stream without timestamps: count on from the last one
            frame.pts = (self.position + 1) if self.position is not None else (self.stream.start_time or 0)
        self.position = frame.pts
        if frame.key_frame:
            if self._last_key is not None and frame.pts > self._last_key:
                self.max_key_gap = max(self.max_key_gap or 0, frame.pts - self._last_key)
            self._last_key = frame.pts
        return frame


def _declared_duration_s(container, stream) -> float | None:
    """What the header says (never estimated from the bit rate): the stream's, else the container's."""
    import av

    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def sample_frames(data: bytes, opts: VideoOptions | None = None, *,
                  strategy: Strategy = "auto") -> SampledVideo:
    """Decode the frames at 0, 1/fps, 2/fps, ... seconds of a video (see the module doc).

    ``strategy``: "auto" (seek only where the seek index says it skips frames), "seek" (seek to every
    target after the first) or "sequential" (never seek); all three sample the same frames.
    Raises EmptyImageError (no bytes), ImageTooLargeError (declared frame size above
    ``max_pixels_per_frame``; nothing decoded) or DecodeError (not a video, corrupt or truncated file,
    no video stream, no decodable frame). Never raises a raw PyAV error.
    """
    import av

    opts = opts or VideoOptions()
    data = _video_bytes(data)
    kind = sniff_container(data)
    if kind is None:
        raise DecodeError(f"not a recognised video container: {describe_bytes(data)}. "
                          "Supported: MP4/MOV, WebM/Matroska, animated GIF")
    label = kind.upper() if kind != "matroska" else "Matroska"
    guard = {"max_pixels": str(opts.max_pixels_per_frame)}  # FFmpeg refuses bigger frames, probe included
    try:
        container = av.open(io.BytesIO(data), mode="r", options=guard, metadata_errors="replace")
    except Exception as e:  # av.error.*, and e.g. IndexError from a mangled moov box
        raise DecodeError(f"{label} container is corrupt or truncated ({_reason(e)}); {len(data):,} bytes "
                          "were given. Re-download or re-export the file") from None
    with container:
        moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not moving:  # cover art of an audio file is a one-picture "video" stream: not a video either
            streams = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise DecodeError(f"{label} file has no video stream (streams: {streams}; audio-only?); "
                              "there is no picture to score")
        stream = moving[0]
        codec = stream.codec_context
        if codec is None:
            raise DecodeError(f"{label} video stream has an unknown or unsupported codec; the header may be "
                              "corrupt. Re-export the file as H.264/VP9")
        width, height = codec.width, codec.height
        if width <= 0 or height <= 0:
            raise DecodeError(f"{label} video stream declares no frame size ({width}x{height}); "
                              "the header is corrupt. Re-export the file")
        if width * height > opts.max_pixels_per_frame:
            raise ImageTooLargeError(
                f"{label} video declares {width}x{height} = {width * height:,} pixels per frame, more than "
                f"video.max_pixels_per_frame={opts.max_pixels_per_frame:,}; downscale it (e.g. to 1080p) "
                "before scoring or raise video.max_pixels_per_frame")
        codec.options = dict(guard)
        return _sample(container, stream, kind, label, opts, strategy)


def frame_at(data: bytes, ms: int, opts: VideoOptions | None = None) -> np.ndarray:
    """The frame a sampling run took at ``ms`` (a faces row's frame_ms): the first frame whose time, in
    whole ms, is ``ms`` or later, in display orientation, as RGB. What the dashboards draw a video post's
    face boxes on. Decodes at most the frames sample_frames would to reach it (it is that function with
    two targets, 0 and ``ms``); raises its typed errors (and DecodeError if the clip ends before ``ms``)."""
    import dataclasses

    opts = opts or VideoOptions()
    target_s = max(0.0, (int(ms) - 0.5) / 1000.0)  # frame_ms is rounded to whole ms: its frame may be 0.5 ms earlier
    if target_s * 60 < 1:  # before the first 1/60 s: the first frame (sample_fps is at most 60)
        return sample_frames(data, dataclasses.replace(opts, max_frames=1)).frames[0]
    video = sample_frames(data, dataclasses.replace(opts, sample_fps=1.0 / target_s, max_frames=2,
                                                    max_seconds=target_s + 1.0))
    if len(video.frames) < 2:
        raise DecodeError(f"video has no frame at {int(ms)} ms (it ends before); was it re-encoded since scoring?")
    return video.frames[1]


def _sample(container, stream, kind: str, label: str, opts: VideoOptions, strategy: Strategy) -> SampledVideo:
    time_base = stream.time_base or Fraction(1, 1000)
    start = stream.start_time or 0
    fps = Fraction(opts.sample_fps).limit_denominator(1_000_000)
    duration_s = _declared_duration_s(container, stream)
    rate = stream.average_rate or stream.guessed_rate
    # Data ending this much before the declared duration is a cut file, not the last frame's own length.
    end_slack_s = max(1.0, 2.0 / float(rate)) if rate else 1.0
    index = stream.index_entries
    has_index = len(index) > 1

    def target_pts(k: int) -> int:
        return start + math.ceil(Fraction(k) / fps / time_base)

    reader = _Reader(container, stream)
    frames: list[np.ndarray] = []
    frame_ms: list[int] = []
    rotation = 0
    truncated_by: str | None = None
    k = 0
    while True:
        t_s = k / fps
        if k >= opts.max_frames:
            truncated_by = "max_frames"
            break
        if t_s >= opts.max_seconds:
            truncated_by = "max_seconds"
            break
        if duration_s is not None and t_s >= duration_s:
            break
        target = target_pts(k)
        try:
            if k > 0 and _should_seek(strategy, has_index, index, reader, target):
                reader.seek(target)
            frame = _first_frame_at_or_after(reader, target, allow_reseek=reader.position is None and k > 0)
        except Exception as e:
            at = f"{float((reader.position - start) * time_base):.1f} s" if reader.position is not None else "start"
            raise DecodeError(
                f"{label} video is corrupt or truncated near {at} ({_reason(e)}); {len(frames)} frame(s) had been "
                "sampled. Re-download or re-export the file") from None
        if frame is None:  # end of the stream
            if duration_s is not None and t_s < duration_s - end_slack_s:
                raise DecodeError(
                    f"{label} video data ends before {float(t_s):.1f} s but its header declares "
                    f"{duration_s:.1f} s: a truncated file (interrupted download?) or a wrong header; "
                    "re-download or re-export it")
            break
        if frame.width * frame.height > opts.max_pixels_per_frame:  # the stream changed size mid-way
            raise ImageTooLargeError(
                f"{label} video has a {frame.width}x{frame.height} frame at "
                f"{float((frame.pts - start) * time_base):.1f} s, more than video.max_pixels_per_frame="
                f"{opts.max_pixels_per_frame:,}; downscale it before scoring or raise the key")
        rgb, rotation = _to_display_rgb(frame)
        frames.append(rgb)
        elapsed = Fraction(frame.pts - start) * time_base
        frame_ms.append(int(round(elapsed * 1000)))
        k = max(k + 1, math.floor(elapsed * fps) + 1)  # the next target after this frame: none sampled twice
    if not frames:
        raise DecodeError(f"{label} video has no decodable frame ({reader.n_decoded} decoded before the end); "
                          "re-export the file")
    truncated = truncated_by is not None and (duration_s is None or duration_s > float(k / fps))
    height, width = frames[0].shape[:2]
    return SampledVideo(
        frames=frames, frame_ms=frame_ms, duration_s=duration_s, width=width, height=height, container=kind,
        truncated=truncated, n_frames_declared=stream.frames or None, n_decoded=reader.n_decoded,
        n_seeks=reader.n_seeks, codec=stream.codec_context.name, rotation=rotation,
        truncated_by=truncated_by if truncated else None)


def _should_seek(strategy: Strategy, has_index: bool, index, reader: _Reader, target: int) -> bool:
    """Seek only when it skips work: the keyframe decoding must restart from lies past what was decoded.

    With a seek index at open (MP4's moov, Matroska cues) the index says where that keyframe is.
    Without one (WebM from a browser has no cues; GIF), the widest keyframe interval decoded so far
    says whether one must lie between here and the target; before two keyframes were seen, read on.
    """
    if strategy == "sequential":
        return False
    if strategy == "seek":
        return True
    position = reader.position
    if has_index:
        i = index.search_timestamp(target, backward=True)
        return i >= 0 and (position is None or index[i].timestamp > position)
    if reader.max_key_gap is None or position is None:
        return False
    return target - reader.max_key_gap >= position


def _first_frame_at_or_after(reader: _Reader, target: int, *, allow_reseek: bool):
    """Decode forward to the first frame with pts >= target (frames before it are not converted).

    Right after a seek, the demuxer may land on a keyframe past the target (its index holds decode
    times, which run ahead of presentation times with B-frames); then seek once more, to just before
    that keyframe, so the frame chosen is the same as reading on would choose.
    """
    frame = reader.next()
    if allow_reseek and frame is not None and frame.pts > target:
        landed = frame.pts
        reader.seek(landed - 1)
        frame = reader.next()
        if frame is None or frame.pts >= landed:  # no earlier keyframe: what we landed on is the answer
            return frame
    while frame is not None and frame.pts < target:
        frame = reader.next()
    return frame
