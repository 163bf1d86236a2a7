"""File writing shared by every output: atomic writes, output folders, and JSON for pages.

A file is written under a temporary name in its folder and renamed into place, so a
reader (or a resumed run) never sees half of it, even after a crash or a kill.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import OutputError

__all__ = ["atomic_write", "output_folder", "script_json"]


def output_folder(directory: str | os.PathLike) -> Path:
    """``directory``, created with its parents.

    Raises:
        OutputError: it cannot be created (a file is in the way, no permission, ...).
    """
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"cannot write to folder {str(out)!r} ({e.strerror or type(e).__name__}); choose another folder"
        ) from None
    return out


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never half-written).

    Raises:
        OutputError: the file cannot be written (the temporary file is removed).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {str(path)!r} ({e.strerror or type(e).__name__}); "
                          "check the folder and the free space") from None


def script_json(obj: Any) -> str:
    """JSON for a ``<script type="application/json">`` block: ``<``, ``>``, ``&`` and the
    line separators escaped, so no string inside can close the block (``</script>``).

    Example:
        >>> script_json({"a": "</script><b>"})
        '{"a": "\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"}'
    """
    text = json.dumps(obj, allow_nan=False, default=str)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return text
