"""The built site in a real browser: headless Chromium, served from 127.0.0.1, no network.

Every request that does not go to the local server is blocked and recorded, so the math must
render from the site's own copy of MathJax. Checks: no console errors, equations typeset (no
raw TeX left, no MathJax error), navigation by clicking, search, and the link from an equation
to the code. Screenshots go to build/screenshots/ (git-ignored) to look at.

Skipped where mkdocs, Playwright or a Chromium binary is missing (.ci/run installs all three;
Playwright only drives the system Chromium, it downloads no browser).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import shutil
import threading

import pytest
from _site import MKDOCS_MISSING, ROOT, build_site, have_mkdocs

CHROMIUM = os.environ.get("NUMLSTM_CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
SHOTS = ROOT / "build" / "screenshots"

pytestmark = [
    pytest.mark.skipif(not have_mkdocs(), reason=MKDOCS_MISSING),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="playwright is not installed: pip install -e '.[test]'",
    ),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium binary: apt-get install chromium (or set NUMLSTM_CHROMIUM)",
    ),
]

# Pages with equations, and how many typeset formulas each has at least.
MATH_PAGES = {
    "lstm/": 40,
    "gru/": 40,
    "layers/": 20,
    "optim/": 20,
    "generation/": 5,
    "index/": 0,
    "learn-gradcheck/": 10,
    "learn-vanishing/": 10,
    "learn-inside/": 5,
    "learn-curves/": 5,
}
OTHER_PAGES = ["", "map/", "reference/", "results/", "performance/", "api/layers/"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    build = build_site()
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.log}"
    handler = functools.partial(_Quiet, directory=str(build.site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Tab:
    """A page whose non-local requests are blocked, with its console errors collected."""

    def __init__(self, browser, base: str):
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base) or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def open(self, path: str):
        self.page.goto(self.base + path.removeprefix("index/"))
        # MathJax typesets once at startup; its promise settles when the page is done.
        self.page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        self.page.evaluate("MathJax.startup.promise")
        return self.page

    def close(self):
        self.context.close()


@pytest.fixture
def tab(browser, server):
    t = Tab(browser, server)
    yield t
    t.close()


# The article's text outside code, where raw TeX would show if a formula were not typeset.
_PROSE = """() => {
  const article = document.querySelector("article").cloneNode(true);
  article.querySelectorAll("pre, code, mjx-container, script").forEach(e => e.remove());
  return article.textContent;
}"""


@pytest.mark.parametrize("path", list(MATH_PAGES) + OTHER_PAGES)
def test_page_renders_offline_without_errors(tab, path):
    page = tab.open(path)
    formulas = page.locator("mjx-container").count()
    assert formulas >= MATH_PAGES.get(path, 0)
    assert page.locator("mjx-merror, mjx-container [data-mjx-error]").count() == 0
    assert page.locator(".arithmatex").count() == formulas  # every formula was typeset
    prose = page.evaluate(_PROSE)
    for raw in ("$$", "\\(", "\\[", "\\frac", "\\odot"):
        assert raw not in prose, f"raw TeX {raw!r} left on /{path}"
    assert not tab.errors, f"console errors on /{path}: {tab.errors}"
    assert not tab.blocked, f"/{path} tried to reach the network: {tab.blocked}"


def test_screenshots(tab):
    """Pictures of the pages a newcomer reads, to look at (build/screenshots/)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    shots = {"index": "", "map": "map/", "lstm": "lstm/", "api-layers": "api/layers/"}
    for name, path in shots.items():
        tab.open(path).screenshot(path=str(SHOTS / f"{name}.png"))
    page = tab.open("lstm/")
    page.locator("#eq-L3").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "lstm-equations.png"))
    page.locator("#eq-dL6").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "lstm-backward.png"))
    for name in [*shots, "lstm-equations", "lstm-backward"]:
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000
    assert not tab.errors and not tab.blocked


def test_navigation_by_clicking(tab):
    page = tab.open("")
    page.locator("nav.md-nav--primary a", has_text="LSTM, forward and backward").first.click()
    page.wait_for_url("**/lstm/")
    assert page.locator("h1").inner_text().startswith("LSTM: forward and backward")
    page.locator("a.md-footer__link--next").click()  # the footer's "Next" link
    page.wait_for_url("**/lstmp/")  # the LSTMP page follows the LSTM page in the nav
    assert not tab.errors and not tab.blocked


def test_search_finds_a_page(tab):
    page = tab.open("")
    page.locator("label.md-search__icon, .md-search__input").first.click()
    # Typed key by key, as a person would: the theme searches on each keystroke.
    page.locator("input.md-search__input").press_sequentially("forget gate", delay=50)
    page.locator(".md-search-result__item > a").first.wait_for(timeout=30_000)
    lstm = page.locator(".md-search-result__item > a[href*='/lstm/']").first
    assert lstm.count() == 1, page.locator(".md-search-result").inner_text()
    lstm.click()
    page.wait_for_url("**/lstm/**")
    assert page.locator("h1").inner_text().startswith("LSTM")
    assert not tab.errors and not tab.blocked


def test_equation_links_to_its_code_and_back(tab):
    page = tab.open("lstm/")
    link = page.locator("#eq-L5 ~ .eq-where a").first
    target = link.get_attribute("href")
    link.click()
    page.wait_for_url("**/source/**")
    line = target.split("#")[1]
    assert page.evaluate("location.hash") == f"#{line}"
    text = page.locator(f"[id='{line}']").evaluate("a => a.parentElement.textContent")
    assert "L5" in text or "L3-L6" in text or "L1-L6" in text, text
    page.locator("a", has_text="L5").first.click()  # the file's list of equations
    page.wait_for_url("**/lstm/#eq-L5")
    assert not tab.errors and not tab.blocked
