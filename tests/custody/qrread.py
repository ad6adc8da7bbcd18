"""Read the QR codes in the PNGs ``export_files`` writes, with ZXing (``zxing-cpp``), an
implementation independent of segno. The PNG itself is read here with zlib: segno writes
1-bit greyscale, non-interlaced images, and that is all this reader accepts (anything else
fails the test rather than decoding wrongly)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import zxingcpp


def _grey_pixels(path: Path) -> tuple[int, int, bytearray]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (1, 0, 0), f"unexpected PNG format {header}"
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    pixels = bytearray()
    prior = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:
                                                          (y + 1) * (stride + 1)])
        for i in range(stride):  # the PNG filters, with 1 byte per "pixel" at depth 1
            a = line[i - 1] if i else 0
            b, c = prior[i], (prior[i - 1] if i else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
            else:
                assert kind == 0, f"unknown PNG filter {kind}"
        for x in range(width):
            bit = (line[x // 8] >> (7 - x % 8)) & 1
            pixels.append(255 if bit else 0)
        prior = line
    return width, height, pixels


def read_qr(path: Path) -> zxingcpp.Barcode:
    width, height, pixels = _grey_pixels(path)
    found = zxingcpp.read_barcodes(memoryview(pixels).cast("B", (height, width)),
                                   formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, f"{path.name}: {len(found)} QR codes"
    return found[0]


def modules(path: Path, *, scale: int = 4, border: int = 4) -> list[list[int]]:
    """The symbol's module matrix (1 = dark) sampled from the PNG, to compare with what
    segno encodes for the same content (zxing-cpp 3 does not report structured-append
    headers, so the header is checked this way)."""
    width, _height, pixels = _grey_pixels(path)
    size = width // scale - 2 * border
    return [[1 if pixels[((border + r) * scale + scale // 2) * width
                         + (border + c) * scale + scale // 2] == 0 else 0
             for c in range(size)] for r in range(size)]
