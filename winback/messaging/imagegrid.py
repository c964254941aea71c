"""The cart grid: a shopper's product images composed into one JPEG for an MMS.

Pure (bytes in, bytes out; no network). Layout by how many images could be read:

    1 → the image itself, scaled        2 → 2 × 1        3–4 → 2 × 2        5–9 → 3 × 3

More than nine: the first nine readable ones. Each tile is a square on white with a thin gutter
between and around the tiles; the image is letterboxed into it (`fit="contain"`, the whole product
shows) or cropped to fill it (`fit="cover"`). EXIF orientation is applied; transparency is
flattened onto white; animations give their first frame.

Carriers take MMS media up to about 600 KB, so the JPEG's quality is lowered (and, if need be, the
picture scaled down) until it fits `max_bytes`.

Images that cannot be decoded — corrupt, not an image, or larger than `MAX_SOURCE_PIXELS` (a
decompression bomb) — are skipped; when none is left, `ValueError`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps

MAX_SOURCE_PIXELS = 40_000_000  # per source image, checked from its header before decoding
MAX_IMAGES = 9
BACKGROUND = (255, 255, 255)
QUALITIES = (85, 75, 65, 55, 45, 35)
CONTENT_TYPE = "image/jpeg"

Fit = Literal["contain", "cover"]


@dataclass(frozen=True, slots=True)
class GridImage:
    """The composed JPEG: its bytes, size in pixels, and how many source images it shows."""

    data: bytes
    content_type: str
    width: int
    height: int
    used: int


def columns_and_rows(count: int) -> tuple[int, int]:
    """The grid for `count` images (1–9)."""
    if count <= 1:
        return 1, 1
    if count == 2:
        return 2, 1
    if count <= 4:
        return 2, 2
    return 3, 3


def gutter_for(tile_px: int) -> int:
    return max(2, round(tile_px / 50))


def compose_grid(
    images: Sequence[bytes],
    *,
    tile_px: int = 300,
    max_bytes: int = 600_000,
    fit: Fit = "contain",
) -> GridImage:
    """One JPEG of up to nine of `images` (encoded image files), at most `max_bytes` long.

    Raises ValueError when none of the images can be read, or when `max_bytes` is too small for
    even a heavily compressed, scaled-down picture."""
    if tile_px < 16:
        raise ValueError(f"tile_px must be at least 16, not {tile_px}")
    if max_bytes < 1_000:
        raise ValueError(f"max_bytes must be at least 1000, not {max_bytes}")
    pictures: list[Image.Image] = []
    for data in images:
        if len(pictures) == MAX_IMAGES:
            break
        picture = decode(data, tile_px * 2)
        if picture is not None:
            pictures.append(picture)
    if not pictures:
        raise ValueError(f"none of the {len(images)} product images could be read")
    canvas = _single(pictures[0], tile_px) if len(pictures) == 1 else _grid(pictures, tile_px, fit)
    data = _encode_within(canvas, max_bytes)
    with Image.open(io.BytesIO(data)) as written:
        width, height = written.size
    return GridImage(data, CONTENT_TYPE, width, height, len(pictures))


def decode(data: bytes, target_px: int) -> Image.Image | None:
    """An RGB picture from an encoded image, oriented and flattened onto white; None when it cannot
    be read or is too large to decode safely. `target_px` lets JPEG decode at a reduced size."""
    try:
        # Pillow refuses (DecompressionBombError) what is far beyond its own limit while reading the
        # header; our lower limit refuses the rest before anything is decoded.
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_SOURCE_PIXELS or min(opened.size) < 1:
                return None
            opened.seek(0)
            if opened.format == "JPEG":
                opened.draft("RGB", (target_px, target_px))
            opened.load()
            return _flatten(ImageOps.exif_transpose(opened))
    except Exception:  # noqa: BLE001 — any failure to decode makes the image unreadable, nothing more
        return None


def _flatten(picture: Image.Image) -> Image.Image:
    has_alpha = picture.mode in ("RGBA", "LA", "PA") or (
        picture.mode == "P" and "transparency" in picture.info
    )
    if has_alpha:
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit greyscale: scale to 8 bits
        picture = picture.point(lambda value: value / 256).convert("L")
    return picture.convert("RGB")


def _single(picture: Image.Image, tile_px: int) -> Image.Image:
    """One image: kept whole at the size a 2 × 2 grid would have (never enlarged)."""
    gutter = gutter_for(tile_px)
    side = 2 * tile_px + gutter
    if picture.width <= side and picture.height <= side:
        return picture
    return ImageOps.contain(picture, (side, side), Image.Resampling.LANCZOS)


def _grid(pictures: Sequence[Image.Image], tile_px: int, fit: Fit) -> Image.Image:
    columns, rows = columns_and_rows(len(pictures))
    gutter = gutter_for(tile_px)
    size = (columns * tile_px + (columns + 1) * gutter, rows * tile_px + (rows + 1) * gutter)
    canvas = Image.new("RGB", size, BACKGROUND)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        left = gutter + column * (tile_px + gutter)
        top = gutter + row * (tile_px + gutter)
        canvas.paste(_tile(picture, tile_px, fit), (left, top))
    return canvas


def _tile(picture: Image.Image, tile_px: int, fit: Fit) -> Image.Image:
    if fit == "cover":
        return ImageOps.fit(picture, (tile_px, tile_px), Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (tile_px, tile_px), BACKGROUND)
    scaled = ImageOps.contain(picture, (tile_px, tile_px), Image.Resampling.LANCZOS)
    tile.paste(scaled, ((tile_px - scaled.width) // 2, (tile_px - scaled.height) // 2))
    return tile


def _encode_within(canvas: Image.Image, max_bytes: int) -> bytes:
    """The canvas as a JPEG no longer than `max_bytes`: lower quality first, then smaller."""
    picture = canvas
    while True:
        for quality in QUALITIES:
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        if min(picture.size) <= 64:
            raise ValueError(f"the image cannot be made smaller than {max_bytes} bytes")
        scale = max(0.5, math.sqrt(max_bytes / buffer.tell()) * 0.9)
        smaller = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(smaller, Image.Resampling.LANCZOS)
