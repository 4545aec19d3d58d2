"""Every ```python block of README.md and docs/**/*.md runs, so no example can stop working.

One test per block, named by file and line. The blocks of one file share a namespace and run
in order, as a reader would paste them. A block that cannot run here is preceded in the
Markdown by ``<!-- skip: next "the reason" -->`` (shown as a skip with that reason); keep
that rare. A block followed by a line "It prints:" and a ```text block must print exactly
that. Each file's blocks run in their own temporary folder, with the files they read prepared
below, and with ``breakpoint()`` turned off.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import unittest
from pathlib import Path

import numpy as np
import pytest

sybil = pytest.importorskip("sybil", reason="sybil is not installed: pip install -e '.[test]'")
from sybil.evaluators.python import PythonEvaluator  # noqa: E402
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PARSER = sybil.Sybil(parsers=[PythonCodeBlockParser(), SkipParser()])


def _saved_model(folder: Path) -> None:
    """docs/generation.md loads "ptb.npz": a small untrained model with a PTB-like vocabulary."""
    import numlstm
    from numlstm.generate import save_model

    words = ["<unk>", "<eos>", "the", "company", "said", "it", "will", "sell", "shares", "n't"]
    model = numlstm.LanguageModel(len(words), 8, 1, dtype=np.float64, seed=0)
    save_model(folder / "ptb.npz", model, words)


PREPARE = {"docs/generation.md": _saved_model}

# A block followed by "It prints:" and a ```text block: that text is checked, exactly.
PRINTS = re.compile(r"\s*It prints:\s*\n```text\n(.*?)^```", re.S | re.M)


def _blocks():
    """One pytest param per ```python block: (file, its examples in order, this one's index)."""
    out = []
    for path in FILES:
        rel = path.relative_to(ROOT).as_posix()
        examples = list(PARSER.parse(path))  # python blocks and skip directives, in order
        for n, example in enumerate(examples):
            if isinstance(example.region.evaluator, PythonEvaluator):
                out.append(pytest.param(rel, examples, n, id=f"{rel}:{example.line}"))
    return out


BLOCKS = _blocks()
_state: dict[str, dict] = {}  # file -> {"folder": Path, "next": int, "failed": line or None}


@contextlib.contextmanager
def _in(folder: Path):
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def test_the_docs_have_blocks_to_run():
    files = {p.values[0] for p in BLOCKS}
    assert {"README.md", "docs/index.md", "docs/reference.md", "docs/generation.md"} <= files


@pytest.mark.parametrize("rel, examples, n", BLOCKS)
def test_block_runs(rel, examples, n, tmp_path_factory, monkeypatch):
    state = _state.get(rel)
    if state is None:
        folder = tmp_path_factory.mktemp(Path(rel).stem)
        if rel in PREPARE:
            PREPARE[rel](folder)
        state = _state[rel] = {"folder": folder, "next": 0, "failed": None}
    if state["failed"] is not None:
        pytest.fail(
            f"needs the namespace of an earlier block of {rel}, which failed (line "
            f"{state['failed']})"
        )
    monkeypatch.setenv("PYTHONBREAKPOINT", "0")  # docs/reference.md calls breakpoint()
    with _in(state["folder"]):
        # The skip directives since the last block first, then the block itself.
        for example in examples[state["next"] : n]:
            example.evaluate()
        state["next"] = n + 1
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                examples[n].evaluate()
        except unittest.SkipTest:
            raise
        except BaseException:
            state["failed"] = examples[n].line
            raise
    expected = PRINTS.match(examples[n].document.text, examples[n].region.end)
    if expected:  # the page shows what the block prints: it must be what it prints
        assert out.getvalue() == expected.group(1), f"{rel}:{examples[n].line} printed otherwise"
