"""The ``accentuate`` command line, thin over the library.

``main(argv)`` parses the command line, runs one subcommand and maps what went
wrong to an exit status:

- 0: success;
- 1: a failure (the model raised, a file could not be written, a numerical fault);
- 2: a usage mistake (bad option, missing image, unknown class or layer, ...);
- 130: interrupted with Ctrl-C (what was finished is kept);
- 143: stopped by SIGTERM (``kill``, a job scheduler, a timeout), saved as for Ctrl-C.

Errors print one line, ``accentuate: error: ...``; ``--debug`` adds the traceback.
Library warnings print as ``accentuate: warning: ...``.

Each subcommand lives in its own module with ``register(subparsers)``; the
analysis subcommands come from :mod:`accentuate.cli.analyses` when it is present.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence

from ..errors import AccentuateError
from .common import ArgumentParser, UsageError, add_global_options, model_in_argv, show_model_defaults

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_TERMINATED", "EXIT_USAGE", "UsageError", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM

#: Subcommand modules of this package, in the order ``--help`` lists them.
_COMMANDS = ("demo", "run", "explain", "concepts", "sae", "study", "layers", "classes", "report", "evaluate")

_DESCRIPTION = """\
Feature accentuation: change a photo so a chosen feature of a vision model rises,
and see what in the photo drives it (the picture) and where (the opacity mask)."""

_EPILOG = """\
examples:
  accentuate demo
  accentuate run cat.jpg --target goldfish "tiger cat"
  accentuate explain cat.jpg --top 3
  accentuate concepts photos/ --k 8
  accentuate sae train photos/ --layer blocks.10 --out runs/sae-b10
  accentuate classes retriever
  accentuate layers
  accentuate report accentuate-runs/20250101-120000
  accentuate evaluate accentuate-runs/20250101-120000 --judge mobilenet_v2

`accentuate COMMAND --help` describes each command."""


def build_parser(model: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand registered; ``model``: the ``--model`` whose calibrated
    defaults the settings' help shows (default: the default model's)."""
    from .. import __version__

    parser = ArgumentParser(
        prog="accentuate", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"accentuate {__version__}")
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    if importlib.util.find_spec(f"{__name__}.analyses") is not None:
        importlib.import_module(f"{__name__}.analyses").register(sub)
    for p in sub.choices.values():
        add_global_options(p)
        if model is not None:
            show_model_defaults(p, model)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"accentuate: warning: {message}", file=sys.stderr)


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError) and type(e).__str__ is KeyError.__str__ and e.args:
        return str(e.args[0])
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0] if text else type(e).__name__


def _is_usage(e: BaseException) -> bool:
    if isinstance(e, AccentuateError):
        return bool(e.usage)
    return isinstance(e, (ValueError, KeyError, TypeError))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``accentuate`` command line; return the exit status.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        0 on success, 1 on failure, 2 on a usage mistake, 130 when interrupted,
        143 when stopped by SIGTERM.
    """
    terminated: list[bool] = []
    try:
        with _sigterm_as_interrupt(terminated):
            code = _main(argv)
    except KeyboardInterrupt:  # a signal after the command returned, before the handler came off
        code = EXIT_INTERRUPTED
    return EXIT_TERMINATED if terminated and code == EXIT_INTERRUPTED else code


@contextlib.contextmanager
def _sigterm_as_interrupt(seen: list[bool]) -> Iterator[None]:
    """While a command runs, SIGTERM takes the Ctrl-C path: finished work is saved, the run marked interrupted.

    Installed only from the main thread and where SIGTERM still has its default action
    (a program that calls :func:`main` with its own handler keeps it). ``seen`` gets
    ``True`` once SIGTERM arrived.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if not seen:
            seen.append(True)
            raise KeyboardInterrupt  # once: a second SIGTERM during the saving is ignored

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.filterwarnings("ignore", message=r"interrupted at step")
        if os.environ.get("RANK", "0") not in ("", "0") and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            # torchrun: every rank reads the same inputs; rank 0 alone reports the skipped ones.
            warnings.filterwarnings("ignore", message=r"skipped ")
        try:
            asks_help = "-h" in argv or "--help" in argv
            parser = build_parser(model_in_argv(argv) if asks_help else None)
            args = parser.parse_args(argv)
            debug = bool(getattr(args, "debug", debug))
            args.argv = argv
            if getattr(args, "func", None) is None:
                parser.print_help(sys.stderr)
                return EXIT_USAGE
            return int(args.func(args))
        except SystemExit as e:  # --help, --version
            return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            print("accentuate: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as e:  # noqa: BLE001 (every error becomes one line and an exit status)
            if debug:
                traceback.print_exc()
            usage = _is_usage(e)
            msg = _message(e)
            if not usage and not isinstance(e, (OSError, AccentuateError)):
                msg = f"{type(e).__name__}: {msg}"  # unexpected: name the exception type
            hint = "" if debug or usage else " (rerun with --debug for the traceback)"
            print(f"accentuate: error: {msg}{hint}", file=sys.stderr)
            return EXIT_USAGE if usage else EXIT_FAILURE
