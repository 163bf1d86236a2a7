"""Small copies of a run's images for the report page (thumbnails and the seed on its canvas).

Files go to ``report-files/`` inside the output folder, named by the SHA-256 of
their source, so a rebuilt report reuses what is there and never shows a stale
picture. WebP when Pillow has it (small, with alpha), else JPEG / PNG.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, features

from ..outputs.io import atomic_write

__all__ = ["ASSETS", "THUMB_SIDE", "image_copy"]

#: The report's own folder inside an output folder.
ASSETS = "report-files"
#: Long side of a thumbnail in pixels (cards are about 200 CSS pixels wide).
THUMB_SIDE = 224

_WEBP = features.check("webp")


def _encode(img: Image.Image, alpha: bool) -> tuple[bytes, str]:
    buf = io.BytesIO()
    if _WEBP:
        img.save(buf, format="WEBP", quality=82, method=4)
        return buf.getvalue(), "webp"
    if alpha:
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue(), "png"
    img.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue(), "jpg"


def image_copy(folder: Path, source: Image.Image | Path, key: str, tag: str, side: int | None = THUMB_SIDE,
               alpha: bool = False) -> tuple[str, tuple[int, int]]:
    """Write (once) a copy of ``source`` scaled to ``side`` (its long side; ``None``: as is).

    Args:
        folder: the output folder (the copy goes to ``folder/report-files``).
        source: an image file or a PIL image.
        key: identifies the content (e.g. the source file's SHA-256); with ``tag``
            and ``side`` it names the copy.
        alpha: keep the alpha channel (RGBA images with their opacity).

    Returns:
        The copy's path relative to ``folder`` (with ``/``) and its size ``(w, h)``.

    Raises:
        OSError: the source cannot be read.
    """
    base = hashlib.sha256(f"{key}|{tag}|{side}|{alpha}".encode()).hexdigest()[:16]
    assets = folder / ASSETS
    for ext in ("webp", "png", "jpg"):
        p = assets / f"{tag}-{base}.{ext}"
        if p.exists():
            with Image.open(p) as im:
                return f"{ASSETS}/{p.name}", im.size
    if isinstance(source, Image.Image):
        img = source
    else:
        with Image.open(source) as im:
            im.load()
            img = im
    img = img.convert("RGBA" if alpha else "RGB")
    if side is not None and max(img.size) > side:
        s = side / max(img.size)
        img = img.resize((max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s))),
                         Image.Resampling.LANCZOS)
    data, ext = _encode(img, alpha)
    assets.mkdir(parents=True, exist_ok=True)
    name = f"{tag}-{base}.{ext}"
    atomic_write(assets / name, data)
    return f"{ASSETS}/{name}", img.size
