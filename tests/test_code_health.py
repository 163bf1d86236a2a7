"""Rules of the codebase that a test can hold: a long function says why it must be one piece."""

from __future__ import annotations

import ast
from pathlib import Path

import accentuate

SRC = Path(accentuate.__file__).parent
LIMIT = 80


def _long_functions() -> list[str]:
    """``file:line name (N lines)`` for every function whose body, without its docstring, is over
    :data:`LIMIT` lines and has no comment starting ``One piece`` saying why."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text("utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                n -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
            text = "\n".join(lines[node.lineno - 1:node.end_lineno])
            if n > LIMIT and "# One piece" not in text:
                bad.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    return bad


def test_no_long_function_without_a_reason() -> None:
    assert _long_functions() == []


def test_the_rule_sees_a_long_function(tmp_path: Path, monkeypatch) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT + 1))  # over the limit with the def line
    (tmp_path / "m.py").write_text(f'def f():\n    """Doc."""\n{body}\n')
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    assert _long_functions() == [f"m.py:1 f ({LIMIT + 2} lines)"]  # the def line and the body
    (tmp_path / "m.py").write_text(f'def f():\n    """Doc."""\n    # One piece: a test.\n{body}\n')
    assert _long_functions() == []
