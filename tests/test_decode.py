"""decode_image / image_size on real encoded files: every format and mode, EXIF, and every bad input."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fer_core.decode import decode_image, image_size
from fer_core.errors import DecodeError, EmptyImageError, ImageError, ImageTooLargeError
from _images import encode, quadrant_colours, quadrants

EXPECTED = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]  # TL, TR, BL, BR


def _check_rgb(arr: np.ndarray, h: int, w: int) -> None:
    assert isinstance(arr, np.ndarray)
    assert arr.shape == (h, w, 3) and arr.dtype == np.uint8
    assert arr.flags["C_CONTIGUOUS"] and arr.flags["WRITEABLE"]


@pytest.mark.parametrize(
    "fmt,kw",
    [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {}),
     ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}), ("GIF", {}), ("AVIF", {"quality": 95}),
     ("HEIF", {"quality": 95})],
)
def test_formats_decode_to_rgb_with_right_layout(fmt: str, kw: dict) -> None:
    img = quadrants()
    data = encode(img, fmt, **kw)
    out = decode_image(data)
    _check_rgb(out, 60, 80)
    assert quadrant_colours(out) == EXPECTED
    assert image_size(data) == (80, 60)


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_phone_photo_orientation_is_applied(fmt: str, orientation: int) -> None:
    """iPhone-style HEIC (rotation in the container) and AVIF end upright, as the same JPEG does."""
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    stored = Image.fromarray(quadrants()).transpose(inverse[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, fmt, quality=95, exif=exif.tobytes())
    out = decode_image(data)
    _check_rgb(out, 60, 80)
    assert quadrant_colours(out) == EXPECTED
    assert image_size(data) == (80, 60)


def test_gif_first_frame_of_animation() -> None:
    first = Image.fromarray(quadrants())
    second = Image.fromarray(np.zeros((60, 80, 3), np.uint8))
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    out = decode_image(data)
    _check_rgb(out, 60, 80)
    assert quadrant_colours(out) == EXPECTED


def test_grey_modes() -> None:
    grey = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (60, 1))
    for data in (encode(grey, "PNG"), encode(grey, "JPEG", quality=100)):
        out = decode_image(data)
        _check_rgb(out, 60, 80)
        assert np.all(out[..., 0] == out[..., 1]) and np.all(out[..., 1] == out[..., 2])
        assert abs(int(out[30, 79, 0]) - 255) <= 3 and out[30, 0, 0] <= 3
    one_bit = Image.fromarray(grey > 127).convert("1")
    out = decode_image(encode(one_bit, "PNG"))
    _check_rgb(out, 60, 80)
    assert set(np.unique(out)) <= {0, 255}


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (60, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(__import__("io").BytesIO(data)).mode.startswith("I")
    out = decode_image(data)
    _check_rgb(out, 60, 80)
    assert out[0, 0, 0] == 0 and out[0, 79, 0] == 255
    assert 120 <= out[0, 40, 0] <= 135  # mid-grey stays mid-grey (clipping would give 255)


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, :40, 3] = 255  # left half opaque, right half fully transparent
    out = decode_image(encode(rgba, "PNG"))
    _check_rgb(out, 60, 80)
    assert tuple(out[30, 10]) == (255, 0, 0)
    assert tuple(out[30, 70]) == (255, 255, 255)
    la = Image.fromarray(rgba[..., [1, 3]], mode="LA")  # black where opaque
    out = decode_image(encode(la, "PNG"))
    assert tuple(out[30, 10]) == (0, 0, 0) and tuple(out[30, 70]) == (255, 255, 255)


def test_palette_with_and_without_transparency() -> None:
    pal = Image.fromarray(quadrants()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    out = decode_image(encode(pal, "PNG"))
    assert quadrant_colours(out) == EXPECTED
    idx_black = pal.getpixel((5, 5))  # make the top-left colour transparent
    out = decode_image(encode(pal, "PNG", transparency=idx_black))
    assert tuple(out[5, 5]) == (255, 255, 255)
    assert quadrant_colours(out)[1:] == EXPECTED[1:]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk(fmt: str) -> None:
    cmyk = Image.fromarray(quadrants()).convert("CMYK")
    out = decode_image(encode(cmyk, fmt))
    _check_rgb(out, 60, 80)
    assert quadrant_colours(out) == EXPECTED


@pytest.mark.parametrize("trailer", [b"", b"APPENDED-DATA" * 10], ids=["opencv-path", "pillow-path"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int, trailer: bytes) -> None:
    """The file stores pixels so that applying the EXIF tag yields the upright quadrant card."""
    upright = Image.fromarray(quadrants())
    # store the inverse of what the viewer will apply
    inverse = {
        1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = upright if inverse is None else upright.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    # bytes after the JPEG end marker send the file through Pillow instead of OpenCV
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes()) + trailer
    out = decode_image(data)
    _check_rgb(out, 60, 80)
    assert quadrant_colours(out) == EXPECTED
    assert image_size(data) == (80, 60)


def test_opencv_and_pillow_paths_agree_on_a_photo() -> None:
    from _images import astronaut

    data = encode(astronaut(), "JPEG", quality=90)
    fast = decode_image(data)
    slow = decode_image(data + b"\x01trailing")  # not ending in FF D9 -> Pillow
    assert fast.shape == slow.shape == (512, 512, 3)
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 1.5


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression-bomb-shaped file)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 100_000])
def test_huge_header_is_refused_before_decoding(side: int) -> None:
    data = _png_header_only(side, side)
    assert len(data) < 2000
    assert image_size(data) == (side, side)  # also past Pillow's own bomb limit
    with pytest.raises(ImageTooLargeError) as ei:
        decode_image(data)
    assert ei.value.status == "too_large"
    assert f"{side}x{side}" in str(ei.value) and "max_pixels" in str(ei.value)


def test_max_pixels_is_respected() -> None:
    data = encode(quadrants(), "PNG")
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=80 * 60 - 1)
    _check_rgb(decode_image(data, max_pixels=80 * 60), 60, 80)


def _truncated(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    data = encode(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data,error,status,words",
    [
        (None, EmptyImageError, "empty", "None"),
        (b"", EmptyImageError, "empty", "zero bytes"),
        (_truncated("JPEG"), DecodeError, "decode_error", "truncated"),
        (_truncated("PNG"), DecodeError, "decode_error", "PNG"),
        (np.random.default_rng(1).bytes(5000), DecodeError, "decode_error", "not a recognised image"),
        (b"<html><body>404 Not Found</body></html>\n", DecodeError, "decode_error", "text"),
        (b"\xff\xd8\xff", DecodeError, "decode_error", ""),  # JPEG magic and nothing else
        (_png_header_only(64, 48), DecodeError, "decode_error", "PNG"),  # valid header, bogus pixel data
    ],
    ids=["none", "zero-bytes", "truncated-jpeg", "truncated-png", "random", "text", "jpeg-magic-only", "bad-idat"],
)
def test_bad_inputs_raise_typed_errors(data, error, status, words) -> None:
    with pytest.raises(error) as ei:
        decode_image(data)
    assert isinstance(ei.value, ImageError)
    assert ei.value.status == status
    assert words in str(ei.value)


def test_image_size_is_none_for_junk() -> None:
    assert image_size(b"") is None
    assert image_size(b"hello world") is None
    assert image_size(None) is None  # type: ignore[arg-type]


def test_accepts_bytearray_and_memoryview() -> None:
    data = encode(quadrants(), "PNG")
    for buf in (bytearray(data), memoryview(data)):
        assert decode_image(buf).shape == (60, 80, 3)
