"""Where :meth:`Result.save <accentuate.Result.save>` and :meth:`Result.load <accentuate.Result.load>` find their writer.

The value type must not depend on the writer (:mod:`accentuate.runs.saved` imports
:class:`~accentuate.Result` to build one from disk), so the dependency is inverted: the
writer registers its two functions here when it is imported, and ``Result.save`` /
``Result.load`` call what is registered. ``accentuate/__init__.py`` imports
:mod:`accentuate.runs.saved`, and every import of a submodule runs the package's
``__init__`` first, so the functions are registered whenever a :class:`Result` exists.
This module imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["load", "register", "save"]

_registered: dict[str, Callable[..., Any]] = {}


def register(save: Callable[..., Any], load: Callable[..., Any]) -> None:
    """Set the functions behind ``Result.save(result, directory, names=...)`` and ``Result.load(path, seeds=...)``."""
    _registered["save"], _registered["load"] = save, load


def _get(name: str) -> Callable[..., Any]:
    try:
        return _registered[name]
    except KeyError:
        raise RuntimeError(f"Result.{name} has no writer registered; import accentuate.runs.saved "
                           "(importing accentuate does)") from None


def save(*args: Any, **kwargs: Any) -> Any:
    """Call the registered saver (:func:`accentuate.runs.saved.save_result`)."""
    return _get("save")(*args, **kwargs)


def load(*args: Any, **kwargs: Any) -> Any:
    """Call the registered loader (:func:`accentuate.runs.saved.load_result`)."""
    return _get("load")(*args, **kwargs)
