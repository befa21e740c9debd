"""Typed errors. Each says what was wrong and what to do.

Per-image problems (ImageError subclasses) carry a ``status`` that becomes the
``images.status`` column, so a batch never dies because of one image.
"""
from __future__ import annotations


class FerCoreError(Exception):
    """Base class of every error raised on purpose by fer_core."""


class ConfigError(FerCoreError, ValueError):
    """A configuration key or value is wrong; the message names the key."""


class WeightsError(FerCoreError):
    """A weight file is missing, unreadable or fails its sha256 check."""


class ImageError(FerCoreError):
    """One image could not be turned into pixels. ``status`` names the images-table status."""

    status: str = "decode_error"


class EmptyImageError(ImageError):
    """The image cell or file holds no bytes at all."""

    status = "empty"


class ImageTooLargeError(ImageError):
    """The header declares more pixels than the configured limit (decompression-bomb guard)."""

    status = "too_large"


class DecodeError(ImageError):
    """The bytes are not a decodable image (truncated, corrupt, unknown format)."""

    status = "decode_error"


class VideoBytesError(DecodeError):
    """The bytes are a video (MP4/MOV, WebM/Matroska), handed to the image decoder.

    Still ``decode_error`` for the image path; a caller that scores videos catches this type (its
    ``container`` says which kind) and hands the bytes to ``fer_core.video.sample_frames`` instead."""

    def __init__(self, message: str, container: str) -> None:
        super().__init__(message)
        self.container = container

    def __reduce__(self):  # pickles whole (Spark ships errors between processes)
        return type(self), (str(self), self.container)


class FetchError(ImageError):
    """The image URI could not be read (missing object, permission, network)."""

    status = "fetch_error"


class UriRefusedError(FetchError):
    """The dump's URI points where the URI policy (input.uri_allow) does not allow the job to read.

    Checked before any file system or socket is touched; the message names the rule."""

    status = "fetch_error"


IMAGE_STATUSES: tuple[str, ...] = ("ok", "no_face", "decode_error", "fetch_error", "too_large", "empty")
"""Every value the images table's ``status`` column can take."""

SCORED_STATUSES: tuple[str, ...] = ("ok", "no_face")
"""The statuses of images that were decoded and looked at; every other status is a data problem."""
