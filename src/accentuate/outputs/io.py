"""File writing shared by every output: atomic writes and output folders.

A file is written under a temporary name in its folder and renamed into place, so a
reader (or a resumed run) never sees half of it, even after a crash or a kill.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError

__all__ = ["atomic_write", "output_folder"]


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
