"""Markdown the site generates from the source tree: the package map and the source pages.

Everything here is computed from the files present when the site is built, so it follows the
package whichever layout it has (flat, or with numlstm/fast/ and numlstm/io/).
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections import defaultdict
from pathlib import Path

from labels import PACKAGE, ROOT, Citation, Index, anchor, package_files
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer, get_lexer_for_filename

SOURCE_DIR = "source"  # generated pages: docs-relative source/numlstm/lstm.py.md
# A relative link from a docs page to a repository file outside docs/ ("../benchmarks/x.md"):
# the site shows that file on a generated page instead (GitHub follows the link as it is).
OUTSIDE_LINK = re.compile(r"\]\((\.\./[^)#\s]+)(#[^)\s]*)?\)")

# Where a module belongs when the package is still flat (no fast/ or io/ folder yet): the
# layout being introduced. Once the folders exist, a file's folder decides.
_FAST = {"workspace", "blas", "fastmath", "timeloop", "fast_eval", "sparse", "parallel", "team"}
_IO = {"ptb", "text", "checkpoint", "saving"}
GROUPS = {
    "engine": (
        "The engine, to read",
        "The equations, written so that you can follow them: the layers, the model, the "
        "optimisers, the plain-NumPy reference, and the programs that train and generate.",
    ),
    "fast": (
        "Speed machinery",
        "Not needed to understand the math: preallocated buffers, BLAS calls, fast `exp`, "
        "compiled loops over time, batch-1 evaluation, sparse gradients, threads.",
    ),
    "io": (
        "Input and output",
        "Reading corpora (PTB, plain text) and writing checkpoints and saved models.",
    ),
}


def source_page(path: str) -> str:
    """docs-relative page of a source file: ``numlstm/lstm.py`` -> ``source/numlstm/lstm.py.md``."""
    return f"{SOURCE_DIR}/{path}.md"


def line_anchor(line: int) -> str:
    return f"L-{line}"


def rel(from_page: str, to_page: str) -> str:
    """Relative link between two docs-relative .md paths (MkDocs turns it into a URL)."""
    return posixpath.relpath(to_page, posixpath.dirname(from_page) or ".")


def group_of(path: str) -> str:
    """``numlstm/fast/team.py`` -> fast; ``numlstm/team.py`` -> fast (by name, flat layout)."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] in ("fast", "io"):
        return parts[1]
    stem = parts[-1].removesuffix(".py")
    return "fast" if stem in _FAST else "io" if stem in _IO else "engine"


def summary(path: Path) -> str:
    """The summary line of a module's docstring (read with ast: nothing is imported)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n")[0]  # the summary line (PEP 257)


def _short(path: str) -> str:
    return path.removeprefix("numlstm/")


def where_line(index: Index, label: str, page: str) -> str:
    """Markdown: the code lines that cite ``label``, grouped by file, each a link."""
    cites = index.by_label().get(label, [])
    # Module docstrings only mention equations; list them only if nothing else cites it.
    cites = [c for c in cites if not c.overview] or cites
    by_file: dict[str, list[Citation]] = defaultdict(list)
    for c in cites:
        by_file[c.path].append(c)
    parts = []
    for path, cites in by_file.items():
        target = rel(page, source_page(path))
        lines = " ".join(f"[{c.line}]({target}#{line_anchor(c.line)})" for c in cites)
        parts.append(f"`{_short(path)}` {lines}")
    return " · ".join(parts)


def label_links(index: Index, labels, page: str) -> str:
    """Markdown links from ``page`` to each label's definition."""
    out = []
    for label in labels:
        d = index.defined.get(label)
        # An undefined label is already a build error (labels.build_index); shown unlinked.
        out.append(f"[{label}]({rel(page, d.page)}#{anchor(label)})" if d else label)
    return ", ".join(out)


# Derivation pages in reading order (the site's nav); labels on other pages come after.
PAGE_ORDER = ["rnn.md", "lstm.md", "lstmp.md", "gru.md", "layers.md", "optim.md"]


