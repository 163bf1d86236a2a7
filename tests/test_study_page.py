"""The participant page of a study (accentuate.study.page) and its server (accentuate.study.serve).

A synthetic study folder in the format of ``accentuate study build`` (12 trials over 2 features
and the 4 conditions, 2 catch trials, small PNG and JPEG images, one feature named with markup)
gets its page from :func:`write_page` and is served by :func:`make_server` in a thread; scripted
participants take the study in headless Chromium (tests/browser.py). Set
``ACCENTUATE_STUDY_SHOTS`` to a folder to get a screenshot of each kind of screen there.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import Page
from PIL import Image

from accentuate.errors import UsageError
from accentuate.study.page import CSP, PROLIFIC_URL, STYLE_ATTRIBUTES, parse_instructions, set_prolific, write_page
from accentuate.study.serve import make_server

STUDY_ID = "3f9a0c1d2b4e5f60"
HOSTILE = "<img src=x onerror=alert(1)>"
CONDITIONS = ("accentuation", "feature_vis", "natural", "none")
KEYS = {"left": "f", "right": "j"}
SHOTS = os.environ.get("ACCENTUATE_STUDY_SHOTS")
STATIC = Path(__file__).resolve().parents[1] / "src" / "accentuate" / "study" / "static"


# -- the study folder ------------------------------------------------------------------------------
def _picture(path: Path, strength: float, seed: int, size: int) -> str:
    """A noisy picture with a disc whose brightness is ``strength`` (0 to 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.25 + 0.15 * rng.random((size, size, 3))
    disc = (yy - 0.5 - 0.1 * rng.random()) ** 2 + (xx - 0.5) ** 2 < 0.08
    img[disc] = [0.2 + 0.8 * strength, 0.3, 0.9 - 0.7 * strength]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path, quality=90)
    return path.parent.name + "/" + path.name


def make_study(folder: Path) -> dict[str, Any]:
    """Write ``folder/trials.json`` and its images; returns the study."""
    features = [{"name": "hammer", "kind": "class"}, {"name": HOSTILE, "kind": "channel"}]
    trials = []
    for i in range(12):
        f, cond = i % 2, CONDITIONS[(i // 2) % 4] if i < 8 else CONDITIONS[i % 4]
        stronger = (i * 7 + 3) % 5 % 2
        catch = i in (4, 9)
        refs = {"strong": [_picture(folder / "images" / f"r-{f}-s{k}.png", 0.9, 10 * f + k, 64) for k in range(3)],
                "weak": [_picture(folder / "images" / f"r-{f}-w{k}.png", 0.1, 20 * f + k, 64) for k in range(3)]}
        if cond == "none":
            refs = {"strong": [], "weak": []}
        hi, lo = (1.0, 0.0) if catch else (0.7, 0.3)
        queries = [_picture(folder / "images" / f"q-{i}-{side}.jpg", hi if side == stronger else lo, 100 + 2 * i + side,
                            160) for side in (0, 1)]
        trials.append({"id": f"t{i + 1:03d}", "feature": features[f]["name"], "feature_kind": features[f]["kind"],
                       "condition": cond, "catch": catch, "references": refs, "queries": queries,
                       "stronger": stronger, "values": [hi if stronger == 0 else lo, lo if stronger == 0 else hi]})
    study = {"format": "accentuate-study/1", "study_id": STUDY_ID, "title": "A study of <b>features</b>",
             "model": "efficientnet_lite0", "seed": 0, "keys": KEYS, "conditions": list(CONDITIONS),
             "features": features, "show_feature_names": True, "trials": trials}
    (folder / "trials.json").write_text(json.dumps(study, indent=1))
    return study


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    make_study(folder)
    write_page(folder)
    return folder


@pytest.fixture(scope="module")
def served(study: Path) -> Iterator[str]:
    server = make_server(study, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _trials(folder: Path) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in json.loads((folder / "trials.json").read_text())["trials"]}


# -- without a browser -----------------------------------------------------------------------------
def test_the_page_has_the_files_a_strict_policy_and_no_outside_url(study: Path) -> None:
    page = (study / "index.html").read_text()
    for name in ("jspsych/jspsych.js", "jspsych/plugin-preload.js", "jspsych/plugin-instructions.js",
                 "jspsych/plugin-html-button-response.js", "jspsych/jspsych.css", "jspsych/LICENSE", "study.js",
                 "study.css", "instructions.md"):
        assert (study / name).is_file(), name
    assert f'content="{CSP}"'.replace("'", "&#x27;") in page
    assert "default-src 'none'; script-src 'self'; style-src 'self';" in CSP
    assert "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'" in CSP
    assert "unsafe-inline" not in CSP and "<script>" not in page  # no inline script
    texts = [page] + [(study / n).read_text() for n in ("study.js", "study.css", "jspsych/jspsych.css")]
    for text in texts:
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text)
        assert "sourceMappingURL" not in text and "@font-face" not in text and "@import" not in text
    assert HOSTILE not in page and "<b>features</b>" not in page  # escaped in the title and the data
    embedded = json.loads(re.search(r'id="study-data">(.*?)</script>', page).group(1))["trials"]
    assert not any("values" in t or "stronger" in t for t in embedded)  # no model values, no answers


def test_the_style_attributes_allowed_are_those_of_the_instructions_plugin() -> None:
    found = set(re.findall(r"style='([^']*)'", (STATIC / "jspsych" / "plugin-instructions.js").read_text()))
    assert found == set(STYLE_ATTRIBUTES)
    assert "'unsafe-hashes'" in CSP and CSP.count("'sha256-") == len(STYLE_ATTRIBUTES)


def test_instructions_are_sections_of_escaped_paragraphs() -> None:
    text = ("ignored\n# Welcome\nLine one\nline <i>two</i> {trials}\n\n\n# CONSENT\n<script>alert(1)</script>\n"
            "\n# Keys\nUse {left_key} or {right_key}.\n")
    consent, pages = parse_instructions(text, {"left": "a", "right": "ArrowRight"}, 7)
    assert consent == "<h1>CONSENT</h1>\n<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert pages == ["<h1>Welcome</h1>\n<p>Line one<br>line &lt;i&gt;two&lt;/i&gt; 7</p>",
                     "<h1>Keys</h1>\n<p>Use A or ArrowRight.</p>"]
    assert parse_instructions("no section", KEYS, 1) == (None, [])


