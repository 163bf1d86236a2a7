"""Very large photos are decoded reduced with a one-line warning; hostile files are refused.

Hostile means a decompression bomb (far more pixels claimed than the file's bytes could
hold) or an image too large to decode even reduced (a format other than JPEG over Pillow's
hard limit). The test images are made at run time; the large JPEG is flat, so it is small
on disk.
"""

from __future__ import annotations

import struct
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from test_reliability import png_header_only

import accentuate as acc
from accentuate import images
from accentuate.errors import ImageError


def _big_jpeg(path: Path, size: tuple[int, int]) -> Path:
    """A grayscale JPEG of ``size`` with a bright disc in its left half (small on disk)."""
    w, h = size
    img = Image.new("L", size, 60)
    ImageDraw.Draw(img).ellipse((w // 8, h // 4, w // 8 + h // 2, 3 * h // 4), fill=220)
    img.save(path, quality=75)
    return path


def _flat_png(path: Path, w: int, h: int) -> Path:
    """A valid 8-bit grayscale PNG of zeros, written row by row (never whole in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(w + 1)  # filter byte 0, then w zero pixels
    parts = [z.compress(row) for _ in range(h)]
    idat = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_huge_legit_jpeg_is_decoded_reduced_with_one_warning(tmp_path: Path) -> None:
    # 12000 x 9000 = 108 M pixels: over Pillow's limit (89.5 M), which refused it before.
    path = _big_jpeg(tmp_path / "big.jpg", (12000, 9000))
    assert path.stat().st_size < 3_000_000
    with pytest.warns(UserWarning) as rec:
        t = acc.load_image(path)
    msgs = [str(r.message) for r in rec]
    assert len(msgs) == 1 and "\n" not in msgs[0], msgs
    assert "12000 x 9000" in msgs[0] and "decoded it reduced to 4096 x 3072" in msgs[0]
    assert tuple(t.shape) == (3, 3072, 4096)
    # the picture survived the reduction: the disc is bright, the background dark
    cy, cx = 3072 // 2, 4096 // 8 + 3072 // 4
    assert float(t[:, cy, cx].mean()) > 0.8 and float(t[:, 100, 4000].mean()) < 0.3
    # and it is usable as a seed on the 512-pixel canvas
    assert tuple(acc.prepare_seeds(t, 512).shape) == (1, 3, 384, 512)


def test_jpeg_over_pillows_hard_limit_is_read_without_touching_the_global(tmp_path, monkeypatch) -> None:
    # Pillow raises DecompressionBombError at open time over 2 x MAX_IMAGE_PIXELS. Lower the
    # limits (as if this were a 400 M pixel photo) to exercise that path on a small file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 200_000)
    path = _big_jpeg(tmp_path / "big.jpg", (1200, 600))  # 720,000 pixels > 2 x 100,000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # what Pillow alone does
    seen: list[int | None] = []
    stop = threading.Event()

    def watch() -> None:  # another thread reading Pillow's limit while the image loads
        while True:
            seen.append(Image.MAX_IMAGE_PIXELS)
            if stop.is_set():
                break

    th = threading.Thread(target=watch)
    th.start()
    try:
        with pytest.warns(UserWarning, match=r"1200 x 600 = 720,000 pixels .*decoded it reduced to 400 x 200"):
            t = images.load_image(path, max_side=400)
    finally:
        stop.set()
        th.join()
    assert tuple(t.shape) == (3, 200, 400)
    assert Image.MAX_IMAGE_PIXELS == 100_000 and set(seen) == {100_000}  # never relaxed, not even briefly


def test_large_png_is_decoded_then_reduced(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 1_000_000)
    Image.new("RGB", (900, 300), (10, 200, 30)).save(tmp_path / "wide.png")  # 270,000 pixels
    with pytest.warns(UserWarning, match="decoded it reduced to 300 x 100"):
        t = images.load_image(tmp_path / "wide.png", max_side=300)
    assert tuple(t.shape) == (3, 100, 300)
    assert abs(float(t[1].mean()) - 200 / 255) < 1e-6


def test_ordinary_large_photo_is_reduced_silently(tmp_path) -> None:
    Image.new("RGB", (6000, 3000), (10, 200, 30)).save(tmp_path / "cam.jpg")  # 18 M pixels, a camera's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = acc.load_image(tmp_path / "cam.jpg")
    assert tuple(t.shape) == (3, 2048, 4096)


def test_decompression_bomb_is_refused_by_pixels_per_byte(tmp_path) -> None:
    # A PNG claiming 20000 x 20000 pixels in 45 bytes: over Pillow's hard limit.
    png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError) as e:
        acc.load_image(tmp_path / "bomb.png")
    msg = str(e.value)
    assert "\n" not in msg and "bomb.png" in msg
    assert "claims 400,000,000 pixels in a 45-byte file" in msg and "decompression bomb" in msg


def test_bomb_under_pillows_hard_limit_is_refused_too(tmp_path) -> None:
    # 11000 x 9000 = 99 M pixels: Pillow would only warn, then try to decode it.
    png_header_only(tmp_path / "bomb.png", 11000, 9000)
    with pytest.raises(ImageError, match=r"claims 11000 x 9000 = 99,000,000 pixels in a 45-byte file"):
        acc.load_image(tmp_path / "bomb.png")
    jpeg = tmp_path / "bomb.jpg"  # a JPEG header claiming 60000 x 60000 over a tiny file
    _big_jpeg(jpeg, (64, 64))
    data = bytearray(jpeg.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    jpeg.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"claims 60000 x 60000 = 3,600,000,000 pixels .*decompression bomb"):
        acc.load_image(jpeg)


def test_valid_png_too_large_to_decode_reduced_is_refused(tmp_path) -> None:
    # 14000 x 14000 = 196 M pixels of zeros: a valid PNG (about 190 kB), but only JPEG can
    # be decoded reduced and this is over the 179 M pixels that may be decoded in full.
    path = _flat_png(tmp_path / "wall.png", 14000, 14000)
    assert path.stat().st_size < 400_000
    with pytest.raises(ImageError) as e:
        acc.load_image(path)
    msg = str(e.value)
    assert "\n" not in msg and "wall.png" in msg
    assert "196,000,000 pixels, more than the 178,956,970 that can be decoded" in msg
    assert "cannot be decoded reduced" in msg and "downscale it first" in msg
