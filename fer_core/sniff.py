"""Which video container some bytes are, from their first bytes only (no decoder, no dependency).

Its own module so that both ``fer_core.decode`` (to say "this is a video" instead of "unknown image")
and ``fer_core.video`` (to decode it) use one rule, without importing each other.
"""
from __future__ import annotations

__all__ = ["sniff_container", "VIDEO_CONTAINERS", "VIDEO_SUFFIXES"]

VIDEO_CONTAINERS: tuple[str, ...] = ("mp4", "mov", "webm", "matroska", "gif")
"""Every value ``sniff_container`` returns ("gif" only for an animated GIF)."""

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
"""File-name suffixes of video posts in image folders (match them in any case, like IMAGE_SUFFIXES)."""

# ISO-BMFF brands that are still images or image sequences (HEIC/HEIF, AVIF): Pillow reads those.
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif",
                           b"avis", b"avio"})
# QuickTime files written before ftyp existed start with one of these top-level atoms.
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def sniff_container(data: bytes) -> str | None:
    """"mp4", "mov", "webm", "matroska", "gif" (animated only) or None when the bytes are no video.

    A still GIF and HEIC/AVIF (ISO-BMFF image brands) return None: they are images, and
    ``fer_core.decode`` keeps reading them as before.
    """
    head = bytes(data[:64])
    if len(head) >= 12 and head[4:8] == b"ftyp":
        major_brand = head[8:12]
        if major_brand in _IMAGE_BRANDS:
            return None
        return "mov" if major_brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS and _box_size(head) >= 8:
        return "mov"
    if head[:4] == _EBML_MAGIC:
        return "webm" if b"webm" in head else "matroska"
    if head[:6] in (b"GIF87a", b"GIF89a") and _gif_has_two_frames(data):
        return "gif"
    return None


def _box_size(head: bytes) -> int:
    return int.from_bytes(head[0:4], "big")


def _gif_has_two_frames(data: bytes) -> bool:
    """Walk the GIF block structure (skipping pixel data, decoding nothing) until a second image.

    Pillow's ``is_animated`` would do, but decodes the first frame to get there; this only hops over
    length-prefixed sub-blocks, so a still GIF of any size costs one pass over its block headers.
    """
    view = memoryview(data)
    n = len(view)
    if n < 13:
        return False
    pos = 13
    if view[10] & 0x80:  # global colour table
        pos += 3 * (2 << (view[10] & 0x07))
    images = 0
    while pos < n:
        block = view[pos]
        if block == 0x3B:  # trailer
            return False
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor
            images += 1
            if images >= 2:
                return True
            if pos + 10 > n:
                return False
            flags = view[pos + 9]
            pos += 10
            if flags & 0x80:  # local colour table
                pos += 3 * (2 << (flags & 0x07))
            pos += 1  # LZW minimum code size
        else:
            return False  # not a GIF block: corrupt; let the image decoder explain
        while pos < n and view[pos] != 0:  # sub-blocks, each prefixed by its length
            pos += view[pos] + 1
        pos += 1
    return False
