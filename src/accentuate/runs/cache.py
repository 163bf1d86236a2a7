"""An engine run kept in a work folder and read back by a later call instead of optimized again.

An analysis that makes many engine runs (the pathway study) keeps each one with
:meth:`Result.save <accentuate.result.Result.save>` under ``work/NAME`` with the digest of what
made it (model, settings, targets, seeds); the same call later reads it back with
:meth:`Result.load <accentuate.result.Result.load>`, exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..digest import canonical_sha256
from ..outputs.io import atomic_write
from ..result import Result

__all__ = ["cached_run"]


def cached_run(work: Path | None, name: str, key: dict[str, Any], make: Callable[[], Result],
               names: Sequence[str] | None) -> tuple[Result, bool]:
    """``make()``, or the result saved under ``work/name`` with the same ``key`` (an analysis's engine
    runs, read back by a later call instead of optimized again).

    Returns:
        ``(result, read_back)``.

    Raises:
        ValueError: ``work/name`` holds a run made otherwise (it is never overwritten).
    """
    if work is None:
        return make(), False
    folder = work / name
    key_file = folder / "key.json"
    digest = canonical_sha256(key)
    if key_file.exists():
        saved = json.loads(key_file.read_text())
        if saved.get("digest") != digest:
            raise ValueError(f"{folder} holds a {name} run made with other settings, targets or seeds; "
                             "remove it or give another work folder")
        return Result.load(folder), True
    res = make()
    if res.interrupted:
        raise KeyboardInterrupt(f"the {name} run was interrupted; nothing was saved for it")
    res.save(folder, names=list(names) if names is not None else None)
    atomic_write(key_file, json.dumps({"digest": digest, "key": key}, indent=2, default=str).encode())
    return res, False
