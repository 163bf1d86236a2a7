"""Animations of an optimization, from seed to result: GIF (PIL) and MP4 (optional).

Frames come from ``Result.snapshots`` (``{step: uint8 (N, M, 3, H, W)}``, ask
:func:`accentuate.accentuate` for them with ``snapshots=``). Each frame carries a
strip with the step number. MP4 needs the ``video`` extra
(``pip install "accentuate[video]"``: imageio and imageio-ffmpeg).
"""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .figures import fit, font, to_pil

__all__ = ["frames", "gif_bytes", "mp4_available", "mp4_bytes", "snapshot_interval"]


def snapshot_interval(steps: int, frames: int = 25) -> int:
    """Snapshot every this many steps for about ``frames`` frames (seed and result included)."""
    return max(1, round(steps / max(1, frames - 1)))


def frames(
    snapshots: Mapping[int, torch.Tensor],
    i: int,
    j: int,
    total: int,
    max_side: int = 320,
    label: str = "",
) -> list[Image.Image]:
    """Frames of accentuation ``(i, j)`` in step order, each with a caption strip.

    Args:
        snapshots: ``{step: uint8 (N, M, 3, H, W)}``.
        i, j: seed and target index.
        total: the number of steps of the run (for "step t / total").
        max_side: long side of each frame's image.
        label: text before the step number (e.g. the target's name).
    """
    out = []
    f = font(14)
    for step in sorted(snapshots):
        img = fit(to_pil(snapshots[step][i, j]), (max_side, max_side))
        strip = 22
        frame = Image.new("RGB", (img.size[0], img.size[1] + strip), (255, 255, 255))
        frame.paste(img, (0, 0))
        d = ImageDraw.Draw(frame)
        text = ("seed" if step == 0 else f"step {step} / {total}")
        if label:
            text = f"{label}: {text}"
        d.text((4, img.size[1] + 3), text, fill=(20, 20, 20), font=f)
        w = round((img.size[0] - 1) * step / max(1, total))
        d.line((0, frame.size[1] - 2, w, frame.size[1] - 2), fill=(230, 90, 40), width=3)
        out.append(frame)
    return out


def gif_bytes(images: Sequence[Image.Image], frame_ms: int = 120, hold_ms: int = 1500) -> bytes:
    """An looping GIF of ``images``; the first and last frames are held for ``hold_ms``."""
    if not images:
        raise ValueError("no frames to animate")
    durations = [frame_ms] * len(images)
    durations[0] = durations[-1] = hold_ms
    rgb = [im.convert("RGB") for im in images]
    # One palette for every frame (from the first, middle and last frames side by side):
    # per-frame palettes make some viewers mix colours across frames.
    picks = [rgb[0], rgb[len(rgb) // 2], rgb[-1]]
    w, h = picks[0].size
    montage = Image.new("RGB", (w * len(picks), h))
    for k, im in enumerate(picks):
        montage.paste(im, (k * w, 0))
    palette = montage.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    pal = [im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for im in rgb]
    buf = io.BytesIO()
    pal[0].save(buf, format="GIF", save_all=True, append_images=pal[1:], duration=durations, loop=0,
                optimize=False)
    return buf.getvalue()


def mp4_available() -> str | None:
    """``None`` when MP4 can be written, else the reason it cannot."""
    missing = [m for m in ("imageio", "imageio_ffmpeg") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install \"accentuate[video]\")"
    return None


def mp4_bytes(images: Sequence[Image.Image], fps: int = 8, hold_s: float = 1.5) -> bytes:
    """An H.264 MP4 of ``images`` (needs imageio and imageio-ffmpeg); sides padded to even."""
    reason = mp4_available()
    if reason is not None:
        raise RuntimeError(f"cannot write MP4: {reason}")
    import imageio.v2 as imageio

    w, h = images[0].size
    ew, eh = w + w % 2, h + h % 2
    hold = max(1, round(hold_s * fps))
    seq = [images[0]] * hold + list(images[1:-1]) + [images[-1]] * hold
    arrays = []
    for im in seq:
        canvas = Image.new("RGB", (ew, eh), (255, 255, 255))
        canvas.paste(im.convert("RGB"), (0, 0))
        arrays.append(np.asarray(canvas))
    fd, tmp = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        imageio.mimwrite(tmp, arrays, fps=fps, codec="libx264", quality=8, macro_block_size=1)  # type: ignore[arg-type]
        with open(tmp, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(tmp)
