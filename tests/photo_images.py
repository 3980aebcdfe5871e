"""Image files made for the photo tests with Pillow: good portraits, camera photos, bad and hostile files."""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageDraw, ImageFilter


def portrait(width: int = 413, height: int = 578, background: tuple[int, int, int] = (235, 240, 245),
             fmt: str = "JPEG", exif: bool = False) -> bytes:
    """A light background with a darker oval "face" and shoulders in the middle."""
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.3, height * 0.18, width * 0.7, height * 0.62), fill=(200, 160, 130))
    draw.ellipse((width * 0.4, height * 0.33, width * 0.46, height * 0.38), fill=(40, 30, 30))
    draw.ellipse((width * 0.54, height * 0.33, width * 0.6, height * 0.38), fill=(40, 30, 30))
    draw.rectangle((width * 0.2, height * 0.7, width * 0.8, height), fill=(30, 40, 80))
    image = image.filter(ImageFilter.GaussianBlur(1))
    out = io.BytesIO()
    kwargs: dict[str, object] = {}
    if exif:
        tags = Image.Exif()
        tags[0x010F] = "TestCamera"  # Make
        tags[0x0110] = "Model-X"  # Model
        kwargs["exif"] = tags.tobytes()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def blank(width: int = 413, height: int = 578) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (250, 250, 250)).save(out, "JPEG")
    return out.getvalue()


def bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A small JPEG whose frame header declares ``width`` × ``height`` pixels."""
    data = bytearray(portrait(64, 64))
    at = 2
    while at < len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length
    raise AssertionError("no frame header")
