"""Equation labels: every label the code cites is defined in docs/, and every defined one is
cited (the check hooks/site.py runs in the site build, here without building anything)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hooks"))

import labels  # noqa: E402


def test_docs_and_code_agree():
    index = labels.build_index()
    assert not index.errors, "\n".join(index.errors)
    # Not vacuous: the derivation pages define dozens of labels and the code cites them all.
    assert {"L1", "dL6", "G4c", "dS3·dS2", "O8", "C2"} <= set(index.defined)
    assert len(index.cited) > len(index.defined)


FAMILIES = {"L", "dL", "S", "dS", "G"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("# (L3) c_t = f * c", ["L3"]),
        ("# L2 + L3: input gate", ["L2", "L3"]),
        ("(L1, L2)", ["L1", "L2"]),
        ("L3-L6", ["L3", "L4", "L5", "L6"]),
        ("L3–L6", ["L3", "L4", "L5", "L6"]),
        ("L1..L6", ["L1", "L2", "L3", "L4", "L5", "L6"]),
        ("dL6-dL1", ["dL1", "dL2", "dL3", "dL4", "dL5", "dL6"]),
        ("S1-S3 / dS3·dS2 / dS1", ["S1", "S2", "S3", "dS3·dS2", "dS1"]),
        ("G2c and G4c", ["G2c", "G4c"]),
        ("an H200, AVX2, float32, x.L3", []),  # not a defined family, or part of a name
        ("L7", ["L7"]),  # a defined family: a typo is still a citation (and an error)
    ],
)
def test_citations_in_text(text, expected):
    assert [label for label, _ in labels.labels_in(text, FAMILIES)] == expected


def _project(tmp_path: Path, doc: str, code: str) -> tuple[Path, Path]:
    docs, pkg = tmp_path / "docs", tmp_path / "pkg"
    docs.mkdir()
    pkg.mkdir()
    (docs / "page.md").write_text(doc, encoding="utf-8")
    (pkg / "mod.py").write_text(code, encoding="utf-8")
    return docs, pkg


def test_missing_and_unused_labels_are_errors(tmp_path):
    doc = "# Page\n\n**(L1)** one\n\n**(L2)** two\n"
    code = 'x = 1  # (L1)\ny = 2  # (L3) not in the docs\nz = "L1-L1"  # noqa: E501 F401\n'
    index = labels.build_index(*_project(tmp_path, doc, code))
    assert [e.split(" is ")[0] for e in index.errors] == [
        "equation label L3",  # cited at pkg/mod.py:2, defined nowhere
        "equation label L2 (docs/page.md:5)",  # defined, cited nowhere
    ]
    assert "pkg/mod.py:2" in index.errors[0]
    assert [(c.label, c.line) for c in index.cited] == [("L1", 1), ("L3", 2), ("L1", 3)]


def test_lines_inside_docstrings_are_exact(tmp_path):
    doc = "**(E1)** lookup\n"
    code = 'def f():\n    """Embed.\n\n    Equation E1.\n    """\n'
    index = labels.build_index(*_project(tmp_path, doc, code))
    assert not index.errors
    assert [(c.label, c.path, c.line) for c in index.cited] == [("E1", "pkg/mod.py", 4)]


def test_a_label_defined_twice_is_an_error(tmp_path):
    doc = "**(L1)** one\n\n**(L1)** again\n"
    index = labels.build_index(*_project(tmp_path, doc, "# L1\n"))
    assert index.errors == ["equation label L1 defined twice: docs/page.md:1 and docs/page.md:3"]


def test_labels_in_fenced_code_are_not_definitions(tmp_path):
    # A definition is a line of prose; the same text inside ``` is an example.
    doc = "**(L1)** one\n\n```\n**(L2)** shown, not defined\n```\n"
    defined, errors = labels.definitions(_project(tmp_path, doc, "# L1\n")[0])
    assert sorted(defined) == ["L1"] and not errors


def test_module_docstring_citations_are_an_overview(tmp_path):
    doc = "**(L1)** one\n"
    code = '"""Module: implements L1."""\n\nx = 1  # (L1)\n\n\ndef f():\n    """L1 here."""\n'
    index = labels.build_index(*_project(tmp_path, doc, code))
    assert [(c.line, c.overview) for c in index.cited] == [(1, True), (3, False), (7, False)]


def test_map_groups_follow_the_tree():
    """The map's groups: the folder decides (numlstm/fast/, numlstm/io/); in the flat layout,
    the module's name (the layout being introduced)."""
    import codemap

    assert codemap.group_of("numlstm/fast/team.py") == "fast"
    assert codemap.group_of("numlstm/io/ptb.py") == "io"
    assert codemap.group_of("numlstm/team.py") == "fast"
    assert codemap.group_of("numlstm/checkpoint.py") == "io"
    assert codemap.group_of("numlstm/lstm.py") == "engine"
    assert codemap.group_of("numlstm/fast/lstm.py") == "fast"  # where it lives wins


def test_source_page_has_an_anchor_per_line_and_marks_citations():
    import codemap

    index = labels.build_index()
    path = labels.PACKAGE / "gradcheck.py"
    page = codemap.source_markdown(index, path)
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert all(f'id="L-{k}"' in page for k in range(1, n + 1))
    assert f'id="L-{n + 1}"' not in page
    c1 = next(c for c in index.cited if c.label == "C1" and c.path.endswith("gradcheck.py"))
    assert f"[C1](../../optim.md#eq-C1): line [{c1.line}](#L-{c1.line})" in page
