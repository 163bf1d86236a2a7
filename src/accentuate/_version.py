"""The installed package's version, in a leaf module so any module can read it without importing the package."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("accentuate")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
