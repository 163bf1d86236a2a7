"""A burst of participants' submissions to ``accentuate study serve``, on this machine's loopback only.

    python benchmarks/study_load.py                       # 400 participants x 2 sends, 200 bad bodies,
                                                          # 50 stalled clients, 64 client threads
    python benchmarks/study_load.py --retries 0 --json before.json

A synthetic study folder (two trials, four small pictures; :func:`make_folder`) is served by
``make_server(..., quiet=True)`` in a process of its own. First ``--stalled`` clients open a
connection, send the headers of a submission and a tenth of its body, and then send nothing more
(held open until the end). Then ``--threads`` client threads send, in a shuffled order, every
participant's data ``--sends`` times (the same body each time, with one submission id per
participant: as a page that sends again would) and ``--bad`` malformed bodies (not JSON, another
study, rows without a study, a participant id with a path in it, a body too large, a client that
leaves in the middle of its body). Each send opens a new connection. A send that gets no answer (a
connection reset, a timeout) or a 5xx is sent again after the page's pause (1 s, doubling, at most
30 s), at most ``--retries`` times.

Reported: how each first attempt went (status or exception), what was finally saved (files in
``responses/``, each compared byte for byte with what was sent), the requests per second over the
burst, how long a page request took just after it (the stalled clients still open), when the
server dropped the stalled clients, and what the server wrote on stderr (tracebacks counted).
The load average is recorded with the figures: on a busy machine they are noise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STUDY_ID = "10ad7e5751d0c0de"
#: The server, in a process of its own: argv is the folder and the JSON of make_server's keywords.
_SERVER = """import json, sys
from accentuate.study.serve import make_server
server = make_server(sys.argv[1], port=0, **{"quiet": True, **json.loads(sys.argv[2])})
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def make_folder(folder: Path) -> str:
    """A small study folder (trials.json, four pictures, the page); returns its study id."""
    from PIL import Image

    from accentuate.study.page import write_page

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i, color in enumerate(((200, 40, 40), (40, 40, 200), (180, 90, 30), (30, 90, 180))):
        Image.new("RGB", (32, 32), color).save(folder / "images" / f"{i}.png")
    trials = [{"id": f"t{k}", "feature": "hammer", "feature_kind": "class", "condition": cond, "catch": False,
               "references": {"strong": ["images/0.png"], "weak": ["images/1.png"]},
               "queries": ["images/2.png", "images/3.png"], "stronger": k % 2, "values": [1.0, 0.0]}
              for k, cond in enumerate(("accentuation", "natural"))]
    doc = {"format": "accentuate-study/1", "study_id": STUDY_ID, "title": "Load", "model": "m", "seed": 0,
           "keys": {"left": "f", "right": "j"}, "conditions": ["accentuation", "natural"],
           "features": [{"name": "hammer", "kind": "class"}], "show_feature_names": False, "trials": trials}
    (folder / "trials.json").write_text(json.dumps(doc))
    write_page(folder)
    return STUDY_ID


def body(study_id: str, participant: str, submission: str, trials: int = 140) -> bytes:
    """What a page sends for one participant: jsPsych's rows (about 50 kB for 140 trials)."""
    common = {"study_id": study_id, "participant": participant, "submission": submission}
    rows = [{**common, "phase": "preload", "trial_type": "preload", "trial_index": 0, "time_elapsed": 812}]
    rows += [{**common, "phase": "trial", "trial_type": "html-button-response", "trial_index": i + 1,
              "time_elapsed": 1000 + 1700 * i, "rt": 900 + 13 * i, "response": i % 2, "chosen": i % 2,
              "trial_id": f"t{i % 2}", "condition": "natural", "feature": "hammer", "feature_kind": "class",
              "catch": False, "position": i + 1, "response_source": "keyboard", "internal_node_id": f"0.0-{i}.0"}
             for i in range(trials)]
    return json.dumps(rows).encode()


