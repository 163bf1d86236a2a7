"""Every link of README.md and docs/*.md resolves: files and anchors (issue 30).

A link (``[text](target)`` or ``![alt](target)``, outside code) to a file of the repository must
name a file that exists, relative to the Markdown file it is in; an anchor (``page.md#section`` or
``#section``) must name a heading of that Markdown file, by the code host's rule for heading
anchors (lower case, punctuation other than ``-`` and ``_`` dropped, each space a ``-``, a repeated
heading numbered ``-1``, ``-2``...), the rule the documentation site uses too (``mkdocs.yml``).
Links to the web are not followed (no network at test time). And every page of ``docs/`` can be
reached from the README by following links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```+|~~~+)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of the lines outside fenced code blocks."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark):].strip():
                fence = None
            continue
        if fence is None:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """The code host's anchor of a heading's text (before numbering a repeated one)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown text's headings (and of explicit ``id=``/``name=`` attributes)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in _prose_lines(text):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            k = counts.get(base, 0)
            counts[base] = k + 1
            found.add(base if k == 0 else f"{base}-{k}")
        found.update(re.findall(r"<[^>]+\b(?:id|name)=\"([^\"]+)\"", line))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """``(line, target)`` of every link outside code."""
    out = []
    for n, line in _prose_lines(text):
        for m in LINK.finditer(CODE_SPAN.sub("", line)):
            out.append((n, m.group(1)))
    return out


def broken(path: Path, root: Path = ROOT) -> list[str]:
    """The links of the Markdown file ``path`` that do not resolve, as ``file:line: target (why)``."""
    text = path.read_text(encoding="utf-8")
    problems = []
    for n, target in links(text):
        if EXTERNAL.match(target):
            continue
        where = f"{path.relative_to(root)}:{n}: {target}"
        file_part, _, anchor = target.partition("#")
        if file_part.startswith("/"):
            problems.append(f"{where} (an absolute path: write it relative to {path.name})")
            continue
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where} (no such file)")
            continue
        if root not in dest.parents and dest != root:
            problems.append(f"{where} (outside the repository)")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{where} (no heading with the anchor #{anchor} in {dest.name})")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_link_resolves(path: Path) -> None:
    problems = broken(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    seen, todo = {ROOT / "README.md"}, [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        for _, target in links(page.read_text(encoding="utf-8")):
            file_part = target.partition("#")[0]
            if EXTERNAL.match(target) or not file_part.endswith(".md"):
                continue
            dest = (page.parent / file_part).resolve()
            if dest.exists() and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    unreachable = sorted(str(p.relative_to(ROOT)) for p in DOCS if p not in seen)
    assert not unreachable, f"pages no link from README.md leads to: {unreachable}"


def test_the_readme_is_a_landing_page() -> None:
    """Under 170 lines, with the figure of the embedded model in its first 40."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 170, f"README.md has {len(lines)} lines"
    figure = [n for n, line in enumerate(lines, 1) if line.startswith("![") and "figures/hero.png" in line]
    assert figure and figure[0] <= 40, "the hero figure is not in the README's first 40 lines"
    assert (ROOT / "docs" / "figures" / "hero.png").is_file()


# The checker itself, on a small tree: it finds what is broken and passes what is not.

def test_slug_follows_the_code_hosts_rule() -> None:
    assert slug("6. The analyses on a vision transformer (DINOv2 ViT-S/14)") == \
        "6-the-analyses-on-a-vision-transformer-dinov2-vit-s14"
    assert slug("A quick first look: `--preview`") == "a-quick-first-look---preview"
    assert slug("`accentuate run IMAGE... --target T...`") == "accentuate-run-image---target-t"
    assert slug("See [the run](run.md) here") == "see-the-run-here"
    assert slug("Défauts_du modèle") == "défauts_du-modèle"


def test_the_checker_reports_missing_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## Same\n\n## Same\n\n```bash\n# not a heading\n```\n")
    a = tmp_path / "a.md"
    a.write_text(
        "# Top\n\n[ok](docs/b.md) [ok](docs/b.md#same-1) ![ok](img.png) [ok](#top) [web](https://x.org/#y)\n"
        "[no file](docs/c.md) [no anchor](docs/b.md#not-a-heading) [no anchor](#nowhere)\n"
        "`[in code](missing.md)`\n\n```md\n[in a fence](missing.md)\n```\n"
    )
    got = broken(a, root=tmp_path)
    assert got == [
        "a.md:4: docs/c.md (no such file)",
        "a.md:4: docs/b.md#not-a-heading (no heading with the anchor #not-a-heading in b.md)",
        "a.md:4: #nowhere (no heading with the anchor #nowhere in a.md)",
    ]
