"""Content hashes, written once: the canonical JSON of a value and the bytes of a file.

A leaf module (the standard library only): settings, records, work lists and saved
results hash the same way.

Example:
    >>> canonical_sha256({"b": [1, 2], "a": 1}) == canonical_sha256({"a": 1, "b": [1, 2]})
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["canonical_json", "canonical_sha256", "file_sha256", "files_intact", "name_seed"]


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces (anything else through ``str``)."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def canonical_sha256(value: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``value``: equal values hash equal in any process."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's bytes, or ``None`` if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def files_intact(folder: str | os.PathLike, entry: Mapping[str, Any]) -> bool:
    """Whether every file a record entry lists (``files``: kind -> name, ``sha256``: kind -> hex)
    is in ``folder`` with its recorded SHA-256 (an entry that lists no file is not intact)."""
    files, sums = entry.get("files") or {}, entry.get("sha256") or {}
    if not files or set(files) != set(sums):
        return False
    return all(file_sha256(Path(folder) / name) == sums[kind] for kind, name in files.items())


def name_seed(base: int, name: str) -> int:
    """A reproducible 63-bit seed from an int and a name."""
    return (int(base) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)