def label_order(index: Index) -> list[str]:
    """Labels in reading order: by page as in PAGE_ORDER, then by line."""

    def key(label):
        d = index.defined[label]
        rank = PAGE_ORDER.index(d.page) if d.page in PAGE_ORDER else len(PAGE_ORDER)
        return rank, d.page, d.line

    return sorted(index.defined, key=key)


def _rank(index: Index):
    """Sort key: reading order for defined labels, undefined ones (errors) last."""
    order = {label: n for n, label in enumerate(label_order(index))}
    return lambda label: (order.get(label, len(order)), label)


def files_table(index: Index, page: str) -> str:
    """The map's file tables, one per group."""
    order = _rank(index)
    rows: dict[str, list[str]] = defaultdict(list)
    by_file = index.by_file()
    for path in package_files():
        rel_path = path.relative_to(ROOT).as_posix()
        cited = sorted({c.label for c in by_file.get(rel_path, [])}, key=order)
        link = f"[`{_short(rel_path)}`]({rel(page, source_page(rel_path))})"
        eqs = label_links(index, cited, page) if cited else ""
        rows[group_of(rel_path)].append(f"| {link} | {summary(path)} | {eqs} |")
    out = []
    for key, (title, blurb) in GROUPS.items():
        if (PACKAGE / key).is_dir():
            title += f" (`numlstm/{key}/`)"
        if rows[key]:
            out += [f"### {title}", "", blurb, "", '<div class="numlstm-map" markdown>', ""]
            out += ["| file | what it is | equations cited |", "| --- | --- | --- |"]
            out += [*rows[key], "", "</div>", ""]
    return "\n".join(out)


def equations_table(index: Index, page: str) -> str:
    """The map's equation table: every label, its page, and every line that cites it."""
    out = ["| equation | derived in | cited at (file: lines) |", "| --- | --- | --- |"]
    for label in label_order(index):
        d = index.defined[label]
        title = f"[{label}]({rel(page, d.page)}#{anchor(label)})"
        out.append(f"| {title} | `{d.page}` | {where_line(index, label, page)} |")
    return "\n".join(out) + "\n"


def source_markdown(index: Index, path: Path) -> str:
    """A repository file as a page: for Python, its first docstring sentence and the equations
    it cites; then the file, highlighted, with an anchor on every line."""
    rel_path = path.relative_to(ROOT).as_posix()
    page = source_page(rel_path)
    cites = index.by_file().get(rel_path, [])
    by_label: dict[str, list[int]] = defaultdict(list)
    for c in cites:
        by_label[c.label].append(c.line)
    python = path.suffix == ".py"
    # Out of the search index: raw code would crowd the pages that explain it out of results.
    lines = ["---", "search:", "  exclude: true", "---", ""]
    lines += [f"# `{rel_path}`", "", summary(path) if python else "", ""]
    if by_label:
        lines.append("Equations cited in this file (highlighted lines):")
        lines.append("")
        for label in sorted(by_label, key=_rank(index)):
            at = ", ".join(f"[{n}](#{line_anchor(n)})" for n in by_label[label])
            lines.append(f"- {label_links(index, [label], page)}: line {at}")
        lines.append("")
    # Pygments HTML, not a fenced block: MkDocs sees the raw HTML's line ids, so a link to a
    # line that does not exist fails the strict build.
    formatter = HtmlFormatter(
        linenos="inline", lineanchors="L", wrapcode=True, hl_lines=sorted({c.line for c in cites})
    )
    text = path.read_text(encoding="utf-8")
    lexer = PythonLexer() if python else get_lexer_for_filename(path.name, text)
    code = highlight(text, lexer, formatter)
    lines += ['<div class="numlstm-source">', code.strip(), "</div>", ""]
    return "\n".join(lines)


def outside_links(docs: Path) -> dict[tuple[str, str], str]:
    """(page, link) -> repository path, for each relative link that leaves docs/ and names an
    existing file of the repository."""
    found = {}
    for md in sorted(docs.rglob("*.md")):
        page = md.relative_to(docs).as_posix()
        for match in OUTSIDE_LINK.finditer(md.read_text(encoding="utf-8")):
            target = (md.parent / match.group(1)).resolve()
            if target.is_file() and ROOT in target.parents and docs not in target.parents:
                found[(page, match.group(1))] = target.relative_to(ROOT).as_posix()
    return found
