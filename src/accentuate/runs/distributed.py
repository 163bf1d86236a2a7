"""One run over several processes started by ``torchrun``: ranks, batch claims, per-rank records.

``torchrun --nproc-per-node N -m accentuate run ...`` starts N copies of the same
command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set. Each copy builds the same work list and the same batches (see
:mod:`accentuate.runs.manifest`). Then:

- rank 0 checks what an earlier run in the output folder finished (``run.json`` and any
  per-rank records left by a run that was stopped), saves ``run.json``, and publishes the
  batches still to do in torchrun's rendezvous store (a ``torch.distributed.TCPStore``);
- every rank claims batches one at a time with the store's atomic counter
  (:meth:`Coordinator.claims`), so a fast rank takes more batches; it writes each pair's
  files atomically and, after each batch, its own record ``ranks/rank-R.json``;
- rank 0 shows one progress bar for the whole job (a second counter in the store), waits for
  every rank, merges the per-rank records into the one ``run.json`` (each pair once,
  its files checked by SHA-256), and removes them.

A rank killed mid-run loses only its batch in flight: torchrun stops the others (they save
what they finished), and rerunning the same command, or torchrun's ``--max-restarts``,
redoes only the batches that are not complete. No process group is created: the work needs
no collective operations, only the store, which torchrun already runs (the ranks connect to it
as clients, as ``init_process_group(init_method="env://")`` would).

Without torchrun (no ``WORLD_SIZE``, or 1) the same command runs in one process and
:class:`Coordinator` hands out the batches in order.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..outputs.io import atomic_write
from .record import RunWriter
from .work import Batch

__all__ = ["RANKS_DIR", "Coordinator", "Ranks", "clear_rank_records", "load_rank_records", "merge_rank_records",
           "write_rank_record"]

#: Folder of the output folder that holds the per-rank records while a distributed run works.
RANKS_DIR = "ranks"
#: Format of a per-rank record.
RANK_FORMAT = "accentuate-rank/1"
#: How long a rank waits for rank 0 to publish the work (rank 0 loads the model and checks an
#: earlier run's files first), in seconds.
PUBLISH_TIMEOUT_S = 3600.0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"environment variable {name}={text!r} is not an integer; torchrun sets it, "
                         f"or unset it to run in one process") from None


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job: ``rank`` of ``world``, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them (one process when unset)."""
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local = _env_int("LOCAL_RANK", rank if world > 1 else 0)
        if world < 1 or not 0 <= rank < world:
            raise UsageError(f"RANK={rank} and WORLD_SIZE={world} do not fit (0 <= RANK < WORLD_SIZE); "
                             "start the job with torchrun, or unset them")
        return cls(rank, world, max(0, local))

    @property
    def distributed(self) -> bool:
        return self.world > 1


def connect_store(timeout_s: float = PUBLISH_TIMEOUT_S) -> torch.distributed.Store:
    """A client of torchrun's store at ``MASTER_ADDR:MASTER_PORT``.

    Under torchrun the agent hosts the store and every rank is a client (torchrun sets
    ``TORCHELASTIC_USE_AGENT_STORE=True``); a launcher that only sets the variables gets
    the store hosted by rank 0, as ``init_process_group(init_method="env://")`` does.
    """
    from torch.distributed import TCPStore

    addr = os.environ.get("MASTER_ADDR")
    port = _env_int("MASTER_PORT", -1)
    if not addr or not 0 < port < 65536:
        raise UsageError("WORLD_SIZE > 1 but MASTER_ADDR / MASTER_PORT are not set; start the job with "
                         "torchrun (e.g. torchrun --nproc-per-node 2 -m accentuate run ...)")
    ranks = Ranks.from_env()
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    timeout = _dt.timedelta(seconds=timeout_s)
    if agent:
        return TCPStore(addr, port, world_size=ranks.world, is_master=False, timeout=timeout)
    return TCPStore(addr, port, world_size=ranks.world, is_master=ranks.rank == 0, timeout=timeout,
                    multi_tenant=True)


