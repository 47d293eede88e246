"""Small real pictures made with the standard library: for media tests and the fake's media.

Each is a valid file of its format whose header states the size asked, built by hand with
`struct` and `zlib` (no Pillow): `png_bytes`, `jpeg_bytes`, `webp_bytes` for tests, and
`flat_png`, a one-colour PNG of any size in a few kilobytes, for `FakeGallery`'s own media.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["flat_png", "jpeg_bytes", "png_bytes", "webp_bytes"]

_MAX_SIDE = 2**31 - 1  # what a PNG header can state


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(width: int = 4, height: int = 3, rgb: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    """A real PNG of one colour, `width` by `height` pixels (8-bit RGB)."""
    chunk = _png_chunk
    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def flat_png(width: int, height: int, rgb: tuple[int, int, int] = (90, 120, 200)) -> bytes:
    """A real PNG of one colour, `width` by `height` pixels, small at any size.

    One bit a pixel against a palette of one colour: a 2048 by 2048 picture takes under 1 KB
    and takes a few milliseconds to make, where `png_bytes` (8-bit RGB) compresses 12 MB.

    Raises:
        ValueError: a side is not 1 to 2**31 - 1 pixels.

    """
    if not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
        raise ValueError("a PNG is 1 to 2**31 - 1 pixels a side")
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # 1 bit, palette
    row = bytes(1 + (width + 7) // 8)  # filter 0, then every pixel palette entry 0
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"PLTE", bytes(rgb))
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int = 4, height: int = 3) -> bytes:
    """A real baseline JPEG of one grey, `width` by `height` pixels (1 to 65535 each).

    Built by hand: one component, flat quantisation, and Huffman tables of one code each, so
    that every 8x8 block is two bits (no DC change, end of block).
    """
    if not (0 < width < 65536 and 0 < height < 65536):
        raise ValueError("a JPEG is 1 to 65535 pixels a side")

    def segment(marker: int, data: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(data) + 2) + data

    one_code = b"\x01" + b"\x00" * 15 + b"\x00"  # one code of length 1, for symbol 0
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    bits = "00" * blocks
    bits += "1" * (-len(bits) % 8)  # padded with ones, as the standard asks
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + b"\x01" * 64)
        + segment(0xC0, struct.pack(">BHHBBBB", 8, height, width, 1, 1, 0x11, 0))
        + segment(0xC4, b"\x00" + one_code)
        + segment(0xC4, b"\x10" + one_code)
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + scan
        + b"\xff\xd9"
    )


_WEBP_5X3 = bytes.fromhex(
    "524946461e000000574542505650384c110000002f0480000007508f2297a7ff8188e87f0000"
)


def webp_bytes() -> bytes:
    """A real lossless WebP, 5 by 3 pixels of one colour (made once with libwebp)."""
    return _WEBP_5X3
