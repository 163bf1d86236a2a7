"""The participant page of a human extrapolation study: ``DIR/index.html`` and the files it loads.

:func:`write_page` turns a study folder (``DIR/trials.json`` and its images, written by
``accentuate study build``) into a page that runs the study in a browser with jsPsych 8,
opened from ``file://`` or served by :mod:`accentuate.study.serve`: preload the images, the
consent page, the instruction pages, every trial in an order of each participant's own (seeded by
the study and participant ids: a reload repeats it), the end.
At the end the data (jsPsych's JSON, one row per screen) is sent to ``responses`` on the same
server when the page is served over http(s), and kept in the browser (localStorage) until the
server confirms it: a send that gets no answer or a 5xx is tried again with a growing pause, a
reload after a failed send offers to send it again, and a download of the data is the last resort
(offered after three failed tries, made at once when the server refuses the data). Opened from
``file://``, the page downloads the data as ``study-<study_id>-<participant>.json``.
Every row has ``study_id``, ``participant`` (the URL's
``participant`` or ``PROLIFIC_PID`` when it is 1 to 64 letters, digits, ``-`` or ``_``, else a
random id), ``submission`` (a random id of this visit: the server saves a submission once, however
often it is sent), ``prolific_pid``, ``prolific_study_id`` and ``prolific_session_id`` (the URL's
``PROLIFIC_PID``, ``STUDY_ID`` and ``SESSION_ID``, when given) and ``phase`` (preload, consent,
instructions or trial); a trial's row also has
``trial_id``, ``condition``, ``feature``, ``feature_kind``, ``catch``, ``position`` (1 for the
first trial shown), ``chosen`` (0 left, 1 right), ``rt`` (ms) and ``response_source``
(``keyboard`` or ``mouse``). The page does not carry the answers (which query is the stronger):
``accentuate study analyze`` scores each trial from ``trials.json``, which the server never gives.

The page loads nothing from outside its folder; its policy (:data:`CSP`) allows scripts,
styles, images and requests from the folder only, and the four style attributes that jsPsych's
instructions plugin writes (by hash).

With Prolific (:func:`set_prolific`, ``DIR/prolific.json``, which the server never gives), the
server answers a saved submission with the completion code and the page then sends the participant
to Prolific's completion URL (:data:`PROLIFIC_URL`); a participant who declines consent is sent
there with the no-consent code, when one is set. The completion code is not in the page: only a
participant whose data was saved gets it.

The text of the consent and instruction pages is ``DIR/instructions.md`` (the packaged
default is copied there when it is missing; edit it and write the page again, ``accentuate study page DIR``):

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
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import UsageError
from ..outputs.io import atomic_write, script_json
from .files import ID_PATTERN, read_trials

__all__ = ["CSP", "PROLIFIC_URL", "check_prolific", "key_label", "parse_instructions", "read_prolific", "set_prolific",
           "update_prolific", "write_page"]

PAGE = "index.html"
INSTRUCTIONS = "instructions.md"
#: The study's Prolific codes (private: the server never gives it).
PROLIFIC = "prolific.json"
#: Where a participant is sent at the end: Prolific's completion URL, then the code.
PROLIFIC_URL = "https://app.prolific.com/submissions/complete?cc="

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


def _code(code: Any, what: str) -> str:
    if not isinstance(code, str) or not ID_PATTERN.fullmatch(code):
        raise UsageError(f"the Prolific {what} code {code!r} is not 1 to 64 letters, digits, '-' or '_'; copy it "
                         "from the study's page on Prolific")
    return code


def check_prolific(completion_code: str | None, no_consent_code: str | None = None) -> dict[str, str | None] | None:
    """The Prolific codes given, checked, as ``prolific.json`` holds them (None without a completion code).

    Raises:
        UsageError: a code that is not 1 to 64 letters, digits, ``-`` or ``_``.
    """
    no = None if no_consent_code is None else _code(no_consent_code, "no-consent")
    if completion_code is None:
        return None
    return {"completion_code": _code(completion_code, "completion"), "no_consent_code": no}


def set_prolific(directory: str | os.PathLike, completion_code: str | None,
                 no_consent_code: str | None = None) -> None:
    """Set the study's Prolific codes (``DIR/prolific.json``), or remove them (``completion_code=None``).

    The server answers each saved submission with the completion code, and the page then sends the
    participant to ``PROLIFIC_URL + code``; with a no-consent code, a participant who declines consent
    is sent there with it. Rewrite the page (:func:`write_page`) for the no-consent code to reach it.

    Raises:
        UsageError: a code that is not 1 to 64 letters, digits, ``-`` or ``_``, or a no-consent code
            without a completion code.
        OutputError: the file cannot be written.
    """
    path = Path(directory) / PROLIFIC
    doc = check_prolific(completion_code, no_consent_code)
    if doc is None and no_consent_code is not None:
        raise UsageError("a no-consent code goes with a completion code: give the Prolific completion code too")
    if doc is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, json.dumps(doc, indent=1).encode() + b"\n")


def update_prolific(directory: str | os.PathLike, prolific_code: str | None = None,
                    no_consent_code: str | None = None) -> None:
    """Change the Prolific codes given; a code not given (None) stays as it was set.

    Raises:
        UsageError: as :func:`set_prolific` (a no-consent code without a completion code set).
    """
    if prolific_code is None and no_consent_code is None:
        return
    before = read_prolific(directory) or {}
    set_prolific(directory, prolific_code or before.get("completion_code"),
                 no_consent_code or before.get("no_consent_code"))


def read_prolific(directory: str | os.PathLike) -> dict[str, str | None] | None:
    """The study's Prolific codes (``completion_code``, ``no_consent_code``), or None without them.

    Raises:
        UsageError: ``DIR/prolific.json`` is not what :func:`set_prolific` writes.
    """
    path = Path(directory) / PROLIFIC
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"cannot read {str(path)!r} ({e}); set the codes again with `accentuate study page "
                         "DIR --prolific-code CODE`") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not an object of Prolific codes; set the codes again with `accentuate "
                         "study page DIR --prolific-code CODE`")
    return check_prolific(_code(doc.get("completion_code"), "completion"), doc.get("no_consent_code"))


def _page_data(study: dict[str, Any], consent: str | None, pages: list[str],
               prolific: dict[str, str | None] | None) -> dict[str, Any]:
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
            "consent": consent, "pages": pages, "trials": trials, "images": images,
            "prolific_url": PROLIFIC_URL, "no_consent_code": prolific["no_consent_code"] if prolific else None}


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


def write_page(directory: str | os.PathLike, *, prolific_code: str | None = None,
               no_consent_code: str | None = None) -> Path:
    """Write the study's page ``DIR/index.html`` (with jsPsych, study.js and study.css beside it).

    Reads ``DIR/trials.json`` and ``DIR/instructions.md``, first copying the default
    instructions there when the folder has none. Run it again after editing instructions.md.

    Args:
        directory: the study folder.
        prolific_code, no_consent_code: set the study's Prolific codes first (:func:`set_prolific`);
            a code not given stays as it was (:func:`update_prolific`).

    Returns:
        The path of index.html.

    Raises:
        UsageError: no such folder, no trials.json in it, or a trials.json that is not a study
            (see :func:`read_trials`); a Prolific code that is not one.
        OutputError: a file cannot be written.
    """
    folder = Path(directory)
    study = read_trials(folder)
    update_prolific(folder, prolific_code, no_consent_code)
    text_path = folder / INSTRUCTIONS
    if not text_path.exists():
        atomic_write(text_path, (_HERE / INSTRUCTIONS).read_bytes())
    try:
        text = text_path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {str(text_path)!r} ({e}); save it as UTF-8 text") from None
    consent, pages = parse_instructions(text, study["keys"], len(study["trials"]))
    data = _page_data(study, consent, pages, read_prolific(folder))
    _copy_static(folder)
    scripts = "\n".join(f'<script defer src="jspsych/{name}"></script>' for name in _SCRIPTS)
    page = _HTML.format(csp=html.escape(CSP), title=html.escape(data["title"]), data=script_json(data),
                        scripts=scripts + '\n<script defer src="study.js"></script>')
    out = folder / PAGE
    atomic_write(out, page.encode("utf-8"))
    return out
