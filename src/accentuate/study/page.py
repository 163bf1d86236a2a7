"""The participant page of a human extrapolation study: ``DIR/index.html`` and the files it loads.

:func:`write_page` turns a study folder (``DIR/trials.json`` and its images, written by
``accentuate study build``) into a page that runs the study in a browser with jsPsych 8,
opened from ``file://`` or served by :mod:`accentuate.study.serve`: preload the images, the
consent page, the instruction pages, every trial in an order of each participant's own (seeded by
the study and participant ids: a reload repeats it), the end.
At the end the data (jsPsych's JSON, one row per screen) is downloaded as
``study-<study_id>-<participant>.json`` and, when the page is served over http(s), also sent
to ``responses`` on the same server. Every row has ``study_id``, ``participant`` (the URL's
``participant`` or ``PROLIFIC_PID`` when it is 1 to 64 letters, digits, ``-`` or ``_``, else a
random id) and ``phase`` (preload, consent, instructions or trial); a trial's row also has
``trial_id``, ``condition``, ``feature``, ``feature_kind``, ``catch``, ``position`` (1 for the
first trial shown), ``chosen`` (0 left, 1 right), ``rt`` (ms) and ``response_source``
(``keyboard`` or ``mouse``). The page does not carry the answers (which query is the stronger):
``accentuate study analyze`` scores each trial from ``trials.json``, which the server never gives.

The page loads nothing from outside its folder; its policy (:data:`CSP`) allows scripts,
styles, images and requests from the folder only, and the four style attributes that jsPsych's
instructions plugin writes (by hash).

The text of the consent and instruction pages is ``DIR/instructions.md`` (the packaged
default is copied there when it is missing; edit it and rebuild the page):

- a line ``# Title`` starts a section; text before the first one is ignored;
- the section titled ``Consent`` (any letter case) is shown first, with an "I agree" and an
  "I do not agree" button (declining ends the study with a thank-you and records nothing);
  without one there is no consent page;
- every other section is an instruction page, in the order of the file;
- paragraphs are separated by blank lines; the lines of a paragraph stay separate lines;
- ``{left_key}``, ``{right_key}`` and ``{trials}`` are replaced by the response keys and
  the number of trials;
- everything is shown as text: no markup in the file (HTML, Markdown) is ever interpreted.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import UsageError
from ..outputs.io import atomic_write, script_json
from .files import read_trials

__all__ = ["CSP", "key_label", "parse_instructions", "write_page"]

PAGE = "index.html"
INSTRUCTIONS = "instructions.md"

_HERE = Path(__file__).resolve().parent
_STATIC = _HERE / "static"
#: jsPsych and its plugins, in the order the page loads them.
_SCRIPTS = ("jspsych.js", "plugin-preload.js", "plugin-instructions.js", "plugin-html-button-response.js")
#: The style attributes that the instructions plugin (static/jspsych/plugin-instructions.js) writes
#: into its navigation buttons. A policy without them refuses each (an error in the console). Allowed
#: by hash with 'unsafe-hashes', the narrowest way CSP has: these exact values, no other style
#: attribute and no <style> element.
STYLE_ATTRIBUTES = ("margin: 0 1em;", "padding: 10px 0px;", "margin-right: 5px;", "margin-left: 5px;")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


#: The page's Content-Security-Policy: scripts, styles, images and requests from its own folder
#: only (nothing inline but the four style attributes above; no fonts, frames, forms or base URL).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; "
       f"style-src-attr 'unsafe-hashes' {' '.join(_hash(s) for s in STYLE_ATTRIBUTES)}; "
       "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'")


def key_label(key: str) -> str:
    """How a response key is shown: a letter in upper case, any other key name as it is."""
    return key.upper() if len(key) == 1 else key


def parse_instructions(text: str, keys: dict[str, str], trials: int) -> tuple[str | None, list[str]]:
    """The consent page and the instruction pages of an instructions.md text, as escaped HTML.

    Args:
        text: the file's text (its format is in this module's docstring).
        keys: the response keys, ``{"left": ..., "right": ...}``.
        trials: the number of trials (for ``{trials}``).

    Returns:
        The consent page's HTML (``None`` without a Consent section) and each instruction page's.

    Example:
        >>> parse_instructions("# Hi\\nPress {left_key} <b>now</b>.\\n\\nBye", {"left": "f", "right": "j"}, 3)
        (None, ['<h1>Hi</h1>\\n<p>Press F &lt;b&gt;now&lt;/b&gt;.</p>\\n<p>Bye</p>'])
    """
    sections: list[tuple[str, list[str]]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        m = re.match(r"#\s+(.*\S)\s*$", line)
        if m:
            sections.append((m.group(1), []))
        elif sections:
            sections[-1][1].append(line.rstrip())
    values = {"{left_key}": key_label(keys["left"]), "{right_key}": key_label(keys["right"]),
              "{trials}": str(trials)}

    def fill(s: str) -> str:
        for k, v in values.items():
            s = s.replace(k, v)
        return html.escape(s)

    consent, pages = None, []
    for title, lines in sections:
        paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", "\n".join(lines)) if p.strip()]
        body = [f"<h1>{fill(title)}</h1>"] + [
            "<p>" + "<br>".join(fill(s) for s in p.split("\n")) + "</p>" for p in paragraphs]
        if title.strip().lower() == "consent" and consent is None:
            consent = "\n".join(body)
        else:
            pages.append("\n".join(body))
    return consent, pages


def _page_data(study: dict[str, Any], consent: str | None, pages: list[str]) -> dict[str, Any]:
    """What the page's script reads from ``#study-data``: image paths as URLs; no model values and
    no answers (which query is the stronger stays in trials.json: the analysis scores the trials)."""
    def url(path: str) -> str:
        return quote(path, safe="/")

    trials = [{"id": t["id"], "feature": t["feature"], "feature_kind": t.get("feature_kind"),
               "condition": t["condition"], "catch": bool(t.get("catch", False)),
               "references": {k: [url(p) for p in t["references"][k]] for k in ("strong", "weak")},
               "queries": [url(p) for p in t["queries"]]} for t in study["trials"]]
    images = list(dict.fromkeys(p for t in trials for p in
                                [*t["references"]["strong"], *t["references"]["weak"], *t["queries"]]))
    keys = study["keys"]
    return {"study_id": study["study_id"], "title": str(study.get("title") or "Study"),
            "keys": {"left": keys["left"], "right": keys["right"]},
            "key_labels": {"left": key_label(keys["left"]), "right": key_label(keys["right"])},
            "show_feature_names": study.get("show_feature_names") is True,
            "consent": consent, "pages": pages, "trials": trials, "images": images}


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<link rel="icon" href="study-icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="jspsych/jspsych.css">
<link rel="stylesheet" href="study.css">
<script type="application/json" id="study-data">{data}</script>
{scripts}
</head>
<body>
<noscript><p>This study needs JavaScript: please turn it on and reload the page.</p></noscript>
</body>
</html>
"""


