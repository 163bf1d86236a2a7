"""Exceptions raised by accentuate.

Every error a user can cause derives from :class:`AccentuateError` and from the
usual built-in type (``ValueError``, ``KeyError``, ...), so ``except ValueError``
keeps working. Messages are one line: what was expected, what was received, and
what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AccentuateError",
    "CheckpointError",
    "ClassNameError",
    "ImageError",
    "JudgeError",
    "LayerError",
    "ModelError",
    "ModelNameError",
    "OutputError",
    "SpecError",
    "TargetError",
    "UsageError",
]


class AccentuateError(Exception):
    """Base class of accentuate's errors. ``usage`` is True for mistakes in the input."""

    usage: bool = True


class _PlainKeyError(KeyError):
    # KeyError's str() is the repr of its argument (quoted); show the message as written.
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LayerError(AccentuateError, _PlainKeyError):
    """A layer name that does not exist in the model, or that never runs."""


class ClassNameError(AccentuateError, _PlainKeyError):
    """An unknown or ambiguous class name, or a class index out of range."""


class ImageError(AccentuateError, ValueError):
    """An image that cannot be read or used as a seed."""


class SpecError(AccentuateError, ValueError):
    """A model description that cannot work as given (e.g. an input accentuate cannot feed)."""


class CheckpointError(AccentuateError, ValueError):
    """A sparse-autoencoder checkpoint that cannot be read, or that does not fit its layer."""


class ModelError(AccentuateError, RuntimeError):
    """The model failed (raised inside its forward pass, or returned something unusable)."""

    usage = False


class OutputError(AccentuateError, OSError):
    """A folder or file that results cannot be written to (a failure of the run, such as a
    full disk; the command line checks its output folder before starting)."""

    usage = False


class ModelNameError(AccentuateError, ValueError):
    """A model name that :func:`accentuate.load_model` cannot load (unknown, or its package missing)."""


class JudgeError(AccentuateError, ValueError):
    """A judge that cannot judge a result: the model that was accentuated itself (the same module,
    the same weights or the same name)."""


class TargetError(AccentuateError, ValueError):
    """A target that cannot be read (:func:`accentuate.parse_target`) or does not fit the model: a
    channel, position, token, head or unit out of range, a direction of the wrong length."""


class UsageError(AccentuateError, ValueError):
    """A mistake in the command line (exit status 2)."""
