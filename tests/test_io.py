"""``mzsr_tf.io``: validated reads (every bad input is an InputError naming the file) and atomic writes."""

import numpy as np
import png
import pytest
import tifffile
from PIL import Image

from mzsr_tf.errors import InputError
from mzsr_tf.io import ImageData, atomic_write, list_images, read_image, write_image


@pytest.fixture
def rgb8(astronaut_uint8):
    return astronaut_uint8[:40, :48]


@pytest.fixture
def rgb16(rgb8):
    """A 16-bit picture whose low byte is not a copy of the high byte (8-bit storage would lose it)."""
    noise = np.random.default_rng(0).integers(0, 256, rgb8.shape)
    return (rgb8.astype(np.uint16) * 256 + noise).astype(np.uint16)


def _read_back(path, image):
    write_image(path, image)
    return read_image(path)


def _png_info(path):
    info = png.Reader(filename=str(path)).read()[3]
    return info["bitdepth"], info["planes"]


def _assert_no_temp_files(folder, expected):
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_8bit_rgb_round_trip(tmp_path, rgb8, suffix):
    data = _read_back(tmp_path / f"img{suffix}", ImageData(rgb8 / np.float32(255)))
    assert data.rgb.dtype == np.float32 and data.rgb.shape == rgb8.shape
    assert (data.bit_depth, data.gray, data.alpha) == (8, False, None)
    np.testing.assert_array_equal(np.round(data.rgb * 255).astype(np.uint8), rgb8)


def test_float_array_is_accepted_and_quantised(tmp_path, rgb8):
    write_image(tmp_path / "a.png", np.clip(rgb8 / 255.0 + 0.4 / 255, -1, 2))  # within half a step of rgb8
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), rgb8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_round_trip(tmp_path, rgb16, suffix):
    path = tmp_path / f"img{suffix}"
    data = _read_back(path, ImageData(rgb16 / np.float32(65535), bit_depth=16))
    assert (data.bit_depth, data.gray) == (16, False)
    np.testing.assert_array_equal(np.round(data.rgb * 65535.0).astype(np.uint16), rgb16)
    if suffix == ".png":
        assert _png_info(path) == (16, 3)
    else:
        assert tifffile.imread(path).dtype == np.uint16


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray_round_trip(tmp_path, rgb16, suffix):
    gray16 = rgb16[..., 1]
    path = tmp_path / f"gray{suffix}"
    image = ImageData(np.repeat(gray16[..., None] / np.float32(65535), 3, axis=-1), gray=True, bit_depth=16)
    data = _read_back(path, image)
    assert (data.bit_depth, data.gray) == (16, True)
    np.testing.assert_array_equal(np.round(data.rgb * 65535.0).astype(np.uint16), np.repeat(gray16[..., None], 3, -1))
    if suffix == ".png":
        assert _png_info(path) == (16, 1)
    else:
        assert tifffile.imread(path).shape == gray16.shape


def test_16bit_gray_png_written_by_pillow(tmp_path, rgb16):
    gray16 = rgb16[..., 0]
    Image.fromarray(gray16).save(tmp_path / "g.png")  # mode I;16
    data = read_image(tmp_path / "g.png")
    assert (data.bit_depth, data.gray) == (16, True)
    np.testing.assert_array_equal(np.round(data.rgb[..., 2] * 65535.0).astype(np.uint16), gray16)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_round_trip_is_close(tmp_path, rgb8, suffix):
    data = _read_back(tmp_path / f"img{suffix}", ImageData(rgb8 / np.float32(255)))
    assert data.rgb.shape == rgb8.shape and data.bit_depth == 8
    error = np.abs(data.rgb * 255.0 - rgb8)
    assert 0 < error.mean() < 6  # lossy, but close (measured 3.3 grey levels on this detailed crop)


def test_16bit_image_saved_as_jpeg_or_bmp_becomes_8bit(tmp_path, rgb16):
    image = ImageData(rgb16 / np.float32(65535), bit_depth=16)
    write_image(tmp_path / "a.bmp", image)
    assert np.asarray(Image.open(tmp_path / "a.bmp")).dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.bmp")), np.round(rgb16 / 257.0).astype(np.uint8))


