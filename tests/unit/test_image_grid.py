"""The cart grid for MMS: layouts by count, letterboxing and cropping, EXIF orientation, flattened
transparency, unreadable and oversized images skipped, and the JPEG kept under the size limit."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from winback.messaging import imagegrid
from winback.messaging.imagegrid import GridImage, compose_grid

RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 20), (20, 20, 220), (255, 255, 255)
COLOURS = [
    RED,
    GREEN,
    BLUE,
    (200, 200, 20),
    (20, 200, 200),
    (200, 20, 200),
    (90, 90, 90),
    (250, 140, 0),
    (0, 0, 0),
]
TILE, GUTTER = 300, imagegrid.gutter_for(300)


def _encode(picture: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (120, 120), fmt: str = "PNG") -> bytes:
    return _encode(Image.new("RGB", size, colour), fmt)


def _open(grid: GridImage) -> Image.Image:
    picture = Image.open(io.BytesIO(grid.data))
    assert picture.format == "JPEG" and grid.content_type == "image/jpeg"
    assert picture.size == (grid.width, grid.height)
    return picture.convert("RGB")


def _near(actual: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


def _centre(column: int, row: int) -> tuple[int, int]:
    return GUTTER + column * (TILE + GUTTER) + TILE // 2, GUTTER + row * (TILE + GUTTER) + TILE // 2


def _size(columns: int, rows: int) -> tuple[int, int]:
    return columns * TILE + (columns + 1) * GUTTER, rows * TILE + (rows + 1) * GUTTER


# --- layouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "grid"),
    [(2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 3)), (8, (3, 3)), (9, (3, 3))],
)
def test_layout_by_count_with_each_image_in_its_cell(count: int, grid: tuple[int, int]) -> None:
    result = compose_grid([_solid(colour) for colour in COLOURS[:count]])
    picture = _open(result)
    columns, rows = grid
    assert result.used == count
    assert (result.width, result.height) == _size(columns, rows)
    for index in range(columns * rows):
        row, column = divmod(index, columns)
        expected = COLOURS[index] if index < count else WHITE  # empty cells stay white
        assert _near(picture.getpixel(_centre(column, row)), expected), (
            index,
            picture.getpixel(_centre(column, row)),
        )
    assert _near(picture.getpixel((GUTTER // 2, GUTTER // 2)), WHITE)  # the outer gutter
    assert _near(picture.getpixel((GUTTER + TILE + GUTTER // 2, TILE // 2)), WHITE)  # between tiles


def test_one_image_is_itself_scaled() -> None:
    small = compose_grid([_solid(RED, (200, 150))])
    assert (small.width, small.height, small.used) == (200, 150, 1)
    assert _near(_open(small).getpixel((100, 75)), RED)
    large = compose_grid([_solid(BLUE, (1600, 800))])
    side = 2 * TILE + GUTTER
    assert (large.width, large.height) == (side, side // 2)


def test_more_than_nine_images_use_the_first_nine() -> None:
    result = compose_grid([_solid(COLOURS[i % 9]) for i in range(14)])
    assert result.used == 9
    assert (result.width, result.height) == _size(3, 3)


def test_tiles_are_letterboxed_by_default_and_cropped_with_cover() -> None:
    wide = _solid(RED, (400, 100))
    contained = _open(compose_grid([wide, wide]))
    assert _near(contained.getpixel((GUTTER + TILE // 2, GUTTER + 10)), WHITE, 10)  # bar above
    assert _near(contained.getpixel(_centre(0, 0)), RED)
    covered = _open(compose_grid([wide, wide], fit="cover"))
    assert _near(covered.getpixel((GUTTER + TILE // 2, GUTTER + 10)), RED)


def test_a_smaller_tile_size() -> None:
    result = compose_grid([_solid(RED), _solid(GREEN), _solid(BLUE)], tile_px=100)
    gutter = imagegrid.gutter_for(100)
    assert (result.width, result.height) == (2 * 100 + 3 * gutter, 2 * 100 + 3 * gutter)


# --- what the images are ------------------------------------------------------------------------


def test_exif_orientation_is_applied() -> None:
    picture = Image.new("RGB", (200, 100), RED)
    picture.paste(BLUE, (100, 0, 200, 100))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise: the stored left side becomes the top
    result = compose_grid([_encode(picture, "JPEG", exif=exif.tobytes(), quality=95)])
    shown = _open(result)
    assert shown.size == (100, 200)
    assert _near(shown.getpixel((50, 40)), RED) and _near(shown.getpixel((50, 160)), BLUE)


def test_transparency_is_flattened_onto_white() -> None:
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    rgba.paste((20, 20, 220, 255), (0, 0, 50, 100))
    palette = Image.new("P", (100, 100), 0)
    palette.putpalette([0, 0, 0, 220, 20, 20] + [0] * 762)
    palette.paste(1, (50, 0, 100, 100))
    result = _open(compose_grid([_encode(rgba), _encode(palette, transparency=0)]))
    left_tile_left, left_tile_right = (GUTTER + 75, GUTTER + 150), (GUTTER + 225, GUTTER + 150)
    assert _near(result.getpixel(left_tile_left), BLUE) and _near(result.getpixel(left_tile_right), WHITE, 10)
    right = GUTTER + TILE + GUTTER
    assert _near(result.getpixel((right + 75, GUTTER + 150)), WHITE, 10)
    assert _near(result.getpixel((right + 225, GUTTER + 150)), RED)


@pytest.mark.parametrize(
    "data",
    [
        _encode(Image.new("L", (80, 80), 128)),
        _encode(Image.new("CMYK", (80, 80), (0, 255, 255, 0)), "JPEG"),
        _encode(Image.new("I;16", (80, 80), 40000)),
        _encode(Image.new("1", (80, 80), 1), "GIF"),
        _encode(Image.new("RGB", (80, 80), RED), "WEBP"),
        _encode(Image.new("LA", (80, 80), (10, 128))),
    ],
    ids=["grey", "cmyk-jpeg", "16-bit", "bilevel-gif", "webp", "grey-alpha"],
)
def test_other_modes_and_formats_are_read(data: bytes) -> None:
    assert compose_grid([data, _solid(RED)]).used == 2


def test_an_animation_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (60, 60), colour) for colour in (GREEN, RED, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    assert _near(_open(compose_grid([buffer.getvalue()])).getpixel((30, 30)), GREEN)


# --- unreadable images --------------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims another size (nothing that large is ever decoded)."""
    data = bytearray(_solid(RED, (8, 8)))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_unreadable_images_are_skipped() -> None:
    truncated = _solid(GREEN, (200, 200), "JPEG")[:300]
    result = compose_grid([b"", b"<html>404</html>", truncated, _solid(RED), _solid(BLUE)])
    assert result.used == 2
    assert (result.width, result.height) == _size(2, 1)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns, then we refuse