def _copy_static(directory: Path) -> None:
    """jsPsych (with its licenses) into ``DIR/jspsych/``; study.js, study.css and the icon into ``DIR``."""
    (directory / "jspsych").mkdir(exist_ok=True)
    for src in sorted((_STATIC / "jspsych").iterdir()):
        if src.is_file():
            atomic_write(directory / "jspsych" / src.name, src.read_bytes())
    for name in ("study.js", "study.css", "study-icon.svg"):
        atomic_write(directory / name, (_STATIC / name).read_bytes())


def write_page(directory: str | os.PathLike) -> Path:
    """Write the study's page ``DIR/index.html`` (with jsPsych, study.js and study.css beside it).

    Reads ``DIR/trials.json`` and ``DIR/instructions.md``, first copying the default
    instructions there when the folder has none. Run it again after editing instructions.md.

    Returns:
        The path of index.html.

    Raises:
        UsageError: no such folder, no trials.json in it, or a trials.json that is not a study
            (see :func:`read_trials`).
        OutputError: a file cannot be written.
    """
    folder = Path(directory)
    study = read_trials(folder)
    text_path = folder / INSTRUCTIONS
    if not text_path.exists():
        atomic_write(text_path, (_HERE / INSTRUCTIONS).read_bytes())
    try:
        text = text_path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {str(text_path)!r} ({e}); save it as UTF-8 text") from None
    consent, pages = parse_instructions(text, study["keys"], len(study["trials"]))
    data = _page_data(study, consent, pages)
    _copy_static(folder)
    scripts = "\n".join(f'<script defer src="jspsych/{name}"></script>' for name in _SCRIPTS)
    page = _HTML.format(csp=html.escape(CSP), title=html.escape(data["title"]), data=script_json(data),
                        scripts=scripts + '\n<script defer src="study.js"></script>')
    out = folder / PAGE
    atomic_write(out, page.encode("utf-8"))
    return out
