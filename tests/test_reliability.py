"""Bad input gets a specific exception with a one-line message; the model is left as found."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from conftest import FAST, TINY_SPEC, TinyNet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import accentuate as acc
from accentuate.errors import ImageError


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims a size without the pixels (what a decompression bomb looks like)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def photo_array(h=60, w=80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256], -1).astype(np.uint8)


# -- image files ----------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="image not found: '.*nope.jpg'; check the path"):
        acc.load_image(tmp_path / "nope.jpg")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ImageError, match="is a folder, not an image file"):
        acc.load_image(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageError, match="is empty"):
        acc.load_image(tmp_path / "e.png")


def test_text_named_png(tmp_path):
    (tmp_path / "t.png").write_text("hello, I am not a picture")
    with pytest.raises(ImageError, match="not an image file PIL can read"):
        acc.load_image(tmp_path / "t.png")


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(photo_array(200, 200)).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="cannot read image .*truncated or corrupt"):
        acc.load_image(tmp_path / "cut.jpg")


def test_huge_image_is_refused_before_decoding(tmp_path):
    png_header_only(tmp_path / "huge.png", 20000, 20000)
    with pytest.raises(ImageError, match=r"claims 400,000,000 pixels in a 45-byte file .* decompression bomb"):
        acc.load_image(tmp_path / "huge.png")


def test_large_image_is_reduced_on_load(tmp_path):
    Image.new("RGB", (6000, 3000), (10, 200, 30)).save(tmp_path / "big.jpg")
    t = acc.load_image(tmp_path / "big.jpg")
    assert max(t.shape[-2:]) <= 4096 and t.shape[-1] == 2 * t.shape[-2]


def test_tiny_image(tmp_path):
    Image.new("RGB", (3, 3)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="3 x 3 pixels; seeds need at least 8"):
        acc.load_image(tmp_path / "tiny.png")


@pytest.mark.parametrize(
    "mode, note",
    [("L", None), ("P", None), ("CMYK", "converted a CMYK image to RGB"),
     ("RGBA", "composited a RGBA image with transparency onto white"),
     ("I;16", "16-bit grayscale")],
)
def test_modes_are_converted_and_said(tmp_path, mode, note):
    rgb = Image.fromarray(photo_array())
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
        path = tmp_path / "x.png"
    elif mode == "CMYK":
        img, path = rgb.convert("CMYK"), tmp_path / "x.jpg"
    elif mode == "RGBA":
        img = rgb.convert("RGBA")
        img.putalpha(Image.new("L", img.size, 0))  # fully transparent: becomes white
        path = tmp_path / "x.png"
    else:
        img, path = rgb.convert(mode), tmp_path / "x.png"
    img.save(path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t = acc.load_image(path)
    assert t.shape == (3, 60, 80) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    messages = " ".join(str(w.message) for w in rec)
    if note:
        assert note in messages
    if mode == "RGBA":
        assert torch.allclose(t, torch.ones_like(t))
    if mode == "I;16":  # scaled from 16 bits, not clipped at 255 of 65535
        gray = torch.from_numpy(np.array(Image.fromarray(photo_array()).convert("L"))).float() / 255
        assert torch.allclose(t[0], gray, atol=1 / 255)


# -- seed tensors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed, message",
    [
        (torch.full((3, 16, 16), float("nan")), "NaN or infinite"),
        (torch.full((3, 16, 16), float("inf")), "NaN or infinite"),
        (torch.rand(16, 16), r"shape \(16, 16\); expected \(3, H, W\)"),
        (torch.rand(4, 16, 16), r"shape \(4, 16, 16\)"),
        (torch.randint(0, 5, (3, 16, 16)), "dtype torch.int64"),
        (torch.rand(3, 16, 16) * 255, "looks like 0-255 data; divide by 255"),
        (torch.rand(3, 16, 16) - 2, r"values in \[-\d.*expected \[0, 1\]"),
        ("not/a/file.png", "image not found"),
        (3.5, "seed 0 has type float"),
    ],
)
def test_bad_seed_tensors(seed, message):
    with pytest.raises(ImageError, match=message):
        acc.prepare_seeds(seed, 48)


def test_uint8_and_numpy_seeds_are_accepted():
    arr = photo_array()
    a = acc.prepare_seeds(arr, 80)
    b = acc.prepare_seeds(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), 80)
    assert a.shape == b.shape == (1, 3, 60, 80) and torch.allclose(a, b)


def test_mixed_aspect_ratios_need_an_explicit_canvas():
    with pytest.raises(ImageError, match=r"different aspect ratios.*canvas=\(H, W\)"):
        acc.prepare_seeds([torch.rand(3, 40, 40), torch.rand(3, 40, 80)], 64)
    with pytest.warns(UserWarning, match="centre was cropped"):
        out = acc.prepare_seeds([torch.rand(3, 40, 40), torch.rand(3, 40, 80)], (48, 48))
    assert out.shape == (2, 3, 48, 48)


# -- every error path leaves the model as found ----------------------------------------------
def hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


ERRORS = [
    (dict(targets="durian"), acc.ClassNameError),
    (dict(targets=9), acc.ClassNameError),
    (dict(targets=acc.channel("conv9", 0)), acc.LayerError),
    (dict(targets=acc.channel("conv2", 99)), ValueError),
    (dict(targets=1, reg_layer="nope"), acc.LayerError),
    (dict(targets=1, crop_range=(0.0, 0.5)), ValueError),
    (dict(targets=1, steps=-1), ValueError),
    (dict(targets=1, lam=float("nan")), ValueError),
    (dict(targets=1, canvas=20), ValueError),
    (dict(targets=1, noise=(0.02, -0.01)), ValueError),
    (dict(targets=1, noise=(float("nan"), 0.02)), ValueError),
    (dict(targets=1, seeds=torch.full((3, 48, 48), float("nan"))), ImageError),
    (dict(targets=1, seed="seven"), TypeError),
    (dict(targets=acc.channel("unused", 0)), acc.LayerError),  # in the model, never runs
    (dict(targets=1, reg_layer="unused"), acc.LayerError),
    (dict(targets=1, model_raises=True), acc.ModelError),
]


class WithUnused(TinyNet):
    """TinyNet plus a layer its forward never calls; optionally failing inside its forward."""

    def __init__(self, raises: bool = False) -> None:
        super().__init__()
        self.unused = torch.nn.Conv2d(16, 4, 1)
        self.raises = raises

    def forward(self, x):
        if self.raises and x.shape[0] > 1:  # after the checks on one example input
            torch.relu(self.conv1(x))
            raise RuntimeError("boom inside forward")
        return super().forward(x)


@pytest.mark.parametrize("kwargs, exc", ERRORS, ids=lambda v: repr(v)[:40])
def test_error_paths_leave_model_untouched(kwargs, exc, seed_img):
    kwargs = dict(kwargs)
    model = WithUnused(raises=kwargs.pop("model_raises", False))
    model.accentuate_spec = TINY_SPEC
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    kwargs = {"seeds": seed_img, **kwargs}
    with pytest.raises(exc) as info:
        acc.accentuate(model, kwargs.pop("seeds"), kwargs.pop("targets"), **{**FAST, **kwargs})
    assert "\n" not in str(info.value)
    assert hooks(model) == 0 and model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


# -- property test ----------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h=st.integers(32, 70), w=st.integers(32, 70), n=st.integers(1, 2), m=st.integers(1, 2),
    lo=st.floats(0.05, 1.0), span=st.floats(0.0, 1.0), param=st.sampled_from(["pixel", "fourier", "phase"]),
    seed=st.integers(0, 2**16),
)
def test_property_shapes_ranges_no_nan(h, w, n, m, lo, span, param, seed):
    hi = lo + (1 - lo) * span
    model = TinyNet()
    model.accentuate_spec = TINY_SPEC
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(n, 3, h, w, generator=g)
    targets = [1, acc.channel("conv2", 3)][:m]
    res = acc.accentuate(model, seeds, targets, canvas=(h, w), crops=3, steps=3, crop_range=(lo, hi),
                         param=param, seed=seed)
    assert res.images.shape == (n, m, 3, h, w) and res.masks.shape == (n, m, h, w)
    assert torch.isfinite(res.images).all() and torch.isfinite(res.masks).all()
    assert res.images.min() >= 0 and res.images.max() <= 1 and (res.masks >= 0).all()
    assert torch.isfinite(res.history.objective).all() and not res.failed


def test_unwritable_output_folder_is_a_clear_error(tmp_path, seed_img):
    model = TinyNet()
    model.accentuate_spec = TINY_SPEC
    res = acc.accentuate(model, seed_img, 1, **FAST)
    (tmp_path / "afile").write_text("in the way")
    with pytest.raises(acc.OutputError, match=r"cannot write to folder '.*afile.sub' \(.*\); choose another folder"):
        res.save(tmp_path / "afile" / "sub")
    with pytest.raises(OSError):  # also an OSError for callers catching that
        res.save(tmp_path / "afile")
    assert sorted(p.name for p in res.save(tmp_path / "ok")) == [
        "contact_sheet.png", "result.npz", "run.json", "seed0__banana.png", "seed0__banana_figure.png",
        "seed0__banana_rgba.png"]
    assert not list(tmp_path.glob("**/.*.tmp*"))  # no temporary files left behind