def _bad_bodies(study_id: str, n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    kinds = [
        ("not JSON", b'[{"study_id": "' + study_id.encode() + b'", ', {}),
        ("another study", json.dumps([{"study_id": "0" * 16, "participant": "x"}]).encode(), {}),
        ("no study", json.dumps([{"participant": "x"}]).encode(), {}),
        ("a path", json.dumps([{"study_id": study_id, "participant": "../../x"}]).encode(), {}),
        ("too large", b"", {"Content-Length": str(64 * 2**20)}),
        ("gone", b"", {}),  # a client that leaves in the middle of its body
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


@contextmanager
def server(folder: Path, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """``make_server(folder, quiet=True, **kwargs)`` serving in a child process; yields
    ``{"port", "process"}`` and, once stopped, adds ``"stderr"`` (what it wrote there)."""
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(folder), json.dumps(kwargs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    info: dict[str, Any] = {"process": proc}
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip().isdigit():
            proc.kill()
            raise RuntimeError(f"the server did not start: {line}{proc.communicate()[1]}")
        info["port"] = int(line)
        yield info
    finally:
        proc.terminate()
        try:
            info["stderr"] = proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            info["stderr"] = proc.communicate()[1]


def _send(port: int, data: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if "Content-Length" in headers:  # a body too large: the headers only
            conn.putrequest("POST", "/responses")
            for k, v in {"Content-Type": "application/json", **headers}.items():
                conn.putheader(k, v)
            conn.endheaders()
        else:
            conn.request("POST", "/responses", body=data, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def _outcome(error: BaseException) -> str:
    return type(error).__name__


def _leave(port: int) -> str:
    """A client that sends the headers and part of a body, then resets the connection (a tab closed
    during the upload)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n[{\"study_id\"")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return "left"


def stall(port: int, n: int, length: int = 50_000) -> list[socket.socket]:
    """``n`` clients that send the headers and a tenth of a body, then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {length}\r\n\r\n".encode() + b"[" + b" " * (length // 10))
        socks.append(s)
    return socks


def dropped_after(socks: list[socket.socket], started: float, limit: float) -> list[float | None]:
    """When (seconds after ``started``) the server closed each stalled connection, None if not by ``limit``."""
    out: list[float | None] = []
    for s in socks:
        s.settimeout(max(0.05, started + limit - time.perf_counter()))  # closed already: at once
        try:
            while s.recv(65536):
                pass
            out.append(time.perf_counter() - started)
        except TimeoutError:
            out.append(None)
        except OSError:  # reset: dropped too
            out.append(time.perf_counter() - started)
    return out


def page_time(port: int) -> tuple[int, float]:
    """The status and the seconds of one ``GET /`` on a new connection."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
        return reply.status, time.perf_counter() - t
    finally:
        conn.close()


def burst(port: int, study_id: str, participants: int = 400, sends: int = 2, bad: int = 200, threads: int = 64,
          retries: int = 6, timeout: float = 30.0, seed: int = 0) -> dict[str, Any]:
    """Send every participant's data ``sends`` times and ``bad`` malformed bodies from ``threads`` threads.

    Returns:
        ``first`` (how each first attempt went: a status or an exception name, counted),
        ``valid`` (per valid send: the final status and the file name answered), ``bad`` (the final
        status of each malformed body), ``bodies`` (participant -> the body sent), ``attempts``
        (requests made, retries included), ``seconds`` and ``requests_per_second``.
    """
    rng = random.Random(seed)
    bodies = {f"p{i:04d}": body(study_id, f"p{i:04d}", secrets.token_hex(16)) for i in range(participants)}
    jobs: list[tuple[str, str, bytes, dict[str, str]]] = [("valid", p, b, {}) for p, b in bodies.items()
                                                          for _ in range(sends)]
    jobs += [("bad", kind, b, h) for kind, b, h in _bad_bodies(study_id, bad)]
    rng.shuffle(jobs)
    lock = threading.Lock()
    first: Counter[str] = Counter()
    valid: list[tuple[str, int | str, str | None]] = []
    bad_out: list[tuple[str, int | str]] = []
    attempts = [0]
    it = iter(jobs)

    def work() -> None:
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                return
            kind, who, data, headers = job
            result: int | str = "none"
            answer = b""
            for k in range(retries + 1):
                try:
                    if who == "gone":
                        result = _leave(port)
                    else:
                        result, answer = _send(port, data, headers, timeout)
                except (OSError, http.client.HTTPException) as e:
                    result = _outcome(e)
                with lock:
                    attempts[0] += 1
                    if k == 0:
                        first[str(result)] += 1
                if (isinstance(result, int) and result < 500) or result == "left":
                    break
                if k < retries:  # the page's pauses: 1 s, doubling, at most 30 s, +-25 %
                    time.sleep(min(30.0, 2.0**k) * (0.75 + 0.5 * random.random()))
            with lock:
                if kind == "valid":
                    saved = json.loads(answer).get("saved") if result in (200, 201) else None
                    valid.append((who, result, saved))
                else:
                    bad_out.append((who, result))

    started = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    return {"first": dict(first), "valid": valid, "bad": bad_out, "bodies": bodies, "attempts": attempts[0],
            "seconds": seconds, "requests_per_second": attempts[0] / seconds}


def check_saved(folder: Path, result: dict[str, Any]) -> dict[str, Any]:
    """What is in ``folder/responses`` against what was sent: participants saved (a file equal to
    their body), files per participant, and files that match no body."""
    out = folder / "responses"
    files = sorted(out.glob("*.json")) if out.is_dir() else []
    per: Counter[str] = Counter()
    damaged = []
    for f in files:
        who = f.stem.split("-")[0]
        per[who] += 1
        if f.read_bytes() != result["bodies"].get(who):
            damaged.append(f.name)
    return {"files": len(files), "participants_saved": len(per), "participants": len(result["bodies"]),
            "most_files_of_one": max(per.values(), default=0), "damaged": damaged}


def run(participants: int = 400, sends: int = 2, bad: int = 200, stalled: int = 50, threads: int = 64,
        retries: int = 6, server_kwargs: dict[str, Any] | None = None, drop_limit: float = 40.0,
        folder: Path | None = None) -> dict[str, Any]:
    """The whole load (a fresh study folder unless ``folder``); returns the figures (no bodies)."""
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder or tmp)
        study_id = make_folder(where)
        with server(where, **(server_kwargs or {})) as srv:
            port = srv["port"]
            socks = stall(port, stalled)
            t0 = time.perf_counter()
            result = burst(port, study_id, participants, sends, bad, threads, retries)
            status, page_s = page_time(port)
            drops = dropped_after(socks, t0, drop_limit)
            for s in socks:
                s.close()
            alive = srv["process"].poll() is None
        err = srv["stderr"]
        saved = check_saved(where, result)
    dropped = [d for d in drops if d is not None]
    return {
        "load": {"participants": participants, "sends": sends, "bad": bad, "stalled": stalled, "threads": threads,
                 "retries": retries, "server": server_kwargs or {}},
        "first_attempts": result["first"],
        "valid_final": dict(Counter(str(s) for _, s, _ in result["valid"])),
        "bad_final": dict(Counter(str(s) for _, s in result["bad"])),
        "saved": saved,
        "same_name_for_both_sends": _same_names(result["valid"]),
        "attempts": result["attempts"], "seconds": round(result["seconds"], 2),
        "requests_per_second": round(result["requests_per_second"], 1),
        "page_after": {"status": status, "seconds": round(page_s, 3)},
        "stalled_dropped": {"count": len(dropped), "of": len(drops),
                            "after_s": [round(min(dropped), 1), round(max(dropped), 1)] if dropped else None,
                            "waited_s": drop_limit},
        "server_alive": alive,
        "stderr": {"lines": len(err.splitlines()), "tracebacks": err.count("Traceback"),
                   "first_lines": err.splitlines()[:5]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }


def _same_names(valid: list[tuple[str, int | str, str | None]]) -> bool:
    names: dict[str, set[str | None]] = {}
    for who, _, saved in valid:
        names.setdefault(who, set()).add(saved)
    return all(len(s) == 1 and None not in s for s in names.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=400)
    ap.add_argument("--sends", type=int, default=2, help="times each participant's data is sent (default 2)")
    ap.add_argument("--bad", type=int, default=200, help="malformed bodies (default 200)")
    ap.add_argument("--stalled", type=int, default=50, help="clients that never finish their body (default 50)")
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--retries", type=int, default=6,
                    help="sends again after a reset or a 5xx, as the page does (default 6; 0: none)")
    ap.add_argument("--server", default="{}", help="make_server's keywords as JSON (default {})")
    ap.add_argument("--drop-limit", type=float, default=40.0,
                    help="seconds to wait for the server to drop the stalled clients (default 40)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    figures = run(args.participants, args.sends, args.bad, args.stalled, args.threads, args.retries,
                  json.loads(args.server), args.drop_limit)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
