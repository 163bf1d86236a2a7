"""Build the API reference from the docstrings with pdoc: ``python docs/api.py [OUT]``.

Every module of the package is documented (pdoc alone follows ``__all__``, which hides
the submodules), into ``OUT`` (default ``build/api``). Any warning pdoc gives (a broken
cross-reference, a docstring it cannot parse, a module that fails to import) is printed
and makes the exit status 1, so CI keeps the reference clean (``make docs``).
"""

from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path


def modules() -> list[str]:
    """``accentuate`` and all its submodules, except ``__main__`` (importing it runs the CLI)."""
    import accentuate

    found = [m.name for m in pkgutil.walk_packages(accentuate.__path__, "accentuate.")]
    return ["accentuate", *sorted(n for n in found if not n.endswith("__main__"))]


def build(out: str | Path = "build/api") -> list[str]:
    """Write the reference to ``out``; return pdoc's warnings (empty when clean)."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="google", show_source=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules(), output_directory=Path(out))
    return [f"{w.category.__name__}: {w.message}" for w in rec]


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "build/api"
    problems = build(target)
    for p in problems:
        print(f"docs: warning: {p}", file=sys.stderr)
    print(f"API reference: {target}/index.html ({len(modules())} modules)"
          + (f"; {len(problems)} warning(s)" if problems else ""), file=sys.stderr)
    sys.exit(1 if problems else 0)
