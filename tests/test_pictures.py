"""The pictures `_pictures` makes with the standard library, read back chunk by chunk."""

from __future__ import annotations

import struct
import zlib

import pytest

from meigen_async._pictures import flat_png


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Each chunk's type and data, every CRC checked."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    found, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + data)
        found.append((kind, data))
        at += 12 + length
    return found


@pytest.mark.parametrize(("width", "height"), [(1, 1), (37, 5), (1650, 2048)])
def test_a_flat_png_is_a_valid_png_stating_its_size_with_every_row(width: int, height: int) -> None:
    found = chunks(flat_png(width, height, (1, 2, 3)))
    assert [kind for kind, _ in found] == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", found[0][1]) == (width, height, 1, 3, 0, 0, 0)
    assert found[1][1] == b"\x01\x02\x03"
    assert zlib.decompress(found[2][1]) == bytes(1 + (width + 7) // 8) * height


def test_a_large_flat_png_stays_small() -> None:
    assert len(flat_png(2048, 2048)) < 2048


@pytest.mark.parametrize(("width", "height"), [(0, 5), (5, 0), (2**31, 1), (-1, 1)])
def test_a_side_a_png_cannot_state_is_a_value_error(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="pixels a side"):
        flat_png(width, height)