@pytest.mark.parametrize(
    ("width", "height"), [(7_000, 7_000), (10_000, 10_000), (20_000, 20_000), (100_000, 100_000)]
)
def test_decompression_bombs_are_unreadable(width: int, height: int) -> None:
    bomb = _png_claiming(width, height)
    assert Image.open(io.BytesIO(_png_claiming(9, 9))).size == (9, 9)  # the forgery itself is sound
    assert imagegrid.decode(bomb, 600) is None
    assert compose_grid([bomb, _solid(RED)]).used == 1


def test_none_readable_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="^none of the 3 product images could be read$"):
        compose_grid([b"", b"nope", _png_claiming(50_000, 50_000)])
    with pytest.raises(ValueError, match="none of the 0 product images"):
        compose_grid([])


# --- size ---------------------------------------------------------------------------------------


def _noise(seed: int, size: int = 300) -> bytes:
    rng = random.Random(seed)
    return _encode(Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)))


def test_the_jpeg_is_kept_under_the_byte_limit() -> None:
    noisy = [_noise(seed) for seed in range(9)]
    roomy = compose_grid(noisy)
    assert len(roomy.data) <= 600_000
    tight = compose_grid(noisy, max_bytes=60_000)
    assert len(tight.data) <= 60_000
    _open(tight)
    assert tight.used == 9


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="tile_px"):
        compose_grid([_solid(RED)], tile_px=4)
    with pytest.raises(ValueError, match="max_bytes"):
        compose_grid([_solid(RED)], max_bytes=10)