class Coordinator:
    """Hands out batches: in order in one process, from the store's atomic counter under torchrun.

    Keys live under ``accentuate/<run id>/<restart>/``, so a torchrun restart
    (``--max-restarts``) starts a fresh count.
    """

    def __init__(self, ranks: Ranks, store: Any = None) -> None:
        self.ranks = ranks
        self.store = store
        self._done = 0

    @classmethod
    def start(cls, ranks: Ranks) -> Coordinator:
        """Connect to the store when the job has several ranks."""
        if not ranks.distributed:
            return cls(ranks)
        from torch.distributed import PrefixStore

        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return cls(ranks, PrefixStore(f"accentuate/{run_id}/{attempt}/", connect_store()))

    # -- the work ----------------------------------------------------------------------------
    def publish(self, todo: Sequence[tuple[int, Collection[tuple[int, int]]]], work: str) -> None:
        """Rank 0: the batches to do (index, pairs already complete in it) and the work's hash."""
        if self.store is not None:
            self.store.set("work", json.dumps({"work": work, "todo": [[k, [list(p) for p in sorted(s)]] for k, s in todo]}))

    def receive(self, work: str) -> list[tuple[int, set[tuple[int, int]]]]:
        """Other ranks: what rank 0 published (checked to be the same work)."""
        assert self.store is not None
        deadline = time.monotonic() + PUBLISH_TIMEOUT_S
        while not self.store.check(["work"]):  # polled: a signal (torchrun stopping the job) ends the wait
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {self.ranks.rank} waited {PUBLISH_TIMEOUT_S:.0f} s for rank 0 to publish "
                                   "the work; check rank 0's output")
            time.sleep(0.1)
        doc = json.loads(self.store.get("work"))
        if doc["work"] != work:
            raise UsageError(f"rank {self.ranks.rank} has another work list than rank 0 (other images, targets or "
                             "settings); every rank must see the same files and options")
        return [(int(k), {(int(i), int(j)) for i, j in s}) for k, s in doc["todo"]]

    def claims(self, todo: Sequence[Batch]) -> Iterator[Batch]:
        """The batches this process runs: claimed one at a time, so fast ranks take more."""
        if self.store is None:
            yield from todo
            return
        while True:
            k = int(self.store.add("next", 1)) - 1
            if k >= len(todo):
                return
            yield todo[k]

    # -- progress ----------------------------------------------------------------------------
    def add_done(self, pairs: int) -> None:
        """Count ``pairs`` finished by this rank into the job's total."""
        self._done += pairs
        if self.store is not None:
            self.store.add("pairs", pairs)

    def done(self) -> int:
        """Pairs finished by every rank so far."""
        return int(self.store.add("pairs", 0)) if self.store is not None else self._done

    def finish(self) -> None:
        """This rank has claimed its last batch and saved its record."""
        if self.store is not None:
            self.store.add("finished", 1)

    def wait_all(self, tick: Callable[[int], None], every_s: float = 0.25) -> None:
        """Rank 0: wait until every rank finished; ``tick(pairs done)`` while waiting.

        A rank that dies makes torchrun stop the job (this one included, with SIGTERM), so the
        wait ends either way.
        """
        if self.store is None:
            return
        while int(self.store.add("finished", 0)) < self.ranks.world:
            tick(self.done())
            time.sleep(every_s)
        tick(self.done())


# -- per-rank records ------------------------------------------------------------------------
def rank_path(out: Path, rank: int) -> Path:
    return Path(out) / RANKS_DIR / f"rank-{rank}.json"


def write_rank_record(writer: RunWriter, ranks: Ranks, extra: dict[str, Any]) -> Path:
    """Save this rank's pairs and batches (atomically) to ``ranks/rank-R.json``."""
    path = rank_path(writer.out, ranks.rank)
    path.parent.mkdir(exist_ok=True)
    doc = {
        "format": RANK_FORMAT, "rank": ranks.rank, "world_size": ranks.world, "local_rank": ranks.local_rank,
        "host": socket.gethostname(), "pid": os.getpid(), "settings_hash": writer.key,
        "updated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **extra,
        "batches": writer.batches(),
        "pairs": writer.own_entries(),
    }
    atomic_write(path, (json.dumps(doc, indent=1, default=str) + "\n").encode())
    return path


def load_rank_records(out: Path, key: str) -> list[dict[str, Any]]:
    """The per-rank records in ``out/ranks`` written with the settings hash ``key``
    (unreadable or foreign ones are ignored: they only cost a redo)."""
    folder = Path(out) / RANKS_DIR
    docs = []
    for p in sorted(folder.glob("rank-*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(p.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("format") == RANK_FORMAT and doc.get("settings_hash") == key:
            docs.append(doc)
    return docs


def merge_rank_records(writer: RunWriter, ranks: Ranks, verify: bool) -> dict[str, Any]:
    """Rank 0: add the other ranks' pairs to ``writer`` (each pair once; with ``verify``, only
    pairs whose files are intact) and their batches to the timings; returns the summary of
    the ranks recorded as ``distributed`` in ``run.json``."""
    summary: list[dict[str, Any]] = []
    if verify:  # the other ranks' pairs merged while running were not checked: take them again, checked
        writer.drop_foreign(ranks.rank)
    writer.keep_batches(ranks.rank)
    for doc in load_rank_records(writer.out, writer.key):
        r = int(doc.get("rank", -1))
        if r == ranks.rank:
            continue
        writer.merge(doc.get("pairs", []), doc.get("batches", []), verify=verify)
        keys = ("rank", "host", "pid", "device", "device_name", "threads", "cuda_peak_memory_bytes", "busy_s")
        summary.append({k: doc[k] for k in keys if doc.get(k) is not None}
                       | {"batches": len(doc.get("batches", [])), "pairs": len(doc.get("pairs", []))})
    return {"world_size": ranks.world, "ranks": sorted(summary, key=lambda s: s["rank"])}


def clear_rank_records(out: Path) -> None:
    """Remove the per-rank records (once ``run.json`` holds what they listed)."""
    folder = Path(out) / RANKS_DIR
    if not folder.is_dir():
        return
    for p in folder.glob("rank-*.json"):
        try:
            p.unlink()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass
