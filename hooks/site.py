"""MkDocs hook (mkdocs.yml ``hooks:``): equations <-> code links, the package map, MathJax.

* on_config: reads the equation labels defined in docs/*.md and cited in numlstm/ (labels.py);
  any mismatch is logged as a warning, which fails ``mkdocs build --strict``.
* on_files: adds a page per source file (source/numlstm/....py.md) and MathJax's files from
  the django-static-mathjax package, so the site renders math with no network.
* on_page_markdown: after each ``**(L3)**`` definition, the code lines that cite it; in
  map.md, the generated tables.
* on_page_content: in the API reference, after each function's heading, the equations its
  source cites.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import re
from pathlib import Path

import codemap
import labels
from mkdocs.structure.files import File, InclusionLevel
from mkdocs.utils import get_relative_url

log = logging.getLogger("mkdocs.plugins.numlstm")

MAP_MARKERS = {
    "<!-- generated: package files -->": codemap.files_table,
    "<!-- generated: equations -->": codemap.equations_table,
}
MATHJAX_FILES = ("tex-chtml.js", "input", "output/chtml", "a11y", "adaptors", "sre", "ui")

_index: labels.Index | None = None
_outside: dict[tuple[str, str], str] = {}  # (page, "../x/y.md") -> "x/y.md"


def on_config(config):
    global _index
    _index = labels.build_index(Path(config["docs_dir"]), labels.PACKAGE)
    for error in _index.errors:
        log.warning(error)
    return config


def _mathjax_dir() -> Path | None:
    spec = importlib.util.find_spec("mathjax")  # the django-static-mathjax package
    if spec is None or not spec.submodule_search_locations:
        return None
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-chtml.js").is_file() else None


def on_files(files, config):
    global _outside
    _outside = codemap.outside_links(Path(config["docs_dir"]))
    shown = {path.relative_to(labels.ROOT).as_posix() for path in labels.package_files()}
    for rel in sorted(shown | set(_outside.values())):
        path = labels.ROOT / rel
        files.append(
            File.generated(
                config,
                codemap.source_page(rel),
                content=codemap.source_markdown(_index, path),
                inclusion=InclusionLevel.NOT_IN_NAV,
            )
        )
    es5 = _mathjax_dir()
    if es5 is None:
        log.warning(
            "MathJax not found: install the docs extra (pip install -e '.[docs]'), which "
            "brings django-static-mathjax; without it the equations stay raw TeX"
        )
        return files
    for name in MATHJAX_FILES:
        top = es5 / name
        for path in [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()):
            uri = "assets/mathjax/" + path.relative_to(es5).as_posix()
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    src = page.file.src_uri
    for marker, make in MAP_MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make(_index, src))
    markdown = codemap.OUTSIDE_LINK.sub(lambda m: _outside_link(m, src), markdown)
    return _annotate_definitions(markdown, src)


def _outside_link(match, page: str) -> str:
    rel = _outside.get((page, match.group(1)))
    if rel is None:
        return match.group(0)  # not a repository file: MkDocs reports the broken link
    return f"]({codemap.rel(page, codemap.source_page(rel))}{match.group(2) or ''})"


def _annotate_definitions(markdown: str, page: str) -> str:
    """``**(L3)** text`` -> the label as a permalink with its id, and after the paragraph a
    line "In the code: kernels.py 64 65 · lstm.py 96" linking to those lines."""
    lines = markdown.split("\n")
    for n, text in list(labels.prose_lines(lines)):
        match = labels.DEFINITION.match(text)
        if not match or match.group(1) not in _index.defined:
            continue
        label = match.group(1)
        if _index.defined[label].page != page:
            continue
        tag = f"**({label})**"
        link = f"[{tag}](#{labels.anchor(label)}){{#{labels.anchor(label)} .eq-label}}"
        lines[n] = text.replace(tag, link, 1)
        end = n
        while (
            end + 1 < len(lines)
            and lines[end + 1].strip()
            and not lines[end + 1].lstrip().startswith("$$")
        ):
            end += 1
        where = codemap.where_line(_index, label, page)
        lines[end] += f'<br><span class="eq-where">In the code: {where}</span>'
    return "\n".join(lines)


_HEADING = re.compile(r'(<h(\d) id="(numlstm\.[\w.]+)" class="doc doc-heading">.*?</h\2>)', re.S)


def on_page_content(html, page, config, files):
    if not page.file.src_uri.startswith("api/"):
        return html
    pages = {f.src_uri: f for f in files}

    def backlinks(match: re.Match) -> str:
        found = _cited_in(match.group(3))
        if not found:
            return match.group(1)
        links = []
        for label in found:
            target = pages[_index.defined[label].page].url
            url = get_relative_url(target, page.url) + "#" + labels.anchor(label)
            links.append(f'<a href="{url}">{label}</a>')
        return (
            match.group(1)
            + '<p class="eq-backlinks">Equations cited in its source: '
            + ", ".join(links)
            + "</p>"
        )

    return _HEADING.sub(backlinks, html)


def _resolve(dotted: str):
    """``numlstm.LanguageModel.loss_and_grads`` -> that object (None if it is not found)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
            if obj is None:
                return None
        return obj
    return None


def _cited_in(dotted: str) -> list[str]:
    """Labels cited inside the source lines of the object named ``dotted``, in docs order."""
    obj = _resolve(dotted)
    obj = getattr(obj, "py_func", obj)  # a Numba dispatcher: its Python function
    obj = getattr(obj, "fget", obj)  # a property: its getter
    try:
        path = Path(inspect.getsourcefile(obj)).resolve()
        source, start = inspect.getsourcelines(obj)
    except (TypeError, OSError):
        return []
    try:
        rel = path.relative_to(labels.ROOT).as_posix()
    except ValueError:
        return []
    end = start + len(source)
    found = {c.label for c in _index.by_file().get(rel, []) if start <= c.line < end}
    return [label for label in codemap.label_order(_index) if label in found]
