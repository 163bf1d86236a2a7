"""A local web server for a study folder: the participant page, and the responses it sends.

``GET`` serves the files inside the folder (``/`` is index.html) and nothing else: no folder
listing, no path out of it (``..``, a symbolic link pointing outside), no hidden file, and none
of the study's private files (:data:`PRIVATE`: ``responses/``, ``trials.json`` with the answers,
``design.json``, ``prolific.json``, ``work/``, ``observers/``). ``POST /responses`` takes the data of one
participant (the JSON array of jsPsych rows the page sends at its end) and writes
``DIR/responses/<participant>.json``, never over an earlier file (a second one for the same participant
is ``<participant>-2.json``). The rows carry the page's ``submission`` id: a submission sent again
(the page retries when it got no answer) is answered with the file it was saved as, and not written
twice. Every answer has ``Cache-Control: no-store`` and the page's Content-Security-Policy.

Under load: the listen backlog (:data:`BACKLOG`) holds a burst of connections until they are taken;
at most ``max_connections`` are handled at once, each by a thread of a pool; one more is answered
``503`` with ``Retry-After`` (the page sends again). A connection that stays silent ``timeout`` seconds,
or lasts ``deadline`` seconds in all, is dropped; a client that left is one line in the log.
"""

from __future__ import annotations

import errno
import json
import mimetypes
import os
import re
import socket
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ..errors import OutputError, UsageError
from ..outputs.io import atomic_write
from .files import ID_PATTERN, read_trials
from .page import CSP, PAGE, PROLIFIC, read_prolific

__all__ = ["BACKLOG", "DEADLINE", "MAX_BODY", "MAX_CONNECTIONS", "TIMEOUT", "make_server", "serve"]

#: The largest response body taken (bytes).
MAX_BODY = 10 * 1024 * 1024
#: The listen backlog: connections the system holds until the server takes them (Linux caps it at
#: ``net.core.somaxconn``, 4096 by default). The old default of 5 reset connections in a burst.
BACKLOG = 1024
#: Connections handled at once (each by a thread of a pool); one more is answered 503.
MAX_CONNECTIONS = 128
#: Seconds a connection may stay silent (a client that sends less than its Content-Length).
TIMEOUT = 10.0
#: Seconds a connection may last in all (a client that sends its body a byte at a time).
DEADLINE = 120.0
#: Seconds a refused (503) connection is kept, for the client to read the answer, before it is closed.
_LINGER = 2.0
RESPONSES = "responses"
#: What the server never gives: the participants' files, the answers and the model's side of the
#: study (the page needs none of them), the Prolific codes, the engine runs and the observers' answers.
PRIVATE = frozenset({RESPONSES, "trials.json", "design.json", PROLIFIC, "work", "observers", "pilot-responses"})
#: A submission id (made by the page: 32 hex digits; any 8 to 64 letters, digits, '-' or '_').
SUBMISSION = re.compile(r"[A-Za-z0-9_-]{8,64}")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".json": "application/json", ".md": "text/plain; charset=utf-8",
          ".txt": "text/plain; charset=utf-8"}
_HEADERS = (("Cache-Control", "no-store"), ("Content-Security-Policy", CSP + "; frame-ancestors 'none'"),
            ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))
#: Errors of a connection whose client went away (or never said anything in time).
_GONE = (ConnectionError, TimeoutError)


class _ClientLeft(Exception):
    """The client closed the connection before its body was complete."""


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


def _submission(rows: list[dict[str, Any]]) -> str | None:
    """The page's submission id of a body of rows (None for data without one: a file sent by hand)."""
    ids = {r.get("submission") for r in rows}
    if ids == {None}:
        return None
    if len(ids) != 1:
        raise _BadBody(HTTPStatus.BAD_REQUEST, f"the rows need one submission id, not {len(ids)}")
    (sid,) = ids
    if not isinstance(sid, str) or not SUBMISSION.fullmatch(sid):
        raise _BadBody(HTTPStatus.BAD_REQUEST, "submission is not 8 to 64 letters, digits, '-' or '_'")
    return sid


def _path(target: str) -> str:
    """The path of a request target, without its query and fragment (``//x`` stays a path)."""
    return target.split("?", 1)[0].split("#", 1)[0]


