"""Equation labels: where docs/*.md defines them and where the code cites them.

Kept free of MkDocs so that a pytest test can run the same check in a second.

Definition (docs): a line that starts with the bold label in parentheses, ``**(L3)** ...``
-- the convention docs/*.md already followed. A compound such as ``**(dS3·dS2)**`` is one
label.

Citation (code): a label written in a comment or a string (docstrings included) of a .py file
under numlstm/: ``# (L3)``, ``# L2 + L3: input gate``, ``(G2, dG2, G2c, G4c)``. A range
``L3-L6`` / ``L3–L6`` / ``L1..L6`` / ``dL6-dL1`` cites every label between its ends. Only
words of a family the docs define count (an upper-case letter, optionally after ``d``), so
"H200" or "F401" in a comment is not a citation, while a typo such as "L7" is.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "numlstm"

_ONE = r"d?[A-Z][0-9]{1,2}[a-z]?"
LABEL = rf"{_ONE}(?:·{_ONE})*"
DEFINITION = re.compile(rf"^\s*\*\*\(({LABEL})\)\*\*")
_SEP = r"\s*(?:-|–|—|\.\.|…)\s*"
_CITATION = re.compile(rf"(?<![\w.·])({LABEL})(?:{_SEP}({_ONE}))?(?![\w·])")
_PARTS = re.compile(r"^(d?[A-Z])([0-9]+)([a-z]?)$")
_NOQA = re.compile(r"noqa\b.*", re.IGNORECASE)


@dataclass(frozen=True)
class Definition:
    label: str
    page: str  # path relative to docs/, e.g. "lstm.md"
    line: int  # 1-based


@dataclass(frozen=True)
class Citation:
    label: str
    path: str  # relative to the repository root, e.g. "numlstm/kernels.py"
    line: int  # 1-based
    # In the module's docstring: an overview ("Equations L1-L6 ... are derived in ..."), not
    # the line that implements the equation.
    overview: bool = False


def anchor(label: str) -> str:
    """The HTML id of a label's definition: ``eq-L3``, ``eq-dS3-dS2``."""
    return "eq-" + label.replace("·", "-")


def prose_lines(lines: list[str]):
    """(index, line) of the lines outside fenced code blocks (``` or ~~~)."""
    fence = None
    for n, text in enumerate(lines):
        stripped = text.lstrip()
        if stripped.startswith(("```", "~~~")):
            mark = stripped[:3]
            fence = None if fence == mark else fence or mark
        elif fence is None:
            yield n, text


def definitions(docs: Path = DOCS) -> tuple[dict[str, Definition], list[str]]:
    """Every ``**(LABEL)**`` line of docs/**/*.md; and the errors (a label defined twice)."""
    found: dict[str, Definition] = {}
    errors = []
    for path in sorted(docs.rglob("*.md")):
        page = path.relative_to(docs).as_posix()
        for n, text in prose_lines(path.read_text(encoding="utf-8").splitlines()):
            match = DEFINITION.match(text)
            if not match:
                continue
            number = n + 1
            label = match.group(1)
            if label in found:
                first = found[label]
                errors.append(
                    f"equation label {label} defined twice: docs/{first.page}:{first.line} "
                    f"and docs/{page}:{number}"
                )
                continue
            found[label] = Definition(label, page, number)
    return found, errors


def _expand(first: str, last: str) -> list[str] | None:
    """``L3``, ``L6`` -> L3, L4, L5, L6 (either direction); None if not a range of one family."""
    a, b = _PARTS.match(first), _PARTS.match(last)
    if not (a and b) or a.group(1) != b.group(1) or a.group(3) or b.group(3):
        return None
    lo, hi = sorted((int(a.group(2)), int(b.group(2))))
    return [f"{a.group(1)}{n}" for n in range(lo, hi + 1)]


def labels_in(text: str, families: set[str]) -> list[tuple[str, int]]:
    """(label, offset) for every citation in ``text`` whose family the docs define."""
    out = []
    for match in _CITATION.finditer(text):
        first, last = match.group(1), match.group(2)
        labels = [first]
        if last:
            labels = _expand(first, last) or [first, last]
        for label in labels:
            family = _PARTS.match(label.split("·")[0]).group(1)
            if family in families:
                out.append((label, match.start()))
    return out


def _comments_and_strings(source: str):
    """(text, first line, is the module docstring) of every comment and string literal."""
    code_seen = False
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield _NOQA.sub("", tok.string), tok.start[0], False
        elif tok.type == tokenize.STRING:
            yield tok.string, tok.start[0], not code_seen
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENCODING):
            code_seen = True


def package_files(package: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def citations(families: set[str], package: Path = PACKAGE) -> list[Citation]:
    """Every citation in the .py files under ``package``, in file and line order."""
    found = []
    for path in package_files(package):
        rel = path.relative_to(package.parent).as_posix()
        for text, line, overview in _comments_and_strings(path.read_text(encoding="utf-8")):
            for label, offset in labels_in(text, families):
                at = line + text.count("\n", 0, offset)
                found.append(Citation(label, rel, at, overview))
    return sorted(set(found), key=lambda c: (c.path, c.line, c.label))


def families_of(labels) -> set[str]:
    return {_PARTS.match(label.split("·")[0]).group(1) for label in labels}


@dataclass
class Index:
    """Definitions, citations and what is wrong between them."""

    defined: dict[str, Definition]
    cited: list[Citation]
    errors: list[str]

    def by_label(self) -> dict[str, list[Citation]]:
        out: dict[str, list[Citation]] = defaultdict(list)
        for c in self.cited:
            out[c.label].append(c)
        return out

    def by_file(self) -> dict[str, list[Citation]]:
        out: dict[str, list[Citation]] = defaultdict(list)
        for c in self.cited:
            out[c.path].append(c)
        return out


def build_index(docs: Path = DOCS, package: Path = PACKAGE) -> Index:
    """Read both sides and list every mismatch: the check the site build and the test share."""
    defined, errors = definitions(docs)
    cited = citations(families_of(defined), package)
    by_label = defaultdict(list)
    for c in cited:
        by_label[c.label].append(c)
    for label, places in sorted(by_label.items()):
        if label not in defined:
            where = ", ".join(f"{c.path}:{c.line}" for c in places)
            errors.append(
                f"equation label {label} is cited in the code ({where}) but defined in no "
                f"docs page (a line starting with **({label})**)"
            )
    for label, d in sorted(defined.items()):
        if label not in by_label:
            errors.append(
                f"equation label {label} (docs/{d.page}:{d.line}) is cited nowhere under "
                f"{package.name}/: cite it in a comment at the line that implements it"
            )
    return Index(defined, cited, errors)
