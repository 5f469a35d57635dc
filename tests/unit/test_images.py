import io

import numpy as np
import pytest
from PIL import Image

from i2tt_server.errors import InvalidInput
from i2tt_server.images import decode_image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("data, message", [
    (b"", "IMAGE is empty"),
    (b"not an image at all", "not a decodable image"),
])
def test_undecodable_input_is_named(data, message):
    with pytest.raises(InvalidInput, match=message):
        decode_image(data)


def test_truncated_image_is_invalid():
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(InvalidInput, match="could not be decoded"):
        decode_image(data[: len(data) // 2])


def test_oversized_bytes_refused():
    with pytest.raises(InvalidInput, match="over the 100-byte limit"):
        decode_image(encode(Image.effect_noise((64, 64), 50)), max_bytes=100)


@pytest.mark.parametrize("side", [10_000, 20_000])  # past our limit; past PIL's own too
def test_decompression_bomb_refused_before_decoding(side):
    # A 1-bit image compresses to a few KB but would decode to 100-400 megapixels.
    bomb = encode(Image.new("1", (side, side)))
    assert len(bomb) < 200_000
    with pytest.raises(InvalidInput, match="decompression bomb"):
        decode_image(bomb)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "1", "CMYK", "I;16", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new(mode, (20, 10))
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    decoded = decode_image(encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (20, 10)


def test_rgba_drops_alpha_like_the_reference():
    image = Image.new("RGBA", (4, 4), (200, 100, 50, 0))
    assert decode_image(encode(image)).getpixel((0, 0)) == (200, 100, 50)


def test_palette_with_transparency():
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    decoded = decode_image(encode(image, transparency=0))
    assert decoded.getpixel((0, 0)) == (10, 20, 30)


def test_16_bit_greyscale_keeps_its_range():
    array = np.full((4, 4), 32768, dtype=np.uint16)  # mid grey in 16 bits
    decoded = decode_image(encode(Image.fromarray(array)))
    assert decoded.getpixel((0, 0))[0] in (127, 128)


def test_exif_orientation_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


def test_webp_and_gif():
    for fmt in ("WEBP", "GIF", "BMP"):
        assert decode_image(encode(Image.new("RGB", (8, 8)), fmt)).size == (8, 8)
