"""The installed version of accentuate (a leaf: every module that records it reads it here)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("accentuate")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
