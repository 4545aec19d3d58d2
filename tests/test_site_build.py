"""The documentation site: ``mkdocs build --strict`` passes, and what it generated is right.

Skipped where mkdocs is not installed (``pip install -e ".[docs]"``); the README's test
command installs it, so CI always runs these.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from _site import MKDOCS_MISSING, ROOT, build_site, have_mkdocs

pytestmark = pytest.mark.skipif(not have_mkdocs(), reason=MKDOCS_MISSING)

sys.path.insert(0, str(ROOT / "hooks"))
import labels  # noqa: E402


class _Page(HTMLParser):
    """Ids, links and script/style sources of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (href, class of the enclosing span)
        self.assets: list[str] = []
        self._span: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "span":
            self._span.append(a.get("class") or "")
        if tag == "a" and a.get("href"):
            self.links.append((a["href"], self._span[-1] if self._span else ""))
        if tag == "script" and a.get("src"):
            self.assets.append(a["src"])
        if tag == "link" and a.get("href") and a.get("rel") in ("stylesheet", "preload"):
            self.assets.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "span" and self._span:
            self._span.pop()


def _pages(site: Path) -> dict[Path, _Page]:
    out = {}
    for path in sorted(site.rglob("*.html")):
        parser = _Page()
        parser.feed(path.read_text(encoding="utf-8"))
        out[path] = parser
    return out


@pytest.fixture(scope="module")
def site():
    build = build_site()
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.log}"
    return build.site, _pages(build.site)


def _target(site: Path, page: Path, href: str) -> tuple[Path, str] | None:
    """The file and fragment a relative link points to; None for external or special links."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
        return None
    path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if path.is_dir():
        path = path / "index.html"
    return path, unquote(parts.fragment)


def test_strict_build_passes(site):
    root, pages = site
    assert (root / "index.html").is_file()
    assert len(pages) > 20


def test_every_internal_link_and_anchor_resolves(site):
    root, pages = site
    broken = []
    for page, parsed in pages.items():
        if page == root / "404.html":
            continue  # served for any missing URL at any depth, so its links are absolute
        for href, _ in parsed.links:
            target = _target(root, page, href)
            if target is None:
                continue
            path, fragment = target
            if not path.exists():
                broken.append(f"{page.relative_to(root)}: {href} (no such file)")
            elif fragment and path.suffix == ".html" and fragment not in pages[path].ids:
                broken.append(f"{page.relative_to(root)}: {href} (no id {fragment!r})")
    assert not broken, "\n".join(broken[:40])


def test_no_page_loads_anything_from_the_network(site):
    root, pages = site
    remote = [
        f"{page.relative_to(root)}: {src}"
        for page, parsed in pages.items()
        for src in parsed.assets
        if urlsplit(src).scheme or src.startswith("//")
    ]
    assert not remote, "\n".join(remote)
    mathjax = root / "assets" / "mathjax"
    assert (mathjax / "tex-chtml.js").stat().st_size > 500_000  # the real bundle, not a stub
    assert any((mathjax / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    lstm = pages[root / "lstm" / "index.html"].assets
    assert "../assets/mathjax/tex-chtml.js" in lstm


def test_each_equation_links_to_lines_that_cite_it(site):
    """Every link under a numbered equation lands on a source line whose comment cites it."""
    root, pages = site
    index = labels.build_index()
    checked = set()
    for label, definition in index.defined.items():
        page = root / definition.page.removesuffix(".md") / "index.html"
        assert labels.anchor(label) in pages[page].ids, f"no anchor for {label} in {page}"
    for page, parsed in pages.items():
        if page.parent.name not in {"lstm", "gru", "layers", "optim"}:
            continue
        for href, span in parsed.links:
            if span != "eq-where":
                continue
            path, fragment = _target(root, page, href)
            source = path.parent.relative_to(root / "source").as_posix()  # numlstm/kernels.py
            line = int(fragment.removeprefix("L-"))
            text = (ROOT / source).read_text(encoding="utf-8").splitlines()[line - 1]
            cited = {lab for lab, _ in labels.labels_in(text, labels.families_of(index.defined))}
            if not cited:  # a multi-line docstring: the citation is on this line of it
                cited = {c.label for c in index.cited if c.path == source and c.line == line}
            checked.add((source, line))
            assert cited, f"{page.relative_to(root)} links to {source}:{line}: {text!r}"
    assert len(checked) >= len({(c.path, c.line) for c in index.cited}) // 2


def test_api_reference_links_back_to_equations(site):
    root, _ = site
    html = (root / "api" / "layers" / "index.html").read_text(encoding="utf-8")
    heading = html.index('id="numlstm.lstm_forward"')
    backlinks = re.search(r'<p class="eq-backlinks">(.*?)</p>', html[heading:]).group(1)
    # its docstring cites the masked update M1-M2 (``lengths=``, rnn.md, first in reading order)
    # and L1-L6
    assert re.findall(r">(\w+)</a>", backlinks) == ["M1", "M2", "L1", "L2", "L3", "L4", "L5", "L6"]
    assert 'href="../../lstm/#eq-L1"' in backlinks
    assert 'href="../../rnn/#eq-M1"' in backlinks
    html = (root / "api" / "optim" / "index.html").read_text(encoding="utf-8")
    heading = html.index('id="numlstm.numeric_gradient"')
    assert '<a href="../../optim/#eq-C1">C1</a>' in html[heading : heading + 3000]


def test_map_lists_every_file_and_every_equation(site):
    root, pages = site
    html = (root / "map" / "index.html").read_text(encoding="utf-8")
    assert "<!-- generated" not in html
    for path in labels.package_files():
        rel = path.relative_to(ROOT).as_posix()
        assert f"source/{rel}/" in html, f"{rel} missing from the map"
    for label in labels.build_index().defined:
        assert f'#{labels.anchor(label)}"' in html, f"{label} missing from the map"
    for title in ("The engine, to read", "Speed machinery", "Input and output"):
        assert title in html


def test_a_label_mismatch_fails_the_strict_build(tmp_path):
    """The hook's check, end to end: a docs folder that defines only L1 (and an unknown Z1),
    built with the real hook and the real package, must fail under --strict."""
    import subprocess

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Page\n\n**(L1)** one\n\n**(Z1)** unused\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"site_name: t\ndocs_dir: {docs}\nsite_dir: {tmp_path / 'site'}\n"
        f"hooks: [{ROOT / 'hooks' / 'site.py'}]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log
    assert "equation label L3 is cited in the code (" in log
    assert "equation label Z1 (docs/index.md:5) is cited nowhere" in log
    assert "Aborted with" in log and "strict mode" in log
