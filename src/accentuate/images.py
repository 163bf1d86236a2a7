"""Reading seeds (paths, PIL images, tensors) and fitting them to a canvas.

Seeds keep their aspect ratio: with an integer canvas the longer side becomes that
many pixels; resizing is antialiased (Lanczos for files, antialiased bilinear for
tensors). Only an explicit ``canvas=(H, W)`` of another aspect ratio crops, and it
says so with a warning.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:
    from .spec import ModelSpec

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageSet",
    "as_tensors",
    "MAX_DECODE_PIXELS",
    "MAX_DECODE_SIDE",
    "MAX_PIXELS",
    "MAX_PIXELS_PER_BYTE",
    "SeedLike",
    "canvas_shape",
    "image_files",
    "load_image",
    "load_image_set",
    "model_view",
    "pil_to_tensor",
    "photo_set",
    "prepare_seeds",
    "read_image",
    "resize",
    "seed_names",
    "square_crop",
    "square_side",
    "tensor_to_pil",
]

SeedLike = str | os.PathLike | Image.Image | torch.Tensor | np.ndarray
#: A set of images: a folder, one path, a tensor ``(3, H, W)``/``(N, 3, H, W)``, or a list.
ImageSet = str | os.PathLike | torch.Tensor | Sequence[SeedLike]

#: Pillow's decompression-bomb limit (at import). Images with more pixels are "very large": they
#: are decoded reduced, with a warning, after a check that they are not decompression bombs.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: At most this many pixels are ever decoded (Pillow's own hard limit). JPEG can be decoded
#: reduced (at 1/2, 1/4 or 1/8 scale), so any JPEG whose reduced decode fits is read; other
#: formats are decoded in full before they are reduced, so larger ones are refused.
MAX_DECODE_PIXELS = 2 * MAX_PIXELS
#: A very large image claiming more pixels per byte of file than this is refused as a
#: decompression bomb. No valid file of the formats read comes near it: deflate (PNG)
#: compresses at most about 1032:1, so a flat 1-bit PNG holds at most about 8,256 pixels per
#: byte; a JPEG spends at least a bit per 8 x 8 block and channel (at most 512 per byte). A
#: header claiming a huge size over a few bytes of data is far above.
MAX_PIXELS_PER_BYTE = 10_000
#: Images are decoded at most this large along the longer side (larger ones are reduced on load).
MAX_DECODE_SIDE = 4096
#: Files up to this size are read into memory once, to be decoded and hashed from the same bytes.
READ_ONCE_BYTES = 256 << 20
#: The smallest seed side accepted.
MIN_SIDE = 8
#: File name endings read as images when a folder is given.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files directly inside ``folder`` (by name ending), sorted by name; with
    ``recursive``, those of its subfolders too, sorted by their path inside ``folder``.

    Raises:
        ImageError: the folder holds no file with an image ending.
    """
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    files = sorted((p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(root).parts)
    if not files:
        where = " or its subfolders" if recursive else ""
        raise ImageError(f"folder {str(root)!r}{where} has no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def photo_set(photos: Any, recursive: bool = True, what: str = "") -> list[tuple[SeedLike, bool, str]]:
    """The photos of a set, not yet read: ``(source, found_in_a_folder, name)`` each.

    A folder gives its image files, sorted (with ``recursive``, its subfolders' too), each named by
    its path inside the folder without the ending (``fishes/clownfish``); a file path gives itself,
    named by its stem; a tensor ``(3, H, W)`` one photo and ``(N, 3, H, W)`` N photos, a PIL image
    or an array one photo, named ``images[k]`` (``WHAT[k]`` with ``what``); a list gives each of its
    items in turn. ``what`` names the set in names and error messages.

    Raises:
        ImageError: a path that does not exist, a folder without images, or no photo at all.
    """
    items = [photos] if isinstance(photos, (str, os.PathLike, torch.Tensor, Image.Image, np.ndarray)) \
        else list(photos)
    out: list[tuple[SeedLike, bool, str]] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            path = Path(item).expanduser()
            if not path.exists():
                raise ImageError(f"{what + ': ' if what else ''}image not found: {str(item)!r}; check the path")
            if path.is_dir():
                out += [(str(f), True, f.relative_to(path).with_suffix("").as_posix())
                        for f in image_files(path, recursive=recursive)]
            else:
                out.append((str(item), False, path.stem))
        elif isinstance(item, torch.Tensor) and item.dim() == 4:
            out += [(t, False, f"{what or 'images'}[{len(out) + k}]") for k, t in enumerate(item)]
        else:
            out.append((item, False, f"{what or 'images'}[{len(out)}]"))
    if not out:
        raise ImageError(f"{what or 'images'}: no images given; give a folder, image files or tensors")
    return out


def load_image_set(images: Any, what: str = "images", recursive: bool = False) -> tuple[list[torch.Tensor], list[str]]:
    """Read a photo set (:func:`photo_set`; ``what`` names it in errors) as ``(3, H, W)`` tensors in
    [0, 1], with a name for each.

    Returns:
        ``(tensors, names)``.
    """
    entries = photo_set(images, recursive=recursive, what=what)
    return [as_tensors(src, k)[0] for k, (src, _, _) in enumerate(entries)], [name for _, _, name in entries]


def square_crop(img: torch.Tensor, side: int) -> torch.Tensor:
    """The centred square of ``img`` ``(3, H, W)``, resized to ``side x side`` (antialiased)."""
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize(img[..., top : top + s, left : left + s], (side, side))


def square_side(spec: ModelSpec, canvas: Any, what: str, flag: str = "canvas") -> int:
    """The side of the square canvas of a command that crops every photo square (``what``: its name
    in the message): ``canvas`` as an int or a square ``(H, W)``, else the model's canvas (its spec's).

    Raises:
        UsageError: a canvas that is not square, or smaller than the model input.
    """
    from .errors import UsageError

    input_size = spec.input_size
    if canvas is None:
        side = int(spec.setting("canvas"))
    elif isinstance(canvas, int):
        side = canvas
    elif len(canvas) == 2 and canvas[0] == canvas[1]:
        side = int(canvas[0])
    else:
        raise UsageError(f"{what} uses a square canvas: give {flag} as one number (the side); got "
                         f"{canvas[0]}x{canvas[1]}")
    if side < max(input_size):
        raise UsageError(f"{flag} {side} is smaller than the model input {tuple(input_size)}; use >= "
                         f"{max(input_size)}")
    return side


def model_view(images: Sequence[torch.Tensor] | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each image resized to the model's input ``size`` (the whole image, as the engine evaluates it).

    Returns:
        ``(N, 3, h, w)``.
    """
    return torch.stack([resize(t.float(), size) for t in images])


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image as a float tensor ``(3, H, W)`` in [0, 1], converting the mode to RGB.

    Grayscale, palette, CMYK and 16-bit images are converted; an alpha channel is
    composited onto white (a warning states the conversion).
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / peak, 0, 1)
        t = torch.from_numpy(arr)[None].expand(3, -1, -1).clone()
        warnings.warn(f"converted a {mode} (16-bit grayscale) image to RGB", stacklevel=3)
        return t
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        warnings.warn("converted a floating-point image to RGB, rescaled to [0, 1]", stacklevel=3)
        return torch.from_numpy(arr)[None].expand(3, -1, -1).clone()
    if "A" in mode or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        warnings.warn(f"composited a {mode} image with transparency onto white", stacklevel=3)
    elif mode != "RGB":
        img = img.convert("RGB")
        if mode not in ("L", "P", "1"):
            warnings.warn(f"converted a {mode} image to RGB", stacklevel=3)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


def _is_jpeg(src: Path | io.BytesIO) -> bool:
    if isinstance(src, io.BytesIO):
        return src.getvalue()[:3] == b"\xff\xd8\xff"
    with open(src, "rb") as f:
        return f.read(3) == b"\xff\xd8\xff"


def _refuse_bomb(path: Path, pixels: int, nbytes: int, dims: str = "") -> None:
    """Raise :class:`ImageError` when an image claims too many pixels for its file size."""
    ratio = pixels / max(1, nbytes)
    if ratio > MAX_PIXELS_PER_BYTE:
        raise ImageError(
            f"image {str(path)!r} claims {dims}{pixels:,} pixels in a {nbytes:,}-byte file ({ratio:,.0f} "
            f"pixels per byte; real images have under {MAX_PIXELS_PER_BYTE:,}): refused as a likely "
            "decompression bomb; if it is genuine, save it smaller"
        )


def _too_large(path: Path, pixels: str, fmt: str | None) -> ImageError:
    return ImageError(
        f"image {str(path)!r} is {pixels} pixels, more than the {MAX_DECODE_PIXELS:,} that can be decoded "
        f"({fmt or 'its format'} cannot be decoded reduced; JPEG can); downscale it first"
    )


def _open(path: Path, src: Path | io.BytesIO, nbytes: int) -> Image.Image:
    """``Image.open``, but a JPEG over Pillow's hard decompression-bomb limit is opened too.

    Pillow refuses, at open time, any image over twice ``Image.MAX_IMAGE_PIXELS``: before
    it could be decoded reduced. Such a JPEG is opened here through its plugin class,
    which reads only the header; :func:`load_image` then judges it (pixels per byte,
    reduced size). Pillow's global limit is never changed, so code in other threads
    keeps its check. Other formats over the limit cannot be decoded reduced: refused.
    """
    try:
        return Image.open(src)
    except Image.DecompressionBombError as e:
        if _is_jpeg(src):
            from PIL import JpegImagePlugin

            if isinstance(src, io.BytesIO):
                src.seek(0)
            return JpegImagePlugin.JpegImageFile(src)
        m = re.search(r"\((\d+) pixels\)", str(e))  # Pillow: "Image size (N pixels) exceeds limit ..."
        if m is None:
            raise _too_large(path, f"over {MAX_DECODE_PIXELS:,}", None) from None
        _refuse_bomb(path, int(m.group(1)), nbytes)
        raise _too_large(path, f"{int(m.group(1)):,}", None) from None


def load_image(path: str | os.PathLike, max_side: int = MAX_DECODE_SIDE) -> torch.Tensor:
    """Read an image file as ``(3, H, W)`` in [0, 1], at most ``max_side`` on the longer side.

    Larger images are reduced on load. A JPEG is decoded reduced (Pillow's ``draft``:
    1/2, 1/4 or 1/8 scale, without building the full image), other formats are
    decoded and then reduced (``Image.reduce``, then a Lanczos resize). An image over
    Pillow's decompression-bomb limit (:data:`MAX_PIXELS`) is read the same way with a
    one-line warning, unless it is hostile: more pixels per byte of file than
    :data:`MAX_PIXELS_PER_BYTE` (a decompression bomb), or more than
    :data:`MAX_DECODE_PIXELS` to decode even reduced.

    Raises:
        ImageError: the path is missing, a folder, empty, not an image, truncated,
            a decompression bomb, too large to decode, or too small; the message
            names the file and the problem.
    """
    p = _checked(path)
    return _decode(p, p, p.stat().st_size, max_side)


def read_image(path: str | os.PathLike, max_side: int = MAX_DECODE_SIDE) -> tuple[torch.Tensor, str]:
    """:func:`load_image` and the SHA-256 of the file, both from one read of its bytes (a run
    records each seed's hash: the file is read once, not once to decode and once to hash).

    Returns:
        ``(image (3, H, W) in [0, 1], sha256 hex)``.

    Raises:
        ImageError: as :func:`load_image`.
    """
    p = _checked(path)
    if p.stat().st_size > READ_ONCE_BYTES:  # a huge file is decoded from disk (reduced), hashed streaming
        from .digest import file_sha256

        return load_image(p, max_side), file_sha256(p) or ""
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read image {str(p)!r}: {e.strerror or type(e).__name__}") from None
    return _decode(p, io.BytesIO(data), len(data), max_side), hashlib.sha256(data).hexdigest()


def _checked(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path`, refused when missing, a folder or empty."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image not found: {str(p)!r}; check the path")
    if p.is_dir():
        raise ImageError(f"{str(p)!r} is a folder, not an image file; pass the image files inside it")
    if p.stat().st_size == 0:
        raise ImageError(f"image file {str(p)!r} is empty (0 bytes)")
    return p


def _decode(p: Path, src: Path | io.BytesIO, nbytes: int, max_side: int) -> torch.Tensor:
    """Decode the image of ``src`` (the file ``p``, or its bytes): see :func:`load_image`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below
            img_ctx = _open(p, src, nbytes)
        with img_ctx as img:
            w, h = img.size
            very_large = w * h > MAX_PIXELS
            if very_large:
                _refuse_bomb(p, w * h, nbytes, f"{w} x {h} = ")
            if max(w, h) > max_side:
                # JPEG decodes at 1/2, 1/4, 1/8 scale without building the full image; others: no-op.
                img.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
            dw, dh = img.size  # what will be decoded
            if dw * dh > MAX_DECODE_PIXELS:
                raise _too_large(p, f"{w} x {h} = {w * h:,}", img.format)
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            img.load()
            if max(img.size) > max_side:
                factor = max(img.size) // max_side
                if factor >= 2 and img.mode not in ("1", "P", "I;16", "I;16B", "I;16L"):
                    # a box reduction by an integer factor first (fast on huge images; not for palettes)
                    img = img.reduce(factor)
                s = max_side / max(img.size)
                if s < 1:
                    img = img.resize((max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s))),
                                     Image.Resampling.LANCZOS)
            t = pil_to_tensor(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{str(p)!r} is not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image {str(p)!r}: {e} (truncated or corrupt?)") from None
    if very_large:
        warnings.warn(
            f"image {str(p)!r} is {w} x {h} = {w * h:,} pixels (over Pillow's limit of {MAX_PIXELS:,}); "
            f"decoded it reduced to {t.shape[-1]} x {t.shape[-2]}, more than the canvas needs",
            stacklevel=2,
        )
    if min(t.shape[-2:]) < MIN_SIDE:
        raise ImageError(
            f"image {str(p)!r} is {t.shape[-1]} x {t.shape[-2]} pixels; seeds need at least "
            f"{MIN_SIDE} pixels on each side"
        )
    return t


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` or ``(4, H, W)`` in [0, 1] to a PIL RGB/RGBA image."""
    arr = (t.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")


def _check_tensor(t: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if not (t.is_floating_point() or t.dtype == torch.uint8):
        raise ImageError(f"{what} has dtype {t.dtype}; expected float in [0, 1] (or uint8)")
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise ImageError(f"{what} has shape {tuple(t.shape)}; expected (3, H, W) or (N, 3, H, W)")
    if t.dtype == torch.uint8:
        return t.float() / 255
    if not torch.isfinite(t).all():
        raise ImageError(f"{what} contains NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if hi > 1.0 + 1e-3 and hi <= 255.0 + 1e-3 and lo >= 0:
        raise ImageError(
            f"{what} has values up to {hi:g}: it looks like 0-255 data; divide by 255 for [0, 1]"
        )
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ImageError(f"{what} has values in [{lo:g}, {hi:g}]; expected [0, 1]")
    if min(t.shape[-2:]) < MIN_SIDE:
        raise ImageError(f"{what} is {tuple(t.shape[-2:])}; seeds need at least {MIN_SIDE} pixels a side")
    return t.float().clamp(0, 1)


def as_tensors(seed: SeedLike, index: int) -> list[torch.Tensor]:
    """One seed (path, PIL image or tensor ``(3, H, W)``/``(N, 3, H, W)`` in [0, 1]) as a list
    of ``(3, H, W)`` tensors; ``index`` names it in error messages."""
    if isinstance(seed, (str, os.PathLike)):
        return [load_image(seed)]
    if isinstance(seed, Image.Image):
        return [pil_to_tensor(seed)]
    if isinstance(seed, np.ndarray):
        arr = seed
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] not in (3,):
            arr = arr[..., :3].transpose(2, 0, 1)
        seed = torch.from_numpy(np.ascontiguousarray(arr))
    if isinstance(seed, torch.Tensor):
        t = _check_tensor(seed.detach(), f"seed {index}")
        return list(t) if t.dim() == 4 else [t]
    raise ImageError(
        f"seed {index} has type {type(seed).__name__}; expected a path, PIL image, tensor or array"
    )


def seed_names(seeds: SeedLike | Sequence[SeedLike] | None) -> list[str]:
    """A name for each seed :func:`prepare_seeds` makes of ``seeds``, for file names and records.

    A path gives its file name, a PIL image read from a file its file name; other seeds
    (tensors, arrays, PIL images made in memory) are ``seed{i}`` by their position in
    the batch. ``None`` (noise-seeded) is ``["noise"]``.

    Example:
        >>> seed_names(["photos/cat.jpg", torch.zeros(2, 3, 8, 8)])
        ['cat.jpg', 'seed1', 'seed2']
    """
    if seeds is None:
        return ["noise"]
    items = list(seeds) if isinstance(seeds, (list, tuple)) else [seeds]
    names: list[str] = []
    for s in items:
        if isinstance(s, (str, os.PathLike)):
            names.append(Path(s).name)
        elif isinstance(s, Image.Image) and (fname := str(getattr(s, "filename", None) or "")):
            names.append(Path(fname).name)
        elif isinstance(s, (torch.Tensor, np.ndarray)) and s.ndim == 4:
            base = len(names)
            names.extend(f"seed{base + k}" for k in range(s.shape[0]))
        else:
            names.append(f"seed{len(names)}")
    return names


def canvas_shape(hw: tuple[int, int], canvas: int | Sequence[int]) -> tuple[int, int]:
    """The canvas ``(H, W)`` for an image of size ``hw``: long side ``canvas``, same aspect."""
    if isinstance(canvas, int):
        h, w = hw
        s = canvas / max(h, w)
        return (max(1, round(h * s)), max(1, round(w * s)))
    ch, cw = canvas
    return (int(ch), int(cw))


def resize(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``(3, H, W)`` or ``(N, 3, H, W)``."""
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    x = t if t.dim() == 4 else t[None]
    out = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return out if t.dim() == 4 else out[0]


def _cover_crop(t: torch.Tensor, hw: tuple[int, int], index: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    th, tw = hw
    if abs(h / w - th / tw) <= 0.01 * (th / tw):
        return resize(t, hw)
    s = max(th / h, tw / w)
    nh, nw = max(th, math.ceil(h * s)), max(tw, math.ceil(w * s))
    r = resize(t, (nh, nw))
    top, left = (nh - th) // 2, (nw - tw) // 2
    warnings.warn(
        f"seed {index} ({w} x {h}) has another aspect ratio than the canvas ({tw} x {th}); "
        "its centre was cropped to fit",
        stacklevel=4,
    )
    return r[:, top : top + th, left : left + tw]


def prepare_seeds(
    seeds: SeedLike | Sequence[SeedLike], canvas: int | Sequence[int]
) -> torch.Tensor:
    """Load seeds and fit them to one canvas: ``(N, 3, H, W)`` in [0, 1].

    With an integer ``canvas``, every seed must have the same aspect ratio (the
    canvas keeps it); with ``canvas=(H, W)``, seeds of another aspect ratio are
    centre-cropped to fit, with a warning.
    """
    items = list(seeds) if isinstance(seeds, (list, tuple)) else [seeds]
    if not items:
        raise ImageError("no seed images given")
    tensors: list[torch.Tensor] = []
    for i, s in enumerate(items):
        tensors.extend(as_tensors(s, i))  # type: ignore[arg-type]
    if isinstance(canvas, int):
        shapes = {canvas_shape((int(t.shape[-2]), int(t.shape[-1])), canvas) for t in tensors}
        if len(shapes) > 1:
            raise ImageError(
                f"seeds of different aspect ratios give different canvases {sorted(shapes)}; "
                "pass canvas=(H, W) to crop them to one shape, or accentuate them in separate calls"
            )
        hw = shapes.pop()
        return torch.stack([resize(t, hw) for t in tensors])
    hw = canvas_shape((1, 1), canvas)
    return torch.stack([_cover_crop(t, hw, i) for i, t in enumerate(tensors)])