# --- gray, alpha, palette ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg", ".tif"])
def test_gray_is_read_as_three_equal_channels_and_saved_as_one(tmp_path, rgb8, suffix):
    gray = rgb8[..., 0]
    source = tmp_path / f"gray{suffix}"
    Image.fromarray(gray).save(source)
    data = read_image(source)
    assert data.gray and data.rgb.shape == (*gray.shape, 3)
    np.testing.assert_array_equal(data.rgb[..., 0], data.rgb[..., 1])
    np.testing.assert_array_equal(data.rgb[..., 0], data.rgb[..., 2])
    out = write_image(tmp_path / f"out{suffix}", data)
    with Image.open(out) as im:
        assert im.mode == "L"
        if suffix != ".jpg":
            np.testing.assert_array_equal(np.asarray(im), gray)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_kept(tmp_path, rgb8, mode):
    alpha = np.tile(np.linspace(0, 255, rgb8.shape[1]).round().astype(np.uint8), (rgb8.shape[0], 1))
    pixels = np.dstack([rgb8, alpha]) if mode == "RGBA" else np.dstack([rgb8[..., 0], alpha])
    Image.fromarray(pixels, mode).save(tmp_path / "in.png")
    data = read_image(tmp_path / "in.png")
    assert data.alpha is not None and data.gray == (mode == "LA")
    np.testing.assert_array_equal(np.round(data.alpha * 255).astype(np.uint8), alpha)
    write_image(tmp_path / "out.png", data)
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == mode
        np.testing.assert_array_equal(np.asarray(im), pixels)


def test_gray_alpha_tiff_round_trip(tmp_path, rgb8):
    gray = np.repeat(rgb8[..., :1] / np.float32(255), 3, axis=-1)
    alpha = rgb8[..., 2] / np.float32(255)
    data = _read_back(tmp_path / "la.tif", ImageData(gray, alpha=alpha, gray=True))
    assert data.gray and data.alpha is not None
    np.testing.assert_allclose(data.alpha, alpha, atol=1e-6)


def test_rgba_tiff_round_trip(tmp_path, rgb8):
    alpha = rgb8[..., 2] / np.float32(255)
    data = _read_back(tmp_path / "rgba.tif", ImageData(rgb8 / np.float32(255), alpha=alpha))
    np.testing.assert_allclose(data.alpha, alpha, atol=1e-6)
    np.testing.assert_allclose(data.rgb, rgb8 / np.float32(255), atol=1e-6)


def test_jpeg_drops_alpha(tmp_path, rgb8):
    data = ImageData(rgb8 / np.float32(255), alpha=np.ones(rgb8.shape[:2], np.float32))
    write_image(tmp_path / "a.jpg", data)
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"


def _palette_image(rgb8):
    return Image.fromarray(rgb8).quantize(colors=16)


def test_palette_png_is_read_as_rgb(tmp_path, rgb8):
    im = _palette_image(rgb8)
    im.save(tmp_path / "p.png")
    data = read_image(tmp_path / "p.png")
    assert data.alpha is None and not data.gray
    np.testing.assert_array_equal(np.round(data.rgb * 255).astype(np.uint8), np.asarray(im.convert("RGB")))


def test_palette_png_with_transparency_is_read_as_rgba(tmp_path, rgb8):
    im = _palette_image(rgb8)
    index = np.asarray(im)
    im.save(tmp_path / "p.png", transparency=int(index[0, 0]))
    data = read_image(tmp_path / "p.png")
    assert data.alpha is not None
    np.testing.assert_array_equal(data.alpha == 0, index == index[0, 0])
    np.testing.assert_array_equal(np.round(data.rgb * 255).astype(np.uint8), np.asarray(im.convert("RGB")))


def test_one_bit_image_is_read_as_rgb(tmp_path):
    bits = np.random.default_rng(1).random((9, 11)) > 0.5
    Image.fromarray(bits).save(tmp_path / "b.png")
    data = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(data.rgb, np.repeat(bits[..., None], 3, -1).astype(np.float32))


