"""Input image preparation: colour modes, orientation, resize modes, size rules, broken and hostile files."""

import io
from pathlib import Path

import pytest
from PIL import Image

from svd_core.errors import ImageError
from svd_core.images import ImageSpec, prepare_image


def _png_bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


SPEC = ImageSpec(multiple=32, min_side=32)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "I;16", "1", "F"])
def test_any_colour_mode_to_rgb(mode):
    img = Image.new("RGB", (80, 60), (200, 40, 10)).convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "F") else "PNG"
    out = prepare_image(_png_bytes(img, fmt), 64, 64, spec=SPEC)
    assert out.image.mode == "RGB" and out.image.size == (64, 64)


def test_alpha_goes_on_white():
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    out = prepare_image(_png_bytes(img), 64, 64, spec=SPEC)
    assert out.image.getpixel((10, 10)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (96, 64), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 48, 64))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = prepare_image(_png_bytes(img, "JPEG", exif=exif), 64, 96, resize_mode="stretch", spec=SPEC)
    r, g, b = out.image.getpixel((32, 10))  # the red half is now on top
    assert r > 200 and b < 60


@pytest.mark.parametrize("mode, size", [("crop", (128, 64)), ("pad", (128, 64)), ("stretch", (64, 128))])
def test_resize_modes_hit_target(large_png, mode, size):
    out = prepare_image(large_png, *size, resize_mode=mode, spec=SPEC)
    assert out.image.size == size and out.original_size == (1024, 576)


def test_size_snapping_minimum_and_upscale_notes(input_png):
    out = prepare_image(input_png, 100, 70, spec=SPEC)
    assert out.image.size == (96, 64)
    assert any("snapped to 96x64" in n for n in out.notes)
    assert any("upscaled" in n for n in out.notes)
    with pytest.raises(ImageError, match="minimum side of 256"):
        prepare_image(input_png, 128, 128, spec=ImageSpec(64, 256))


def test_animated_uses_first_frame():
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = prepare_image(buf.getvalue(), 64, 64, spec=SPEC)
    assert any("first frame of 2" in n for n in out.notes)
    assert out.image.getpixel((5, 5))[0] > 200


@pytest.mark.parametrize("data, match", [
    (b"", "not a readable image"),
    (b"definitely not an image", "not a readable image"),
])
def test_broken_images(data, match):
    with pytest.raises(ImageError, match=match):
        prepare_image(data, 64, 64, spec=SPEC)


def test_truncated_image(input_png):
    data = Path(input_png).read_bytes()
    with pytest.raises(ImageError, match="broken or truncated"):
        prepare_image(data[: len(data) // 2], 64, 64, spec=SPEC)


def test_too_small_and_bomb():
    with pytest.raises(ImageError, match="too small"):
        prepare_image(_png_bytes(Image.new("RGB", (8, 8))), 64, 64, spec=SPEC)
    bomb = _png_bytes(Image.new("1", (10000, 10000)))  # 100 MP, a few kB
    with pytest.raises(ImageError, match="MP"):
        prepare_image(bomb, 64, 64, spec=SPEC)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        prepare_image(tmp_path / "nope.png", 64, 64, spec=SPEC)
