"""Screenshots of report pages for the docs, taken with headless Chromium (Debian's ``chromium``).

    python docs/figures/report_screenshots.py RUN_DIR docs/figures/report_run.png
    python docs/figures/report_screenshots.py EXPLAIN_DIR docs/figures/report_explain.png --height 1500
    python docs/figures/report_screenshots.py RUN_DIR docs/figures/report_detail.png --open 0

Each shot is the top ``--height`` CSS pixels of the page at ``--width``, saved as a PNG of
at most about 300 KB (:func:`accentuate.outputs.figures.save_image` reduces the palette and
then the size when needed). ``--open K`` opens the details of card K first; ``--mask`` turns
the opacity mask on; ``--blend`` sets the seed-to-accentuation slider (0-100).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1400)
    ap.add_argument("--open", type=int, metavar="K")
    ap.add_argument("--mask", action="store_true")
    ap.add_argument("--blend", type=int)
    ap.add_argument("--scroll", metavar="SELECTOR", help="scroll this element to the top first")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from accentuate.outputs.figures import save_image

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = b.new_page(viewport={"width": args.width, "height": args.height})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((args.folder / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        if args.blend is not None:
            page.fill("#blend", str(args.blend))
            page.dispatch_event("#blend", "input")
        if args.mask:
            page.check("#mask")
        if args.scroll:
            page.eval_on_selector(args.scroll, "e => e.scrollIntoView()")
        if args.open is not None:
            page.click(f"#card-{args.open} button.open")
            page.wait_for_function("document.getElementById('d-gif').complete")
        page.wait_for_timeout(400)
        shot = page.screenshot(full_page=False)
        b.close()
    if errors:
        print(f"console errors: {errors}", file=sys.stderr)
        return 1
    save_image(Image.open(io.BytesIO(shot)).convert("RGB"), args.png)
    print(f"{args.png}: {args.png.stat().st_size // 1000} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
