"""A local web server for a study folder: the participant page, and the responses it sends.

``GET`` serves the files inside the folder (``/`` is index.html) and nothing else: no folder
listing, no path out of it (``..``, a symbolic link pointing outside), no hidden file, and none
of the study's private files (:data:`PRIVATE`: ``responses/``, ``trials.json`` with the answers,
``design.json``, ``work/``, ``observers/``). ``POST /responses`` takes the data of one participant (the JSON
array of jsPsych rows the page sends at its end) and writes ``DIR/responses/<participant>.json``,
never over an earlier file (a second one for the same participant is ``<participant>-2.json``).
Every answer has ``Cache-Control: no-store`` and the page's Content-Security-Policy.
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..errors import OutputError, UsageError
from ..outputs.io import atomic_write
from .files import ID_PATTERN, read_trials
from .page import CSP, PAGE

__all__ = ["MAX_BODY", "make_server", "serve"]

#: The largest response body taken (bytes).
MAX_BODY = 10 * 1024 * 1024
RESPONSES = "responses"
#: What the server never gives: the participants' files, the answers and the model's side of the
#: study (the page needs none of them), the engine runs and the observers' answers.
PRIVATE = frozenset({RESPONSES, "trials.json", "design.json", "work", "observers", "pilot-responses"})
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".json": "application/json", ".md": "text/plain; charset=utf-8",
          ".txt": "text/plain; charset=utf-8"}


class _BadBody(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _participant(rows: Any, study_id: str) -> str:
    """The one participant of a body of responses (checked to be this study's)."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise _BadBody(HTTPStatus.BAD_REQUEST, "the body is not a JSON array of objects (rows)")
    ids = {r.get("study_id") for r in rows}
    others = sorted(str(i) for i in ids if i is not None and i != study_id)
    if others:
        raise _BadBody(HTTPStatus.CONFLICT, f"responses of study {others[0]!r}; this server has study {study_id!r}")
    if ids != {study_id}:
        raise _BadBody(HTTPStatus.BAD_REQUEST, "every row needs the study_id of this study")
    people = {r.get("participant") for r in rows}
    if len(people) != 1:
        raise _BadBody(HTTPStatus.BAD_REQUEST, f"the rows need one participant, not {len(people)}")
    (who,) = people
    if not isinstance(who, str) or not ID_PATTERN.fullmatch(who):
        raise _BadBody(HTTPStatus.BAD_REQUEST, "participant is not 1 to 64 letters, digits, '-' or '_'")
    return who


def _path(target: str) -> str:
    """The path of a request target, without its query and fragment (``//x`` stays a path)."""
    return target.split("?", 1)[0].split("#", 1)[0]


class _Handler(BaseHTTPRequestHandler):
    """Requests to one study folder (the server's ``folder``, ``study_id`` and ``lock``)."""

    server: _StudyServer
    server_version = "accentuate-study"
    sys_version = ""
    #: Seconds a connection may stay silent (a client that sends less than its Content-Length).
    timeout = 30

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP + "; frame-ancestors 'none'")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: dict[str, str]) -> None:
        self._send(status, json.dumps(obj).encode() + b"\n", "application/json")

    def _file(self) -> Path | None:
        """The file a GET asks for, or None when it is not one the server gives."""
        raw = _path(self.path)
        if not raw.startswith("/"):
            return None
        parts = unquote(raw, errors="strict").split("/")[1:]
        if parts == [""]:
            parts = [PAGE]
        if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            return None
        if parts[0] in PRIVATE:
            return None
        root = self.server.folder
        path = root.joinpath(*parts)
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(root) or not real.is_file() or real.relative_to(root).parts[0] in PRIVATE:
            return None  # outside the folder (a link), not a file, or (through a link) a private file
        return real

    def _get(self, head_only: bool) -> None:
        try:
            path = self._file()
        except UnicodeDecodeError:
            path = None
        if path is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            body = path.read_bytes()
        except OSError:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        ctype = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, body, ctype, head_only)

    def do_GET(self) -> None:
        """Serve a file of the folder."""
        self._get(head_only=False)

    def do_HEAD(self) -> None:
        """The headers of a GET."""
        self._get(head_only=True)

    def do_POST(self) -> None:
        """Save one participant's responses (only at ``/responses``)."""
        if _path(self.path) != "/" + RESPONSES:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            name = self._save(self._body())
        except _BadBody as e:
            self.close_connection = True
            self._json(e.status, {"error": str(e)})
            return
        except OutputError as e:  # a full disk, a folder that is not writable
            self.log_message("%s", e)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
            return
        self.log_message("saved %s", name)
        self._json(HTTPStatus.CREATED, {"saved": name})

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _BadBody(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length")
        if int(length) > MAX_BODY:
            raise _BadBody(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY // 2**20} MB")
        return self.rfile.read(int(length))

    def _save(self, body: bytes) -> str:
        """Check ``body`` and write it to the first free ``responses/<participant>[-N].json``."""
        try:
            rows = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _BadBody(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({str(e).splitlines()[0]})") from None
        who = _participant(rows, self.server.study_id)
        out = self.server.folder / RESPONSES
        with self.server.lock:
            out.mkdir(exist_ok=True)
            n = 1
            while (out / (name := f"{who}.json" if n == 1 else f"{who}-{n}.json")).exists():
                n += 1
            atomic_write(out / name, body)
        return f"{RESPONSES}/{name}"

    def _not_allowed(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        """Log saved responses and errors to stderr; files served are not logged."""
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log a request that failed (status 400 and over) only."""
        if isinstance(code, HTTPStatus):
            code = code.value
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


class _StudyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], folder: Path, study_id: str, quiet: bool) -> None:
        self.folder = folder
        self.study_id = study_id
        self.quiet = quiet
        self.lock = threading.Lock()
        super().__init__(address, _Handler)


def make_server(directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 0,
                quiet: bool = False) -> ThreadingHTTPServer:
    """A server for the study in ``directory``, bound but not yet serving (call ``serve_forever``).

    Args:
        directory: the study folder (with trials.json and index.html).
        host: the address to listen on (``127.0.0.1``: this computer only).
        port: the port; 0 picks a free one (``server.server_address[1]``).
        quiet: log nothing (else saved responses and failed requests go to stderr).

    Raises:
        UsageError: no such folder, no trials.json or no index.html in it, or the port cannot
            be used (in use, or not allowed).
    """
    folder = Path(directory)
    study = read_trials(folder)
    if not (folder / PAGE).is_file():
        raise UsageError(f"no {PAGE} in {str(folder)!r}; make the page with `accentuate study build`")
    try:
        return _StudyServer((host, port), folder.resolve(), study["study_id"], quiet)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use; choose another port") from None
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another host or port") from None


def serve(directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the study in ``directory`` until Ctrl-C, printing its address.

    Raises:
        UsageError: as :func:`make_server`.
    """
    server = make_server(directory, host, port)
    actual = server.server_address[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"Serving the study {getattr(server, 'study_id', '')} at http://{shown}:{actual}/ (responses go to "
          f"{Path(directory) / RESPONSES}); press Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
    finally:
        server.server_close()
