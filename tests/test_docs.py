"""The Markdown docs hold no control characters and only balanced math.

A formula once lost its backslashes on the way into ``docs/layers.md``: ``\\text`` became a TAB
followed by ``ext`` and ``\\rVert`` a line break followed by ``Vert``. Both are caught here:
the TAB as a control character (and inside math), the lost ``\\r`` as a ``\\lVert`` without
its ``\\rVert``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # every C0 control but \n, and DEL
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_PAIRS = (
    (r"\left", r"\right"),
    (r"\lVert", r"\rVert"),
    (r"\lvert", r"\rvert"),
    (r"\langle", r"\rangle"),
    (r"\lfloor", r"\rfloor"),
    (r"\lceil", r"\rceil"),
    (r"\begin", r"\end"),
)


def _fenced_lines(text: str) -> set[int]:
    """1-based numbers of the lines inside fenced code blocks (fences excluded)."""
    inside, in_fence = set(), False
    for number, line in enumerate(text.split("\n"), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif in_fence:
            inside.add(number)
    return inside


def control_characters(text: str) -> list[str]:
    """'line L col C: U+XXXX' for every control character but the newline.

    A TAB is allowed only inside fenced code blocks (e.g. the output of ``time``)."""
    out, fenced = [], _fenced_lines(text)
    for m in _CONTROL.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m.group() == "\t" and line in fenced:
            continue
        col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
        out.append(f"line {line} col {col}: U+{ord(m.group()):04X}")
    return out


def _blank_code(text: str) -> str:
    """Text with fenced code blocks and inline code spans replaced by spaces (lines kept)."""
    lines, in_fence = text.split("\n"), False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            lines[i] = ""
        elif in_fence:
            lines[i] = ""
    text = "\n".join(lines)
    # inline code: a run of backticks up to the same run (may not cross a blank line)
    return re.sub(r"(`+)(?:(?!\n\s*\n).)*?\1", lambda m: " " * len(m.group()), text, flags=re.S)


def _math_spans(text: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(line, kind, body) of every $$...$$ and $...$ span, and problems with the delimiters."""
    spans, problems = [], []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":  # an escaped character, e.g. \$
            i += 2
            continue
        if c != "$":
            i += 1
            continue
        line = text.count("\n", 0, i) + 1
        if text.startswith("$$", i):
            end = text.find("$$", i + 2)
            if end < 0:
                problems.append(f"line {line}: '$$' is never closed")
                break
            spans.append((line, "$$", text[i + 2 : end]))
            i = end + 2
            continue
        # inline math may wrap onto the next line of its paragraph, never past a blank line
        j = i + 1
        while j < n and text[j] != "$" and not re.match(r"\n[ \t]*\n", text[j : j + 80]):
            j += 2 if text[j] == "\\" else 1
        if j >= n or text[j] != "$":
            problems.append(f"line {line}: inline '$' math is not closed in its paragraph")
            i += 1
            continue
        spans.append((line, "$", text[i + 1 : j]))
        i = j + 1
    return spans, problems


def _brace_problem(body: str) -> str | None:
    depth = 0
    for k, c in enumerate(body):
        if c == "{" and (k == 0 or body[k - 1] != "\\"):
            depth += 1
        elif c == "}" and (k == 0 or body[k - 1] != "\\"):
            depth -= 1
            if depth < 0:
                return "a '}' closes nothing"
    return f"{depth} '{{' never closed" if depth else None


def math_problems(text: str) -> list[str]:
    """Unbalanced delimiters and braces, and control characters, in the math of ``text``."""
    spans, problems = _math_spans(_blank_code(text))
    for line, kind, body in spans:
        where = f"line {line}: {kind}{body[:60]}{kind}"
        if _CONTROL.search(body):
            problems.append(f"{where}: control character (TAB?) inside math")
        brace = _brace_problem(body)
        if brace:
            problems.append(f"{where}: {brace}")
        for left, right in _PAIRS:
            nl = len(re.findall(re.escape(left) + r"(?![A-Za-z])", body))
            nr = len(re.findall(re.escape(right) + r"(?![A-Za-z])", body))
            if nl != nr:
                problems.append(f"{where}: {nl} {left} but {nr} {right}")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_control_characters(path):
    assert control_characters(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_math_is_balanced(path):
    assert math_problems(path.read_text(encoding="utf-8")) == []


# The checkers themselves, on the line as it was broken and as it is meant to be.
BROKEN = (
    "of $dW_{\text{emb}}$ are nonzero. Since the rows are distinct, "
    "$\\lVert dW_{\text{emb}} \nVert^2$ is the sum of squares.\n"
)
FIXED = (
    "of $dW_{\\text{emb}}$ are nonzero. Since the rows are distinct, "
    "$\\lVert dW_{\\text{emb}} \\rVert^2$ is the sum of squares.\n"
)


def test_checkers_catch_the_original_broken_line():
    assert "\t" in BROKEN
    cols = [k + 1 for k, c in enumerate(BROKEN) if c == "\t"]
    assert control_characters(BROKEN) == [f"line 1 col {c}: U+0009" for c in cols]
    problems = math_problems(BROKEN)
    assert any("control character" in p for p in problems)
    assert any("1 \\lVert but 0 \\rVert" in p for p in problems)
    assert control_characters(FIXED) == [] and math_problems(FIXED) == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("$$ a + b\n", "never closed"),
        ("x $a + b\n\nnext paragraph $c$\n", "not closed in its paragraph"),
        ("$\\left( x$\n", "1 \\left but 0 \\right"),
        ("$\\frac{a}{b$\n", "never closed"),
        ("$a}$\n", "closes nothing"),
        ("$$\n\\lvert x\n$$\n", "1 \\lvert but 0 \\rvert"),
    ],
)
def test_checkers_catch_unbalanced_math(text, fragment):
    assert any(fragment in p for p in math_problems(text)), math_problems(text)


def test_code_and_escaped_dollars_are_not_math():
    text = "costs \\$5; `a $b` and\n```\nx = $y\treal\n```\n$ok$ and $a +\nb$\n"
    assert control_characters(text) == []
    assert math_problems(text) == []