# --- unreadable input -------------------------------------------------------------------------


def _expect_input_error(path, match=None, **kwargs):
    with pytest.raises(InputError, match=match) as info:
        read_image(path, **kwargs)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    _expect_input_error(tmp_path / "nope.png", "no such file")


def test_empty_file(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    _expect_input_error(tmp_path / "zero.png", "empty file")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_text_file(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("this is not an image\n" * 20)
    _expect_input_error(path)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_truncated_png(tmp_path, rgb8, rgb16, bit_depth):
    path = tmp_path / "full.png"
    write_image(path, ImageData((rgb8 / 255.0 if bit_depth == 8 else rgb16 / 65535.0), bit_depth=bit_depth))
    raw = path.read_bytes()
    for cut in (60, len(raw) // 2):
        cut_path = tmp_path / f"cut{cut}.png"
        cut_path.write_bytes(raw[:cut])
        _expect_input_error(cut_path)


def test_truncated_jpeg(tmp_path, rgb8):
    path = tmp_path / "full.jpg"
    write_image(path, rgb8 / 255.0)
    raw = path.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    _expect_input_error(tmp_path / "cut.jpg", "truncated")


def test_cmyk_jpeg_is_unsupported(tmp_path, rgb8):
    Image.fromarray(rgb8).convert("CMYK").save(tmp_path / "cmyk.jpg")
    _expect_input_error(tmp_path / "cmyk.jpg", "CMYK")


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_float_or_int32_tiff_is_unsupported(tmp_path, rgb8, dtype):
    tifffile.imwrite(tmp_path / "x.tif", rgb8.astype(dtype), photometric="rgb")
    _expect_input_error(tmp_path / "x.tif", "unsupported sample type")


def test_multipage_tiff_is_unsupported(tmp_path, rgb8):
    tifffile.imwrite(tmp_path / "x.tif", np.stack([rgb8, rgb8]), photometric="rgb")
    _expect_input_error(tmp_path / "x.tif", "multi-page")


def test_unsupported_output_extension(tmp_path, rgb8):
    with pytest.raises(InputError, match="unsupported output format") as info:
        write_image(tmp_path / "x.gif", rgb8 / 255.0)
    assert str(tmp_path / "x.gif") in str(info.value)
    _assert_no_temp_files(tmp_path, [])


# --- atomic, non-clobbering writes ------------------------------------------------------------


def test_write_image_refuses_to_overwrite(tmp_path, rgb8):
    path = tmp_path / "a.png"
    path.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists") as info:
        write_image(path, rgb8 / 255.0)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"precious"
    _assert_no_temp_files(tmp_path, ["a.png"])


def test_write_image_overwrites_when_asked(tmp_path, rgb8):
    path = tmp_path / "a.png"
    path.write_bytes(b"old")
    write_image(path, rgb8 / 255.0, overwrite=True)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb8)
    _assert_no_temp_files(tmp_path, ["a.png"])


def test_atomic_write_success_leaves_only_the_target(tmp_path):
    with atomic_write(tmp_path / "out.json") as tmp:
        assert tmp.parent == tmp_path and tmp != tmp_path / "out.json"
        assert not (tmp_path / "out.json").exists()  # nothing visible until the block succeeds
        tmp.write_text("{}")
    assert (tmp_path / "out.json").read_text() == "{}"
    _assert_no_temp_files(tmp_path, ["out.json"])


def test_atomic_write_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), atomic_write(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    _assert_no_temp_files(tmp_path, [])


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    (tmp_path / "out.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "out.json", overwrite=True) as tmp:
        tmp.write_text("new")
        raise RuntimeError("boom")
    assert (tmp_path / "out.json").read_text() == "old"
    _assert_no_temp_files(tmp_path, ["out.json"])


def test_atomic_write_refuses_and_overwrites(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    ran = []
    with pytest.raises(InputError, match="exists"), atomic_write(target):
        ran.append(True)  # refused up front: the (maybe long) work is not done for nothing
    assert not ran and target.read_text() == "old"
    with atomic_write(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    _assert_no_temp_files(tmp_path, ["out.json"])


def test_atomic_write_does_not_clobber_a_file_that_appears_meanwhile(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(InputError, match="exists"), atomic_write(target) as tmp:
        tmp.write_text("mine")
        target.write_text("theirs")  # another writer got there first
    assert target.read_text() == "theirs"
    _assert_no_temp_files(tmp_path, ["out.json"])


def test_atomic_write_needs_an_existing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"), atomic_write(tmp_path / "missing" / "out.json"):
        pass


def test_list_images_is_sorted_and_filtered(tmp_path, rgb8):
    for name in ("b.png", "a.JPG", "c.bmp", "d.txt", "e.tiff"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.bmp", "e.tiff"]


# --- decompression bombs: one pixel limit for every decoder, from the header ------------------


def _png_with_header_size(src, dst, width, height):
    """``src`` (a PNG) with its IHDR claiming ``width`` x ``height``: a bomb's header, no bomb's data."""
    import struct
    import zlib

    raw = bytearray(src.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    dst.write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_bomb_png_is_refused_from_its_header(tmp_path, rgb8, rgb16, bit_depth):
    from mzsr_tf.io import MAX_IMAGE_PIXELS

    small = tmp_path / "small.png"
    write_image(small, ImageData((rgb8 / 255.0 if bit_depth == 8 else rgb16 / 65535.0), bit_depth=bit_depth))
    side = int(MAX_IMAGE_PIXELS**0.5) + 1  # just over the default limit; a 16-bit one would be GBs of float32
    bomb = _png_with_header_size(small, tmp_path / "bomb.png", side, side)
    _expect_input_error(bomb, f"{side}x{side} is more than {MAX_IMAGE_PIXELS} pixels")
    huge = _png_with_header_size(small, tmp_path / "huge.png", 60000, 60000)  # beyond Pillow's own bomb limit
    _expect_input_error(huge, "pixels")


@pytest.mark.parametrize("suffix, bit_depth", [(".png", 8), (".png", 16), (".jpg", 8), (".bmp", 8), (".tif", 8)])
def test_pixel_limit_applies_to_every_decoder(tmp_path, rgb8, suffix, bit_depth):
    path = tmp_path / f"x{suffix}"
    write_image(path, ImageData(rgb8 / 255.0, bit_depth=bit_depth))
    h, w = rgb8.shape[:2]
    assert read_image(path, max_pixels=h * w).rgb.shape == (h, w, 3)
    _expect_input_error(path, f"{w}x{h} is more than {h * w - 1} pixels", max_pixels=h * w - 1)


def test_a_raised_limit_reads_past_pillows_own(tmp_path, rgb8, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's limit below the image; ours above it
    write_image(tmp_path / "x.png", rgb8 / 255.0)
    assert read_image(tmp_path / "x.png", max_pixels=10**6).rgb.shape == rgb8.shape
    assert Image.MAX_IMAGE_PIXELS == 100


def test_a_sigterm_that_native_code_swallowed_still_publishes_nothing(tmp_path):
    """A SIGTERM whose exception a library lost (a signal landing in a C++ call) still stops the result from being
    moved into place: the CLI exits 143 and neither the file nor the folder appears."""
    import os
    import signal

    from mzsr_tf import cli
    from mzsr_tf.errors import Terminated
    from mzsr_tf.io import atomic_folder

    def swallow_sigterm():
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next statement
            raise AssertionError("the SIGTERM handler did not run")
        except Terminated:
            pass  # what a library that catches everything does

    def write_file(argv):
        with atomic_write(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            swallow_sigterm()

    def write_folder(argv):
        with atomic_folder(tmp_path / "out") as staging:
            (staging / "a.txt").write_text("half")
            swallow_sigterm()

    def write_ok(argv):
        with atomic_write(tmp_path / "ok.txt") as tmp:
            tmp.write_text("whole")

    for main in (write_file, write_folder):
        assert cli.run(main, []) == 143
    assert list(tmp_path.iterdir()) == []
    assert cli.run(write_ok, []) == 0 and (tmp_path / "ok.txt").read_text() == "whole"  # the next call starts afresh
