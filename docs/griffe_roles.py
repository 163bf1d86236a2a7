"""A griffe extension for the API reference: Sphinx roles become links, doctests become code.

The docstrings name other objects as Sphinx does (``:func:`pair_figure```, ``:class:`~accentuate.Result```,
``:mod:`accentuate.runs```). mkdocstrings reads docstrings as Markdown, where a role is plain text;
this extension rewrites each role, once the package is loaded, into a cross-reference to the object
it names, resolved from the docstring's own scope as Python would (its class, its module, the
package), shown as code. A name that resolves to nothing documented (``torch.Tensor``, a private
helper) stays code without a link, as the role would in Sphinx.

A ``>>>`` transcript outside a code block (a module's usage example) is put in a ``pycon`` block, so
that Markdown does not read ``x["after"]`` as a link.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj):`(~?)([\w.]+)(\(\))?`")


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` seen from ``obj``, or None."""
    scope: Any = obj
    while scope is not None:
        try:
            return scope.resolve(name)
        except Exception:  # noqa: BLE001 (griffe raises several kinds for an unknown name)
            pass
        try:
            member = scope.get_member(name) if hasattr(scope, "get_member") else None
        except Exception:  # noqa: BLE001
            member = None
        if member is not None:
            return member.path
        scope = scope.parent
    try:
        root = obj.package
        return root.get_member(name.removeprefix(f"{root.name}.")).path if name.startswith(root.name) else None
    except Exception:  # noqa: BLE001
        return None


def convert(obj: griffe.Object, text: str) -> str:
    """``text`` with its roles as cross-references (or code where they resolve to nothing)."""

    def one(m: re.Match[str]) -> str:
        short, name, call = m.group(1), m.group(2), m.group(3) or ""
        shown = (name.rsplit(".", 1)[-1] if short else name) + call
        path = _resolve(obj, name)
        if path is None or any(part.startswith("_") for part in path.split(".")):
            return f"`{shown}`"  # nothing documented there (private names are not in the reference)
        return f"[`{shown}`][{path}]"

    return ROLE.sub(one, text)


def fence_doctests(text: str) -> str:
    """``text`` with each ``>>>`` transcript that is not in a code block put in a ``pycon`` block."""
    out: list[str] = []
    lines = text.split("\n")
    i, fenced = 0, False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
        if fenced or not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring of a loaded package (see the module's docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = fence_doctests(convert(obj, obj.docstring.value))
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)  # type: ignore[arg-type]

        walk(pkg)
