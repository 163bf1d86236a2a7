"""Pilot a built study before recruiting anyone (docs/study.md): model observers answer its trials,
scripted participants play its page in headless Chromium through ``accentuate study serve``'s
server, and ``study analyze`` scores them; screenshots of each kind of screen are written.

    accentuate study build ~/.cache/accentuate/gcompris/photos --features classes:3 channels:blocks.14:2 \\
        --trials 6 --references 3 --steps 20 --crops 4 --canvas 256 --out runs/study
    python benchmarks/study_pilot.py runs/study --observers efficientnet_lite0 dinov2_vits14_focus

The scripted participants are checks of the kit, not data: ``truth`` answers by the stored answer
(it must score 100 %), ``guess`` answers the catch trials right and the others by a fair coin (it
must score near 50 %). Their files go to DIR/responses/ like a person's and are analyzed on their
own; then (unless ``--keep``) they are moved to DIR/pilot-responses/, so that the study's
analysis (study.md, report.html) holds the people who took it, none yet, and the observers. Needs Playwright for Python and a Chromium
(``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import accentuate as acc
from accentuate.analysis.writing import markdown_table
from accentuate.study.serve import make_server

CHROMIUM = "/usr/bin/chromium"


def _first_trial(page: Any, shots: Path | None) -> None:
    page.wait_for_selector(".study-answer-yes")
    if shots:
        page.screenshot(path=str(shots / "1-consent.png"))
    page.click(".study-answer-yes")
    first = True
    while not page.query_selector("[data-trial-id]"):
        title = page.text_content(".study-text h1")
        if shots and first:
            page.screenshot(path=str(shots / "2-instructions.png"))
        first = False
        page.click("#jspsych-instructions-next")
        page.wait_for_function("t => document.querySelector('[data-trial-id]') || "
                               "(document.querySelector('.study-text h1') || {}).textContent !== t", arg=title)


def play(browser: Any, base: str, who: str, choose: Any, keys: dict[str, str], shots: Path | None) -> list[str]:
    """One scripted participant: agrees, reads the instructions, answers every trial with
    ``choose(trial id) -> side``; returns the console errors seen."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + f"?participant={who}")
    _first_trial(page, shots)
    seen: set[str] = set()
    while True:
        page.wait_for_selector("[data-trial-id], #study-status")
        el = page.query_selector("[data-trial-id]")
        if el is None:
            break
        tid, cond = el.get_attribute("data-trial-id"), el.get_attribute("data-condition")
        if shots and cond not in seen:
            seen.add(cond)
            page.wait_for_function("[...document.images].every(i => i.complete)")
            page.screenshot(path=str(shots / f"3-trial-{cond}.png"))
        page.keyboard.press(keys["right" if choose(tid) else "left"])
        page.wait_for_function("id => !document.querySelector(`[data-trial-id='${id}']`)", arg=tid)
    page.wait_for_selector("#study-status[data-state='saved']")
    if shots:
        page.screenshot(path=str(shots / "4-end.png"))
    page.close()
    return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path, help="a study folder (accentuate study build --out DIR)")
    ap.add_argument("--observers", nargs="*", default=["efficientnet_lite0"], help="model observers")
    ap.add_argument("--shots", type=Path, help="screenshot folder (default DIR/pilot-shots)")
    ap.add_argument("--keep", action="store_true", help="leave the scripted participants in DIR/responses")
    args = ap.parse_args(argv)
    folder: Path = args.directory
    doc = json.loads((folder / "trials.json").read_text())
    truth = {t["id"]: t for t in doc["trials"]}
    started = time.perf_counter()
    for name in args.observers:
        t0 = time.perf_counter()
        path = acc.study.observe(folder, acc.load_model(name))
        print(f"observer {name}: {path} ({time.perf_counter() - t0:.0f} s)")
    from playwright.sync_api import sync_playwright

    shots = args.shots or folder / "pilot-shots"
    shots.mkdir(parents=True, exist_ok=True)
    server = make_server(folder, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    coin = random.Random(0)
    guesses = {t: truth[t]["stronger"] if truth[t]["catch"] else coin.randrange(2) for t in sorted(truth)}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for who, choose, s in (("pilot-truth", lambda t: truth[t]["stronger"], shots),
                                   ("pilot-guess", guesses.__getitem__, None)):
                errors = play(browser, base, who, choose, doc["keys"], s)
                print(f"{who}: played {len(truth)} trials; console errors: {errors or 'none'}")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    scripted = {who: folder / "responses" / f"{who}.json" for who in ("pilot-truth", "pilot-guess")}
    for who, path in scripted.items():
        alone = acc.study.analyze(folder, [path], replicates=500, save=False)
        print(f"\n{who}:\n" + markdown_table(alone.rows, ["condition", "kind", "accuracy", "lower", "upper", "trials"]))
    if not args.keep:  # the study's responses folder holds people only
        dest = folder / "pilot-responses"
        dest.mkdir(exist_ok=True)
        for path in scripted.values():
            shutil.move(str(path), dest / path.name)
    result = acc.study.analyze(folder)
    from accentuate.report.build import write_report

    write_report(folder)
    print("\n" + result.to_markdown())
    print(f"screenshots in {shots}; report {folder / 'report.html'}; {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