class _Handler(BaseHTTPRequestHandler):
    """Requests to one study folder (the server's ``folder``, ``study_id`` and ``lock``)."""

    server: _StudyServer
    server_version = "accentuate-study"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.silence)  # each read and write of the connection

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, head_only: bool = False,
              extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in _HEADERS + extra:
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, obj: dict[str, Any]) -> None:
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
            name, again = self._save(self._body())
        except _BadBody as e:
            self.close_connection = True
            self._json(e.status, {"error": str(e)})
            return
        except _ClientLeft:
            self.close_connection = True
            self.log_message("the client left during its body")
            return
        except OutputError as e:  # a full disk, a folder that is not writable
            self.log_message("%s", e)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(e)})
            return
        self.log_message("%s %s", "already saved as" if again else "saved", name)
        reply: dict[str, Any] = {"saved": name}
        try:
            prolific = read_prolific(self.server.folder)
        except UsageError as e:  # a prolific.json edited by hand: saved all the same, without the code
            self.log_message("%s", e)
            prolific = None
        if prolific:
            reply["completion_code"] = prolific["completion_code"]
        self._json(HTTPStatus.OK if again else HTTPStatus.CREATED, reply)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise _BadBody(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length")
        size = int(length)
        if size > MAX_BODY:
            raise _BadBody(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY // 2**20} MB")
        chunks, got = [], 0
        try:
            while got < size:
                chunk = self.rfile.read1(min(size - got, 1 << 16))
                if not chunk:
                    raise _ClientLeft
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            raise _BadBody(HTTPStatus.REQUEST_TIMEOUT, f"the body did not come in {self.server.silence:g} s") from None
        return b"".join(chunks)

    def _save(self, body: bytes) -> tuple[str, bool]:
        """Check ``body`` and write it to the first free ``responses/<participant>[-N].json``; the name
        and False, or, for a submission saved before, its name and True."""
        try:
            rows = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _BadBody(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({str(e).splitlines()[0]})") from None
        who = _participant(rows, self.server.study_id)
        sid = _submission(rows)
        out = self.server.folder / RESPONSES
        with self.server.lock:
            out.mkdir(exist_ok=True)
            n = 1
            while (out / (name := f"{who}.json" if n == 1 else f"{who}-{n}.json")).exists():
                if sid is not None and self.server.submission_of(out / name) == sid:
                    return f"{RESPONSES}/{name}", True
                n += 1
            atomic_write(out / name, body)
            self.server.submissions[name] = sid
        return f"{RESPONSES}/{name}", False

    def _not_allowed(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        """Log saved responses and errors to stderr; files served are not logged."""
        self.server.log(self.client_address, format % args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log a request that failed (status 400 and over) only."""
        if isinstance(code, HTTPStatus):
            code = code.value
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


class _StudyServer(HTTPServer):
    """The listening socket, a pool of handler threads and the bound on connections at once."""

    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], folder: Path, study_id: str, quiet: bool, max_connections: int,
                 timeout: float, deadline: float) -> None:
        self.folder = folder
        self.study_id = study_id
        self.quiet = quiet
        self.max_connections = max_connections
        self.silence = timeout
        self.deadline = deadline
        self.lock = threading.Lock()
        #: The submission id of each file written or read (by name in responses/).
        self.submissions: dict[str, str | None] = {}
        #: How the connections went: ``busy`` (answered 503), ``dropped`` (past the deadline).
        self.counts: Counter[str] = Counter()
        self._active: dict[socket.socket, float] = {}  # connection -> when it must end
        self._active_lock = threading.Lock()
        self._refused: deque[tuple[socket.socket, float]] = deque()
        self._pool = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="study-serve")
        super().__init__(address, _Handler)
        body = json.dumps({"error": "the server is busy; send again in a moment"}).encode() + b"\n"
        self._busy = (b"HTTP/1.0 503 Service Unavailable\r\nServer: accentuate-study\r\n"
                      b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
                      + b"Retry-After: 2\r\nConnection: close\r\n"
                      + b"".join(f"{k}: {v}\r\n".encode() for k, v in _HEADERS) + b"\r\n" + body)

    @property
    def open_connections(self) -> int:
        """The connections being handled now."""
        with self._active_lock:
            return len(self._active)

    def log(self, address: Any, message: str) -> None:
        """One line on stderr (nothing when quiet)."""
        if not self.quiet:
            host = address[0] if isinstance(address, tuple) and address else "-"
            sys.stderr.write(f"{host} - [{time.strftime('%d/%b/%Y %H:%M:%S')}] {message}\n")

    def submission_of(self, path: Path) -> str | None:
        """The submission id in a saved file (read once, then remembered); None when it has none."""
        if path.name not in self.submissions:
            try:
                rows = json.loads(path.read_bytes())
                sid = rows[0].get("submission") if isinstance(rows, list) and rows and isinstance(rows[0], dict) \
                    else None
            except (OSError, ValueError):
                sid = None
            self.submissions[path.name] = sid if isinstance(sid, str) else None
        return self.submissions[path.name]

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to the pool, or answer 503 when ``max_connections`` are open."""
        with self._active_lock:
            busy = len(self._active) >= self.max_connections
            if not busy:
                self._active[request] = time.monotonic() + self.deadline
        if busy:
            self._refuse(request, client_address)
        else:
            self._pool.submit(self._work, request, client_address)

    def _work(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 (one line in the log; the server goes on)
            self.handle_error(request, client_address)
        finally:
            with self._active_lock:
                self._active.pop(request, None)
            self.shutdown_request(request)

    def _refuse(self, request: socket.socket, client_address: Any) -> None:
        """Answer 503 without blocking, and close the connection a moment later (service_actions)."""
        self.counts["busy"] += 1
        self.log(client_address, f"busy ({self.max_connections} connections open): answered 503")
        try:
            request.setblocking(False)
            request.sendall(self._busy)  # a few hundred bytes: the socket's buffer takes them at once
            request.shutdown(socket.SHUT_WR)
        except OSError:
            self.shutdown_request(request)
            return
        self._refused.append((request, time.monotonic() + _LINGER))

    def service_actions(self) -> None:
        """Between requests (at least every half second): close the refused connections that were
        read or are past their linger, and cut the connections past their deadline."""
        now = time.monotonic()
        for _ in range(len(self._refused)):
            sock, until = self._refused.popleft()
            try:
                while sock.recv(1 << 16):  # what the client still sends is dropped
                    pass
                done = True  # the client closed
            except BlockingIOError:
                done = now > until
            except OSError:
                done = True
            if done:
                sock.close()
            else:
                self._refused.append((sock, until))
        with self._active_lock:
            late = [s for s, until in self._active.items() if now > until]
            for s in late:
                self._active[s] = float("inf")  # cut once
        for s in late:
            self.counts["dropped"] += 1
            try:
                s.shutdown(socket.SHUT_RDWR)  # the handler's read or write fails, and it ends
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line: the client left (or fell silent), or what went wrong and where."""
        error = sys.exc_info()[1]
        if isinstance(error, _GONE):
            self.log(client_address, f"the client left before the answer ({type(error).__name__})")
            return
        tb = error.__traceback__ if error else None
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else ""
        self.log(client_address, f"error {type(error).__name__}: {error}{where}")

    def server_close(self) -> None:
        """Stop listening, and end the connections still open (their threads end with them)."""
        super().server_close()
        with self._active_lock:
            open_now = list(self._active)
        for s in open_now + [s for s, _ in self._refused]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for s, _ in self._refused:
            s.close()
        self._refused.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_server(directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, quiet: bool = False, *,
                max_connections: int = MAX_CONNECTIONS, timeout: float = TIMEOUT,
                deadline: float = DEADLINE) -> HTTPServer:
    """A server for the study in ``directory``, bound but not yet serving (call ``serve_forever``).

    Args:
        directory: the study folder (with trials.json and index.html).
        host: the address to listen on (``127.0.0.1``: this computer only).
        port: the port; 0 picks a free one (``server.server_address[1]``).
        quiet: log nothing (else saved responses, failed requests and clients that left go to
            stderr, one line each).
        max_connections: connections handled at once; one more is answered 503 (the page sends again).
        timeout: seconds a connection may stay silent before it is dropped.
        deadline: seconds a connection may last in all.

    Raises:
        UsageError: no such folder, no trials.json or no index.html in it, a bound that is not
            positive, or the port cannot be used (in use, or not allowed).
    """
    folder = Path(directory)
    study = read_trials(folder)
    if not (folder / PAGE).is_file():
        raise UsageError(f"no {PAGE} in {str(folder)!r}; make the page with `accentuate study build`")
    if max_connections < 1 or not timeout > 0 or not deadline > 0:
        raise UsageError(f"max_connections ({max_connections}), timeout ({timeout}) and deadline ({deadline}) "
                         "must be positive")
    try:
        return _StudyServer((host, port), folder.resolve(), study["study_id"], quiet, max_connections, timeout,
                            deadline)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use; choose another port") from None
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another host or port") from None


def serve(directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> None:
    """Serve the study in ``directory`` until Ctrl-C, printing its address.

    Raises:
        UsageError: as :func:`make_server`.
    """
    server = make_server(directory, host, port, quiet)
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
