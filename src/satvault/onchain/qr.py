"""QR codes (segno) for payment URIs: SVG for pages, PNG for apps and e-mail."""

from __future__ import annotations

import io

import segno

__all__ = ["qr_png", "qr_svg"]


def qr_svg(data: str, *, scale: int = 4) -> bytes:
    buf = io.BytesIO()
    segno.make(data, error="m").save(buf, kind="svg", scale=scale, border=2,
                                     xmldecl=False, svgns=True)
    return buf.getvalue()


def qr_png(data: str, *, scale: int = 6) -> bytes:
    buf = io.BytesIO()
    segno.make(data, error="m").save(buf, kind="png", scale=scale, border=2)
    return buf.getvalue()