def test_write_page_needs_trials_json_and_keeps_edited_instructions(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^no trials\.json in .*accentuate study build") as e:
        write_page(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="no study folder"):
        write_page(tmp_path / "missing")
    study = make_study(tmp_path)
    (tmp_path / "instructions.md").write_text("# Consent\nYes?\n")
    write_page(tmp_path)
    assert (tmp_path / "instructions.md").read_text() == "# Consent\nYes?\n"
    study["trials"][0]["queries"][0] = "../outside.jpg"
    (tmp_path / "trials.json").write_text(json.dumps(study))
    with pytest.raises(UsageError, match="t001.*not a relative path inside the folder"):
        write_page(tmp_path)
    (tmp_path / "trials.json").write_text('{"format": "other"}')
    with pytest.raises(UsageError, match="format is 'other'"):
        write_page(tmp_path)


def _request(url: str, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def test_the_server_gives_the_folder_only(served: str, study: Path, tmp_path: Path) -> None:
    status, headers, body = _request(served, "GET", "/")
    assert status == 200 and body == (study / "index.html").read_bytes()
    assert headers["Cache-Control"] == "no-store" and headers["Content-Security-Policy"].startswith(CSP)
    assert headers["Content-Type"].startswith("text/html")
    assert _request(served, "GET", "/images/" + sorted(p.name for p in (study / "images").iterdir())[0])[0] == 200
    (study / "work").mkdir(exist_ok=True)
    (study / "work" / "key.json").write_text("secret")
    for private in ("/trials.json", "/trials.json?x=1", "/design.json", "/work/key.json", "/observers/m.json"):
        assert _request(served, "GET", private)[0] == 404, private  # the answers and the model's side stay
    assert _request(served, "GET", "/study.js")[1]["Content-Type"].startswith("text/javascript")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (study / "link.txt").symlink_to(outside)
    (study / ".hidden").write_text("x")
    (study / "responses").mkdir(exist_ok=True)
    (study / "responses" / "someone.json").write_text("secret")
    (study / "answers.json").symlink_to(study / "responses" / "someone.json")
    for path in ("/../trials.json", "/%2e%2e/trials.json", "/images/..%2ftrials.json", "/%2e%2e/%2e%2e/etc/passwd",
                 "//etc/passwd", "/images/", "/images", "/link.txt", "/.hidden", "/responses/",
                 "/responses/someone.json", "/answers.json", "/nothing.png",
                 "/%ff.png", "/index.html%00"):
        status, _, body = _request(served, "GET", path)
        assert status == 404 and b"secret" not in body, path
    assert _request(served, "PUT", "/index.html", b"x")[0] == 405
    assert _request(served, "DELETE", "/trials.json")[0] == 405
    assert _request(served, "POST", "/index.html", b"[]")[0] == 404


def _post(url: str, rows: Any, raw: bytes | None = None) -> tuple[int, Any]:
    body = raw if raw is not None else json.dumps(rows).encode()
    status, _, reply = _request(url, "POST", "/responses", body, {"Content-Type": "application/json"})
    assert reply.count(b"\n") == 1  # one line of JSON
    return status, json.loads(reply)


def test_the_server_saves_responses_without_overwriting(served: str, study: Path) -> None:
    rows = [{"study_id": STUDY_ID, "participant": "p-1", "trial_type": "preload"},
            {"study_id": STUDY_ID, "participant": "p-1", "trial_id": "t001", "chosen": 0}]
    assert _post(served, rows) == (201, {"saved": "responses/p-1.json"})
    assert _post(served, rows[1:]) == (201, {"saved": "responses/p-1-2.json"})
    assert json.loads((study / "responses" / "p-1.json").read_text()) == rows
    assert json.loads((study / "responses" / "p-1-2.json").read_text()) == rows[1:]
    assert _post(served, [{**rows[0], "study_id": "0000"}])[0] == 409
    for bad in ([], {"study_id": STUDY_ID}, [1], [{"participant": "p-1"}], [rows[0], {**rows[0], "participant": "p-2"}],
                [{**rows[0], "participant": "../x"}], [{**rows[0], "participant": "x" * 65}]):
        status, reply = _post(served, bad)
        assert status == 400 and set(reply) == {"error"}, bad
    assert _post(served, None, b'[{"study_id": ')[0] == 400
    assert _post(served, None, b"\xff\xfe")[0] == 400
    status, _, _ = _request(served, "POST", "/responses", b"", {"Content-Length": str(11 * 2**20)})
    assert status == 413
    assert sorted(p.name for p in (study / "responses").glob("p-*")) == ["p-1-2.json", "p-1.json"]


def test_make_server_names_the_problem(tmp_path: Path, study: Path) -> None:
    with pytest.raises(UsageError, match="no study folder"):
        make_server(tmp_path / "missing")
    with pytest.raises(UsageError, match="no trials.json"):
        make_server(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UsageError, match=r"port \d+ on 127.0.0.1 is in use; choose another port"):
            make_server(study, port=s.getsockname()[1])
    with pytest.raises(UsageError, match=r"max_connections \(0\), timeout \(10.0\) and deadline \(120.0\) must be"):
        make_server(study, max_connections=0)


class _Server:
    """``make_server`` serving in a thread; it can be stopped and started again on the same port."""

    def __init__(self, folder: Path, **kwargs: Any) -> None:
        self.folder, self.kwargs, self.port, self.server = folder, {"quiet": True, **kwargs}, 0, None

    def start(self) -> _Server:
        self.server = make_server(self.folder, port=self.port, **self.kwargs)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def _rows(who: str, submission: str | None, n: int = 2) -> list[dict[str, Any]]:
    extra = {} if submission is None else {"submission": submission}
    return [{"study_id": STUDY_ID, "participant": who, "trial_id": f"t{i + 1:03d}", "chosen": i % 2, **extra}
            for i in range(n)]


def test_a_submission_sent_again_is_saved_once(served: str, study: Path) -> None:
    first, second = _rows("p-9", "a" * 32), _rows("p-9", "b" * 32, 3)
    assert _post(served, first) == (201, {"saved": "responses/p-9.json"})
    assert _post(served, first) == (200, {"saved": "responses/p-9.json"})  # a retry: the same file
    assert _post(served, second) == (201, {"saved": "responses/p-9-2.json"})  # another visit: beside it
    assert _post(served, first) == (200, {"saved": "responses/p-9.json"})
    assert _post(served, _rows("p-9", None)) == (201, {"saved": "responses/p-9-3.json"})  # no id: always a new file
    assert json.loads((study / "responses" / "p-9.json").read_text()) == first
    assert json.loads((study / "responses" / "p-9-2.json").read_text()) == second
    restarted = _Server(study).start()  # a new server knows the saved submissions from their files
    try:
        assert _post(restarted.url, second) == (200, {"saved": "responses/p-9-2.json"})
    finally:
        restarted.stop()
    mixed = [first[0], {**first[1], "submission": "c" * 32}]
    assert _post(served, mixed) == (400, {"error": "the rows need one submission id, not 2"})
    assert _post(served, _rows("p-9", "short"))[0] == 400
    assert _post(served, _rows("p-9", "../" * 4))[0] == 400
    assert sorted(p.name for p in (study / "responses").glob("p-9*")) == ["p-9-2.json", "p-9-3.json", "p-9.json"]
    try:  # with Prolific: the answer carries the completion code; a broken prolific.json does not stop a save
        (study / "prolific.json").write_text("[1]")
        assert _post(served, _rows("p-10", "d" * 32)) == (201, {"saved": "responses/p-10.json"})
        set_prolific(study, "C0DE")
        assert _post(served, _rows("p-10", "d" * 32)) == (200, {"saved": "responses/p-10.json",
                                                                "completion_code": "C0DE"})
    finally:
        set_prolific(study, None)


def _closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing ``sock`` within ``seconds``, None if it stayed open."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return got


def test_the_server_bounds_connections_and_drops_silent_ones(study: Path) -> None:
    srv = _Server(study, max_connections=2, timeout=0.5, deadline=1.5).start()
    port = srv.port
    try:
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for s in silent:
            s.sendall(b"GET / HTTP/1.1\r\n")  # the request line, then nothing
        for _ in range(100):
            if srv.server.open_connections == 2:
                break
            time.sleep(0.05)
        status, headers, body = _request(srv.url, "GET", "/")
        assert status == 503 and headers["Retry-After"] == "2" and headers["Cache-Control"] == "no-store"
        assert json.loads(body) == {"error": "the server is busy; send again in a moment"}
        assert headers["Content-Security-Policy"].startswith(CSP)
        assert [_closed_within(s, 3) for s in silent] == [b"", b""]  # dropped after 0.5 s of silence
        assert _request(srv.url, "GET", "/")[0] == 200
        # a body that stops coming: 408
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /responses HTTP/1.1\r\nContent-Length: 100\r\n\r\n[{")
            reply = _closed_within(s, 3)
        assert reply is not None and reply.startswith(b"HTTP/1.0 408 ") and b"did not come in 0.5 s" in reply
        # a client that sends a byte now and then (never silent for 0.5 s) is cut at the deadline
        with socket.create_connection(("127.0.0.1", port)) as s:
            started = time.perf_counter()
            s.sendall(b"POST /responses HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
            s.settimeout(0.2)
            ended = None
            while time.perf_counter() - started < 10 and ended is None:
                try:
                    s.sendall(b" ")
                    if s.recv(65536) == b"":
                        ended = time.perf_counter() - started
                except TimeoutError:
                    pass
                except OSError:
                    ended = time.perf_counter() - started
        assert ended is not None and 1.4 < ended < 8, ended
        assert srv.server.counts["busy"] == 1 and srv.server.counts["dropped"] == 1
    finally:
        srv.stop()


def test_a_client_that_left_is_one_line_in_the_log(study: Path, capsys: pytest.CaptureFixture) -> None:
    srv = _Server(study, quiet=False).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:  # closes in the middle of its body
            s.sendall(b"POST /responses HTTP/1.1\r\nContent-Length: 1000\r\n\r\n[{")
        with socket.create_connection(("127.0.0.1", srv.port)) as s:  # and with a reset
            s.sendall(b"POST /responses HTTP/1.1\r\nContent-Length: 1000\r\n\r\n[{")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.perf_counter() + 5
        err = ""
        while err.count("\n") < 2 and time.perf_counter() < deadline:
            time.sleep(0.05)
            err += capsys.readouterr().err
    finally:
        srv.stop()
    lines = sorted(err.splitlines(), key=lambda line: line.split("] ", 1)[-1])
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].endswith("] the client left before the answer (ConnectionResetError)")
    assert lines[1].endswith("] the client left during its body")
    assert all(line.startswith("127.0.0.1 - [") for line in lines)


def test_serve_prints_the_address_and_stops_on_ctrl_c(study: Path) -> None:
    code = f"from accentuate.study.serve import serve; serve({str(study)!r}, port=0)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url and f"study {STUDY_ID}" in line and "Ctrl-C" in line, line
        assert _request(url.group(0), "GET", "/")[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "Stopped." and "Traceback" not in err


# -- in the browser --------------------------------------------------------------------------------
_BOTH = """([key, other]) => {
    const event = (type) => new KeyboardEvent(type, {key: key, code: "Key" + key.toUpperCase(), bubbles: true});
    document.body.dispatchEvent(event("keydown"));
    document.querySelector(`[data-side="${other}"]`).click();
    document.body.dispatchEvent(event("keyup"));
}"""
_WATCH = """window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));"""


def _open(browser: Any, url: str) -> Page:
    page = Page(browser)
    page.page.add_init_script(_WATCH)
    page.page.goto(url)
    return page


def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.page.mouse.move(1, 1)  # no hover
        page.page.wait_for_function("[...document.images].every(i => i.complete)")
        page.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def _to_first_trial(page: Page) -> None:
    """Agree, and read every instruction page."""
    p = page.page
    p.wait_for_selector(".study-answer-yes")
    _shot(page, "1-consent")
    p.click(".study-answer-yes")
    title = None
    while True:
        p.wait_for_function("t => document.querySelector('[data-trial-id]') || "
                            "(document.querySelector('.study-text h1') || {}).textContent !== t", arg=title)
        if p.query_selector("[data-trial-id]"):
            return
        if title is None:
            _shot(page, "2-instructions")
        title = p.text_content(".study-text h1")
        p.click("#jspsych-instructions-next")


def _take(page: Page, choose: Any, n: int) -> list[str]:
    """Answer ``n`` trials with ``choose(trial_id, i) -> (side, "key" | "mouse")``; returns the trial
    ids in the order shown."""
    p, seen, shot = page.page, [], set()
    for i in range(n):
        el = p.wait_for_selector("[data-trial-id]")
        tid = el.get_attribute("data-trial-id")
        seen.append(tid)
        condition = el.get_attribute("data-condition")
        if condition not in shot:
            shot.add(condition)
            _shot(page, f"3-trial-{condition}")
        side, how = choose(tid, i)
        if how == "key":
            p.keyboard.press(KEYS["right" if side else "left"])
        elif how == "both":  # the key, and a click on the other photo in the same instant
            p.evaluate(_BOTH, [KEYS["right" if side else "left"], 1 - side])
        else:
            p.click(f'[data-side="{side}"]')
        p.wait_for_function("id => !document.querySelector(`[data-trial-id='${id}']`)", arg=tid)
    return seen


#: What jsPsych writes to the console when opened from file://.
FILE_WARNING = "warning: jsPsych detected that it is running via the file:// protocol"


def _check_clean(page: Page, base: str, failed_sends: str = "", outside: tuple[str, ...] = ()) -> None:
    """No console message, CSP violation or dialog, and no request out of ``base`` (but ``outside``).

    Chromium itself logs a line for every request that fails ("Failed to load resource: ..."); with
    ``failed_sends`` (the reason in that line), each try to send the data but the last must have
    failed so, and these lines are all the console has."""
    console = [m for m in page.console if not (base.startswith("file:") and m.startswith(FILE_WARNING))]
    if failed_sends:
        tries = [u for u in page.requests if u == base + "responses"]
        failed = [m for m in console if m == f"error: Failed to load resource: {failed_sends}"]
        assert len(tries) >= 2 and len(failed) == len(tries) - 1, (tries, console)
        console = [m for m in console if m not in failed]
    assert console == []
    assert page.js("window.__csp") == []
    assert page.dialogs == []
    assert page.requests and all(u.startswith(base) or u in outside for u in page.requests), page.requests


def _kept(page: Page) -> list[str]:
    """The keys of the data the page keeps in the browser until the server confirms it."""
    return page.js("Object.keys(localStorage).filter(k => k.startsWith('accentuate-study:'))")


def _trial_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("phase") == "trial"]


@pytest.fixture(scope="module")
def truthful(browser: Any, served: str, study: Path) -> Iterator[dict[str, Any]]:
    """A participant who answers every trial by the stored truth, keys and clicks in turn."""
    truth = _trials(study)
    page = _open(browser, served + "?participant=alice")
    hostile = []

    def choose(tid: str, i: int) -> tuple[int, str]:
        if truth[tid]["feature"] == HOSTILE and not hostile:
            hostile.append(page.js("document.querySelector('.study-feature-name').textContent"))
            hostile.append(page.js("document.querySelectorAll('img[onerror], [onerror]').length"))
            _shot(page, "3-trial-name-with-markup")
        return truth[tid]["stronger"], "key" if i % 2 else "mouse"

    _to_first_trial(page)
    order = _take(page, choose, len(truth))
    page.page.wait_for_selector("#study-status[data-state='saved']")
    _shot(page, "4-end")
    yield {"page": page, "order": order, "hostile": hostile, "truth": truth}
    page.close()


def test_a_truthful_participant_is_right_on_every_trial(truthful: dict[str, Any], study: Path, served: str) -> None:
    truth, page = truthful["truth"], truthful["page"]
    saved = json.loads((study / "responses" / "alice.json").read_text())
    rows = _trial_rows(saved)
    assert sorted(r["trial_id"] for r in rows) == sorted(truth) and len(rows) == len(truth)
    assert all(r["chosen"] == truth[r["trial_id"]]["stronger"] for r in rows)
    assert not any("correct" in r or "stronger" in r for r in saved)  # the page does not know the answers
    assert [r["response_source"] for r in rows] == ["mouse", "keyboard"] * (len(truth) // 2)
    assert all(isinstance(r["rt"], int) and r["rt"] > 0 for r in rows)
    for r in rows:
        t = truth[r["trial_id"]]
        assert (r["condition"], r["feature"], r["feature_kind"], r["catch"]) == (
            t["condition"], t["feature"], t["feature_kind"], t["catch"])
    assert all(r["study_id"] == STUDY_ID and r["participant"] == "alice" for r in saved)
    assert [r["trial_id"] for r in rows] == truthful["order"]
    assert len({r["submission"] for r in saved}) == 1 and re.fullmatch(r"[0-9a-f]{32}", saved[0]["submission"])
    assert not any(k.startswith("prolific_") for r in saved for k in r)  # not opened from Prolific
    assert "saved" in page.js("document.getElementById('study-status').textContent")
    assert page.downloads == [] and _kept(page) == []  # confirmed: no download, nothing left in the browser
    _check_clean(page, served)


def test_names_with_markup_show_as_text(truthful: dict[str, Any]) -> None:
    assert truthful["hostile"] == [HOSTILE, 0]
    assert truthful["page"].dialogs == []


def test_a_random_participant_gets_about_half_and_another_order(browser: Any, served: str, study: Path,
                                                                truthful: dict[str, Any]) -> None:
    truth = _trials(study)
    pick = {tid: random.Random(f"7:{tid}").randrange(2) for tid in truth}  # fixed per trial, whatever the order
    expected = sum(pick[t] == truth[t]["stronger"] for t in truth)
    assert 3 <= expected <= 9
    page = _open(browser, served + "?participant=not%20an%20id!&PROLIFIC_PID=bob_2")
    _to_first_trial(page)
    order = _take(page, lambda tid, i: (pick[tid], ("both", "mouse", "key")[i % 3]), len(truth))
    page.page.wait_for_selector("#study-status[data-state='saved']")
    rows = _trial_rows(json.loads((study / "responses" / "bob_2.json").read_text()))
    assert len(rows) == len(truth) and sum(r["chosen"] == truth[r["trial_id"]]["stronger"] for r in rows) == expected
    assert [r["trial_id"] for r in rows] == order  # one row per trial: a key and a click at once count once
    assert [r["response_source"] for r in rows] == ["keyboard", "mouse", "keyboard"] * (len(truth) // 3)
    assert all(r["chosen"] == pick[r["trial_id"]] for r in rows)
    assert order != truthful["order"] and sorted(order) == sorted(truthful["order"])
    _check_clean(page, served)
    page.close()


def test_a_participant_gets_the_same_order_again(browser: Any, served: str, study: Path,
                                                 truthful: dict[str, Any]) -> None:
    """The order is seeded by the study and participant ids: a reload (a second visit) repeats it."""
    page = _open(browser, served + "?participant=alice")
    _to_first_trial(page)
    order = _take(page, lambda tid, i: (0, "key"), len(_trials(study)))
    page.page.wait_for_selector("#study-status[data-state='saved']")
    assert order == truthful["order"]
    assert (study / "responses" / "alice-2.json").exists()  # the second visit's file, beside the first
    page.close()


def test_declining_consent_records_nothing(browser: Any, served: str, study: Path) -> None:
    page = _open(browser, served + "?participant=carol")
    page.page.click(".study-answer-no")
    page.page.wait_for_selector("text=Nothing was recorded")
    assert not (study / "responses" / "carol.json").exists()
    _check_clean(page, served)
    page.close()


def _saved_once(study: Path, who: str, page: Page) -> list[dict[str, Any]]:
    """The one file of ``who`` (no ``-2``), checked to hold a whole visit; nothing kept in the browser."""
    assert sorted(p.name for p in (study / "responses").glob(f"{who}*")) == [f"{who}.json"]
    rows = json.loads((study / "responses" / f"{who}.json").read_text())
    assert len(_trial_rows(rows)) == len(_trials(study)) and len({r["submission"] for r in rows}) == 1
    assert _kept(page) == [] and page.downloads == []
    return rows


def _finish(page: Page, study: Path, before_last: Any = None) -> None:
    """Agree, read the instructions and answer every trial; ``before_last()`` runs before the last one."""
    n = len(_trials(study))
    _to_first_trial(page)
    _take(page, lambda tid, i: (i % 2, "key"), n - 1)
    if before_last:
        before_last()
    _take(page, lambda tid, i: (0, "mouse"), 1)


def test_the_server_down_at_the_end_then_up(browser: Any, study: Path) -> None:
    srv = _Server(study).start()
    base = srv.url
    page = _open(browser, base + "?participant=dora")
    _finish(page, study, before_last=srv.stop)
    p = page.page
    p.wait_for_selector("#study-status[data-state='waiting']")
    assert "no connection to the server" in p.text_content("#study-status")
    assert "kept in this browser" in p.text_content("#study-status")
    assert len(_kept(page)) == 1 and not (study / "responses" / "dora.json").exists()
    _shot(page, "5-waiting")
    srv.start()  # the same port
    try:
        p.wait_for_selector("#study-status[data-state='saved']", timeout=20000)
        _saved_once(study, "dora", page)
        _check_clean(page, base, failed_sends="net::ERR_CONNECTION_REFUSED")
    finally:
        srv.stop()
        page.close()


def test_a_reload_after_a_failed_send_offers_to_send_again(browser: Any, served: str, study: Path) -> None:
    page = _open(browser, served + "?participant=erin")
    p = page.page
    p.route("**/responses", lambda route: route.abort("connectionrefused"))  # the server out of reach
    _finish(page, study)
    p.wait_for_selector("#study-status[data-state='waiting']")
    p.reload()  # the data stays in the browser
    p.wait_for_selector("#study-resend")
    assert p.text_content(".study-pending h1") == "Your answers have not been sent yet"
    assert p.query_selector("[data-trial-id], .study-answer-yes") is None  # the study waits
    _shot(page, "6-reload-offers-to-send")
    p.click("#study-resend")
    p.wait_for_selector("#study-status[data-state='waiting']")
    p.unroute("**/responses")  # back in reach: "Send now" does not wait for the pause
    p.click("#study-send")
    p.wait_for_selector("#study-status[data-state='saved']", timeout=5000)
    rows = _saved_once(study, "erin", page)
    assert {r["participant"] for r in rows} == {"erin"}
    _check_clean(page, served, failed_sends="net::ERR_CONNECTION_REFUSED")
    p.click("#study-start")  # then the study can be taken (another visit)
    p.wait_for_selector(".study-answer-yes")
    page.close()


def test_a_503_is_sent_again(browser: Any, served: str, study: Path) -> None:
    page = _open(browser, served + "?participant=fred")
    answered = []

    def busy_once(route: Any) -> None:
        answered.append(route.request.post_data)
        if len(answered) == 1:
            route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "2"},
                          body='{"error": "the server is busy; send again in a moment"}')
        else:
            route.continue_()

    page.page.route("**/responses", busy_once)
    _finish(page, study)
    page.page.wait_for_selector("#study-status[data-state='saved']", timeout=10000)
    assert len(answered) == 2 and answered[0] == answered[1]  # the same body, sent again
    _saved_once(study, "fred", page)
    _check_clean(page, served, failed_sends="the server responded with a status of 503 (Service Unavailable)")
    page.close()


def _send_now(page: Page, base: str, tries: int) -> None:
    """Click "Send now" and wait until the page has tried ``tries`` times in all and answered."""
    page.page.click("#study-send")
    for _ in range(100):
        if [u for u in page.requests if u == base + "responses"].__len__() >= tries:
            break
        page.page.wait_for_timeout(50)
    page.page.wait_for_selector("#study-status:not([data-state='sending'])")


def test_the_download_is_the_last_resort(browser: Any, served: str, study: Path) -> None:
    page = _open(browser, served + "?participant=gina")
    p = page.page
    p.route("**/responses", lambda route: route.abort("connectionrefused"))
    _finish(page, study)
    p.wait_for_selector("#study-status[data-state='waiting']")
    _send_now(page, served, 2)
    assert p.is_hidden("#study-download")  # not before the third failed try
    _send_now(page, served, 3)
    assert p.is_visible("#study-download") and "download your answers" in p.text_content("#study-status")
    _shot(page, "7-download-offered")
    (kept,) = _kept(page)
    p.click("#study-download")
    p.wait_for_timeout(300)
    (download,) = page.downloads
    assert download.suggested_filename == f"study-{STUDY_ID}-gina.json"
    assert Path(download.path()).read_text() == json.loads(p.evaluate("k => localStorage.getItem(k)", kept))["body"]
    p.unroute("**/responses")
    p.route("**/responses", lambda route: route.fulfill(status=405, content_type="application/json",
                                                        body='{"error": "method not allowed"}'))  # a static host
    _send_now(page, served, 4)
    p.wait_for_selector("#study-status[data-state='refused']")
    assert "the server answered 405: method not allowed" in p.text_content("#study-status")
    assert len(page.downloads) == 2 and _kept(page) == []  # downloaded at once, and no longer kept
    assert not list((study / "responses").glob("gina*"))
    page.close()


@pytest.fixture(scope="module")
def prolific(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A copy of the study with Prolific codes, served."""
    folder = tmp_path_factory.mktemp("prolific") / "study"
    shutil.copytree(study, folder, ignore=shutil.ignore_patterns("responses", "link.txt", "answers.json"))
    write_page(folder, prolific_code="C0MPL3TE", no_consent_code="N0C0NS3NT")
    srv = _Server(folder).start()
    yield folder, srv.url
    srv.stop()


def _to_prolific(page: Page) -> list[str]:
    """Prolific's pages answered here (no network); returns the URLs the page went to."""
    landed: list[str] = []

    def fulfill(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p>Prolific</p>")

    page.page.route("https://app.prolific.com/**", fulfill)
    return landed


def test_prolific_participants_go_back_to_prolific_once_saved(browser: Any, prolific: tuple[Path, str]) -> None:
    folder, base = prolific
    pid, sid, session = "5f6e7d8c9b0a1f2e3d4c5b6a", "60ab70cd80ef90ab10cd20ef", "7c2d9e4f1a3b5c6d8e0f2a4b"
    page = _open(browser, base + f"?PROLIFIC_PID={pid}&STUDY_ID={sid}&SESSION_ID={session}")
    landed = _to_prolific(page)
    _finish(page, folder)
    page.page.wait_for_url(PROLIFIC_URL + "C0MPL3TE", timeout=10000)
    assert landed == [PROLIFIC_URL + "C0MPL3TE"]
    rows = json.loads((folder / "responses" / f"{pid}.json").read_text())  # saved before the redirect
    assert {(r["participant"], r["prolific_pid"], r["prolific_study_id"], r["prolific_session_id"]) for r in rows} \
        == {(pid, pid, sid, session)}
    _check_clean(page, base, outside=tuple(landed))
    # the completion code is given to a saved submission only: not in any file the server gives
    for name in ("", "index.html", "study.js", "prolific.json"):
        status, _, body = _request(base, "GET", "/" + name)
        assert b"C0MPL3TE" not in body and (status == 404) == (name == "prolific.json"), name
    assert b"N0C0NS3NT" in _request(base, "GET", "/")[2]  # the no-consent code is the page's to give
    page.close()


def test_declining_consent_on_prolific_goes_to_the_no_consent_code(browser: Any,
                                                                   prolific: tuple[Path, str]) -> None:
    folder, base = prolific
    page = _open(browser, base + "?PROLIFIC_PID=6a6a6a6a6a6a6a6a6a6a6a6a")
    landed = _to_prolific(page)
    page.page.click(".study-answer-no")
    page.page.wait_for_url(PROLIFIC_URL + "N0C0NS3NT", timeout=10000)
    assert landed == [PROLIFIC_URL + "N0C0NS3NT"]
    assert not (folder / "responses" / "6a6a6a6a6a6a6a6a6a6a6a6a.json").exists()
    _check_clean(page, base, outside=tuple(landed))
    page.close()


def test_from_file_with_markup_in_the_instructions(browser: Any, study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(study, folder, ignore=shutil.ignore_patterns("responses", "link.txt", "answers.json"))
    (folder / "instructions.md").write_text("# Consent\n<script>alert(1)</script> of {trials}\n\n"
                                            "# <b>Keys</b>\nPress {left_key} or {right_key}.\n")
    write_page(folder)
    page = _open(browser, (folder / "index.html").as_uri())
    page.page.wait_for_selector(".study-answer-yes")
    assert page.page.text_content(".study-consent p") == "<script>alert(1)</script> of 12"
    page.page.click(".study-answer-yes")
    assert page.page.text_content(".study-text h1") == "<b>Keys</b>"
    assert page.js("document.querySelectorAll('.study-text b, .study-text script').length") == 0
    page.page.click("#jspsych-instructions-next")
    page.page.wait_for_selector("[data-trial-id]")
    assert page.broken_images() == []
    order = _take(page, lambda tid, i: (i % 2, "key"), len(_trials(folder)))
    page.page.wait_for_selector("#study-status[data-state='local']")  # no server: the data is downloaded
    (download,) = page.downloads
    assert download.suggested_filename.startswith(f"study-{STUDY_ID}-")
    rows = _trial_rows(json.loads(Path(download.path()).read_text()))
    assert [r["trial_id"] for r in rows] == order and [r["chosen"] for r in rows] == [i % 2 for i in range(len(order))]
    assert _kept(page) == [] and not (folder / "responses").exists()
    _check_clean(page, folder.as_uri() + "/")
    page.close()


# -- a study made by study build, played through and analyzed ------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study that ``acc.study.build`` made (the colour model of tests/cli_models.py: its features
    are the photos' mean red, green and blue), with its page."""
    from cli_models import color
    from test_study import make_photos

    import accentuate as acc

    photos = make_photos(tmp_path_factory.mktemp("photos"), n=10)
    out = tmp_path_factory.mktemp("built")
    acc.study.build(color(), photos, out, features=["classes:1"], trials=4, references=1, catch=1, seed=0,
                    steps=4, crops=2, canvas=48)
    return out


def _play(browser: Any, folder: Path, who: str, choose: Any) -> tuple[list[str], list[dict[str, Any]]]:
    server = make_server(folder, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        page = _open(browser, base + f"?participant={who}")
        _to_first_trial(page)
        order = _take(page, choose, len(_trials(folder)))
        page.page.wait_for_selector("#study-status[data-state='saved']")
        _check_clean(page, base)
        page.close()
    finally:
        server.shutdown()
        server.server_close()
    return order, json.loads((folder / "responses" / f"{who}.json").read_text())


def test_participants_of_a_built_study_through_analyze(browser: Any, built: Path) -> None:
    import accentuate as acc

    truth = _trials(built)
    assert len(truth) == 4 * 4 + 3  # 4 pairs in each condition, a catch trial in the 3 with references
    _play(browser, built, "truth", lambda tid, i: (truth[tid]["stronger"], "key" if i % 2 else "mouse"))
    # an attentive guesser: the catch trials right, the others by a coin fixed per trial
    pick = {t: truth[t]["stronger"] if truth[t]["catch"] else random.Random(f"3:{t}").randrange(2) for t in truth}
    main = [t for t in truth if not truth[t]["catch"]]
    expected = sum(pick[t] == truth[t]["stronger"] for t in main)
    assert 5 <= expected <= 11  # about half of the 16, for this coin
    _play(browser, built, "guess", lambda tid, i: (pick[tid], "key"))
    both = acc.study.analyze(built, replicates=300)
    assert sorted(both.participants) == ["guess", "truth"] and both.excluded == {}
    alone = acc.study.analyze(built, [built / "responses" / "truth.json"], replicates=300, save=False)
    assert [r["accuracy"] for r in alone.rows] == [1.0] * len(alone.rows)
    guess = acc.study.analyze(built, [built / "responses" / "guess.json"], replicates=300, save=False)
    by = {r["condition"]: r for r in guess.rows}
    assert sum(by[c]["accuracy"] * by[c]["trials"] for c in acc.study.CONDITIONS) == pytest.approx(expected)
    assert by["catch"]["accuracy"] == 1.0
    assert (built / "study.json").exists() and (built / "study.md").read_text().startswith("Study ")
