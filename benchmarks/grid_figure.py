"""Before/after pictures of the patch-grid measurement, from ``calibrate_vit.py --images`` folders.

Each row is one run's result for one pair: the result, its change (``result - seed``,
amplified 4 x around mid-grey), optionally a 2 x zoom of the change, and the change's power
spectrum (log scale, Hann window, up to half the model input's frequency, 112 cycles per
extent, with ticks at the patch lattice, multiples of 16: where a patch grid puts its peaks),
with the run's label and the pair's grid score.

    python benchmarks/grid_figure.py --pair chelsea_like_astronaut --out docs/figures/vit_grid.png \\
        "naive ViT=/tmp/img/naive:benchmarks/calibration/vit/naive.json" \\
        "defaults ViT=/tmp/img/defaults:benchmarks/calibration/vit/defaults.json"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import accentuate as acc
from accentuate.metrics import gray, power_spectrum


def spectrum(seed: Path, result: Path, size: int, cycles: float = 16, limit: int = 112) -> Image.Image:
    """The change's log power spectrum as a grey image, frequencies -limit..limit on both axes."""
    change = gray(acc.load_image(result) - acc.load_image(seed))[None]
    p = torch.fft.fftshift(power_spectrum(change))
    h, w = p.shape
    cy, cx = h // 2, w // 2
    p = p[cy - limit: cy + limit + 1, cx - limit: cx + limit + 1].log10()
    lo, hi = torch.quantile(p.flatten().float(), 0.02), torch.quantile(p.flatten().float(), 0.999)
    img = ((p - lo) / (hi - lo)).clamp(0, 1)
    tile = Image.fromarray((img.numpy() * 255).astype("uint8")).resize((size, size), Image.NEAREST).convert("RGB")
    d = ImageDraw.Draw(tile)
    scale = size / (2 * limit + 1)
    k = 1
    while k * cycles <= limit:
        for f in (limit + k * cycles, limit - k * cycles):
            t = int((f + 0.5) * scale)
            d.line([(t, 0), (t, 4)], fill="red")
            d.line([(0, t), (4, t)], fill="red")
        k += 1
    return tile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows", nargs="+", help="LABEL=FOLDER:RUN.json, one per row")
    ap.add_argument("--pair", required=True, help="the pair's file stem, e.g. chelsea_like_astronaut")
    ap.add_argument("--height", type=int, default=224, help="height of each tile")
    ap.add_argument("--crop", type=int, nargs=4, default=None, metavar=("L", "T", "R", "B"),
                    help="also show this box of the change at 2 x (fractions x 1000 of the image)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    seed_name, ref_name = args.pair.split("_like_")
    tiles: list[list[Image.Image]] = []
    labels: list[str] = []
    for spec in args.rows:
        label, rest = spec.split("=", 1)
        folder, run = rest.rsplit(":", 1)
        doc = json.loads(Path(run).read_text())
        row = next(r for r in doc["pairs"] if r["seed"] == seed_name and r["reference"] == ref_name)
        imgs = [Image.open(Path(folder) / f"{args.pair}{s}.png").convert("RGB") for s in ("", "_change")]
        if args.crop:
            c = imgs[1]
            box = tuple(int(v / 1000 * (c.width if i % 2 == 0 else c.height)) for i, v in enumerate(args.crop))
            imgs.append(c.crop(box).resize(((box[2] - box[0]) * 2, (box[3] - box[1]) * 2), Image.NEAREST))
        h = args.height
        row_tiles = [im.resize((round(im.width * h / im.height), h), Image.LANCZOS if im is not imgs[-1] or
                               not args.crop else Image.NEAREST) for im in imgs]
        row_tiles.append(spectrum(Path(folder) / f"{args.pair}_seed.png", Path(folder) / f"{args.pair}.png", h))
        tiles.append(row_tiles)
        labels.append(f"{label}: cosine {row['cos_before']:.2f} -> {row['cos_after']:.2f}, "
                      f"SSIM {row['ssim']:.2f}, grid score {row['grid_db']:.2f} dB")
    pad, text_h = 6, 18
    width = max(sum(t.width for t in r) + pad * (len(r) - 1) for r in tiles)
    height = sum(r[0].height + text_h + pad for r in tiles)
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    y = 0
    for r, label in zip(tiles, labels):
        draw.text((2, y + 2), label, fill="black")
        x = 0
        for t in r:
            out.paste(t, (x, y + text_h))
            x += t.width + pad
        y += r[0].height + text_h + pad
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out.save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
