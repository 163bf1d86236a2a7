"""MkDocs hooks: the site reads as the repository does on a code host.

The pages in ``docs/`` link to files outside it (``../benchmarks/CALIBRATION.md``,
``../examples/tour.ipynb``), as they must for a reader of the repository. The site takes those
files in too, under their paths from the repository root (``benchmarks/CALIBRATION.md``; the README
as ``readme.md``), and
every file they link to in turn; each link that leaves ``docs/`` is rewritten to the site's path of
the file it names. A link to a file that does not exist is left as written, so that MkDocs reports it
(and the strict build fails).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
DOCS = "docs"

#: ``[text](target)`` and ``![alt](target)``, the target without a title.
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|/)", re.IGNORECASE)


def _targets(repo_path: str, text: str) -> list[str]:
    """The repository paths of the local files a Markdown file at ``repo_path`` links to."""
    found = []
    for m in LINK.finditer(text):
        target = m.group(2).split("#", 1)[0]
        if target and not _EXTERNAL.match(m.group(2)):
            found.append(posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), target)))
    return found


def outside_files() -> list[str]:
    """The files outside ``docs/`` that the pages link to, and those these link to, as repository paths."""
    todo = [f"{DOCS}/{p.relative_to(ROOT / DOCS).as_posix()}" for p in sorted((ROOT / DOCS).rglob("*.md"))]
    seen: set[str] = set(todo)
    out: list[str] = []
    while todo:
        path = todo.pop()
        if not path.endswith(".md"):
            continue
        for target in _targets(path, (ROOT / path).read_text(encoding="utf-8")):
            if target in seen or target.startswith("..") or not (ROOT / target).is_file():
                continue
            seen.add(target)
            if not target.startswith(f"{DOCS}/"):
                out.append(target)
            todo.append(target)
    return sorted(out)


#: Outside files whose site path is not their repository path: the README would be the site's index
#: page, which ``docs/index.md`` is.
SITE_PATHS = {"README.md": "readme.md"}


def _site_path(repo_path: str) -> str:
    if repo_path in SITE_PATHS:
        return SITE_PATHS[repo_path]
    return repo_path[len(DOCS) + 1:] if repo_path.startswith(f"{DOCS}/") else repo_path


def on_files(files: Files, config: Any) -> Files:
    """Add the outside files (benchmark tables, the notebook) under their repository paths."""
    for path in outside_files():
        if files.get_file_from_path(_site_path(path)) is None:
            files.append(File.generated(config, _site_path(path), abs_src_path=str(ROOT / path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Rewrite the links that leave ``docs/`` (or, in an outside page, lead into it) to site paths."""
    abs_src = Path(page.file.abs_src_path).resolve()
    repo_path = abs_src.relative_to(ROOT).as_posix()
    here = posixpath.dirname(page.file.src_uri)

    def fix(m: re.Match[str]) -> str:
        link = m.group(2)
        if _EXTERNAL.match(link):
            return m.group(0)
        target, hash_, anchor = link.partition("#")
        if not target:
            return m.group(0)
        repo_target = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), target))
        if not (ROOT / repo_target).exists():
            return m.group(0)  # MkDocs reports it
        new = posixpath.relpath(_site_path(repo_target), here or ".")
        return f"{m.group(1)}{new}{hash_}{anchor}{m.group(3)}"

    return LINK.sub(fix, markdown)
