"""``accentuate classes``: search the model's class names."""

from __future__ import annotations

import argparse
import sys
from textwrap import fill

from .common import add_model_options, load_model_from_args

EXAMPLE = """\
examples:
  accentuate classes retriever
  accentuate classes "tiger cat"
  accentuate classes            (all of them)

Use the index or the name as a target: accentuate run cat.jpg --target 207
No match is not an error: nothing is printed on stdout, a message with the closest
names goes to stderr, and the exit status is 0."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classes", help="search class names",
        description=fill(
            "Search the model's class names (all synonyms, case-insensitive) and print "
            "their indices. Without QUERY, list all classes.",
            88,
        ),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", nargs="*", metavar="QUERY", help="text to look for in the class names")
    add_model_options(p)
    p.set_defaults(func=run)


def _labels(args: argparse.Namespace):
    from ..labels import imagenet_labels
    from .common import DEFAULT_MODEL

    if args.model == DEFAULT_MODEL:  # the embedded model's labels; no need to load its weights
        return imagenet_labels()
    from ..spec import spec_of

    return spec_of(load_model_from_args(args)).labels


def run(args: argparse.Namespace) -> int:
    from ..labels import search_classes
    from .common import UsageError

    labels = _labels(args)
    if labels is None:
        raise UsageError(f"model {args.model!r} has no class names; use class indices as targets")
    query = " ".join(args.query)
    hits = search_classes(query, labels)
    if not hits:
        import difflib

        from ..labels import synonyms_for

        every = [n for syn in synonyms_for(labels) for n in syn]
        close = difflib.get_close_matches(query.lower(), [n.lower() for n in every], n=5, cutoff=0.6)
        hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
        # A search that finds nothing is an answer, not a failure (1) or a usage mistake (2):
        # exit 0 with nothing on stdout, and say so on stderr with the closest names.
        print(f"no class name contains {query!r}{hint}", file=sys.stderr)
        return 0
    for i, names in hits:
        print(f"{i:>5}  {names}")
    return 0
